"""Webhook endpoints: where offpost POSTs a client's events (docs/webhooks.md).

One endpoint per client (``PUT /v1/webhook`` replaces it). The signing secret
is shown to the client once and kept encrypted like a token, because offpost
needs it in the clear to sign every delivery.

The row also holds the endpoint's circuit breaker. After
:data:`BREAKER_THRESHOLD` failed attempts in a row (any events), the endpoint
is paused: the dispatcher sends none of its events until ``paused_until``, so
a dead receiver costs no delivery capacity. The pause doubles with each further
failure, from :data:`BREAKER_BASE` up to :data:`BREAKER_CAP`. Once it ends, one
attempt at a time probes the endpoint until one succeeds, which closes the
breaker.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from offpost.models.base import Base, Timestamps
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import EncryptedToken, NullableJSONDocument

#: Failed attempts in a row that pause an endpoint, and the first and longest pause.
BREAKER_THRESHOLD = 5
BREAKER_BASE = timedelta(minutes=1)
BREAKER_CAP = timedelta(hours=1)

#: Every webhook secret starts with this (as Stripe's ``whsec_`` does).
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class Webhook(Timestamps, Base):
    """A client's webhook endpoint and its signing secret."""

    __tablename__ = "webhooks"
    __table_args__ = (UniqueConstraint("client_id"),)

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.WEBHOOK)
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    url: Mapped[str] = mapped_column(Text)
    #: The HMAC-SHA256 key of ``Offpost-Signature``, encrypted at rest.
    secret: Mapped[str] = mapped_column(EncryptedToken)
    #: Delivery attempts that failed since the last one that succeeded (any events).
    failures_in_a_row: Mapped[int] = mapped_column(Integer, default=0)
    #: While set and in the future, no event of the endpoint is sent (the breaker is open).
    paused_until: Mapped[datetime | None] = mapped_column(default=None)
    #: The event types the client wants; ``None``: every type.
    events: Mapped[list[str] | None] = mapped_column(NullableJSONDocument, default=None)

    def wants(self, event_type: str) -> bool:
        """Whether the client subscribed to ``event_type``."""
        return self.events is None or event_type in self.events

    def __repr__(self) -> str:
        return f"Webhook(client_id={self.client_id!r}, url={self.url!r})"


def new_webhook_secret() -> str:
    """A fresh signing secret: :data:`WEBHOOK_SECRET_PREFIX` and 256 random bits."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


def breaker_pause(failures: int) -> timedelta | None:
    """How long an endpoint pauses after ``failures`` failed attempts in a row (None: not)."""
    if failures < BREAKER_THRESHOLD:
        return None
    doublings = min(failures - BREAKER_THRESHOLD, 16)  # 2**16 minutes is past the cap anyway
    pause: timedelta = min(BREAKER_BASE * (2**doublings), BREAKER_CAP)
    return pause


def note_attempt(session: Session, client_id: str, *, ok: bool, now: datetime) -> int:
    """Feed one attempt's outcome to the client's breaker; its failures in a row after it."""
    if ok:
        session.execute(
            update(Webhook)
            .where(Webhook.client_id == client_id)
            .values(failures_in_a_row=0, paused_until=None)
            .execution_options(synchronize_session=False)
        )
        return 0
    failures = session.scalar(
        update(Webhook)
        .where(Webhook.client_id == client_id)
        .values(failures_in_a_row=Webhook.failures_in_a_row + 1)
        .returning(Webhook.failures_in_a_row)
        .execution_options(synchronize_session=False)
    )
    if failures is None:
        return 0  # the webhook was removed meanwhile
    pause = breaker_pause(failures)
    if pause is not None:
        session.execute(
            update(Webhook)
            .where(Webhook.client_id == client_id)
            .values(paused_until=now + pause)
            .execution_options(synchronize_session=False)
        )
    return int(failures)


def reset_breaker(webhook: Webhook) -> None:
    """Close the breaker (a new URL deserves a fresh start)."""
    webhook.failures_in_a_row = 0
    webhook.paused_until = None

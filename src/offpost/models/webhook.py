"""Webhook endpoints: where offpost POSTs a client's events (docs/webhooks.md).

One endpoint per client (``PUT /v1/webhook`` replaces it). The signing secret
is shown to the client once and kept encrypted like a token, because offpost
needs it in the clear to sign every delivery.
"""

from __future__ import annotations

import secrets

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, Timestamps
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import EncryptedToken

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

    def __repr__(self) -> str:
        return f"Webhook(client_id={self.client_id!r}, url={self.url!r})"


def new_webhook_secret() -> str:
    """A fresh signing secret: :data:`WEBHOOK_SECRET_PREFIX` and 256 random bits."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)

"""The webhook outbox: events recorded inside the transaction that makes the change.

Events are rows of :class:`~offpost.models.webhook_event.WebhookEvent`, written
in the same transaction as the change they report, so an event exists exactly
when its change committed. The worker's publish observer
(:class:`~offpost.workers.webhooks.WebhookOutbox`), the API and the daily token check
all record through here; delivery is :mod:`offpost.workers.webhooks`. Clients
without a webhook get no rows.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import Text

from offpost.models import Credential, Post, Webhook
from offpost.models.webhook_event import EventType, insert_event
from offpost.views import CredentialOut, PostOut, utc_z


def event_document(event_id: str, type_: EventType, created_at: datetime, data: Any) -> str:
    """The JSON body of an event, compact, as stored and POSTed on every attempt."""
    return json.dumps(
        {"id": event_id, "type": type_.value, "created_at": utc_z(created_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def has_webhook(session: Session, client_id: str, event_type: str | None = None) -> bool:
    """Whether the client has a webhook (events are recorded only then) that wants
    ``event_type`` (any type when ``None``)."""
    events = session.execute(
        select(Webhook.events).where(Webhook.client_id == client_id)
    ).one_or_none()
    if events is None:
        return False
    wanted = events[0]
    return event_type is None or wanted is None or event_type in wanted


def record_post_event(
    session: Session, post_id: str, type_: EventType, now: datetime
) -> str | None:
    """Record ``type_`` about the post as it is now in this transaction; the event id or None.

    ``data`` is the post object exactly as the API returns it (no token).
    """
    post = session.scalars(
        select(Post).where(Post.id == post_id).execution_options(populate_existing=True)
    ).one_or_none()
    if post is None or not has_webhook(session, post.client_id, type_.value):
        return None
    data = PostOut.of(post).model_dump(mode="json")
    return insert_event(
        session,
        client_id=post.client_id,
        event_type=type_,
        subject_id=post.id,
        payload_for=lambda event_id: event_document(event_id, type_, now, data),
        now=now,
    )


def record_credential_event(
    session: Session,
    credential_id: str,
    type_: EventType,
    now: datetime,
    *,
    dedupe_key: str | None = None,
) -> str | None:
    """Record ``type_`` about the credential (its public object); the event id or None.

    None also when ``dedupe_key`` was recorded before for this client.
    """
    credential = session.scalars(
        select(Credential)
        .where(Credential.id == credential_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if credential is None or not has_webhook(session, credential.client_id, type_.value):
        return None
    data = CredentialOut.of(credential).model_dump(mode="json")
    return insert_event(
        session,
        client_id=credential.client_id,
        event_type=type_,
        subject_id=credential.id,
        payload_for=lambda event_id: event_document(event_id, type_, now, data),
        now=now,
        dedupe_key=dedupe_key,
    )


def token_dedupe_key(session: Session, type_: EventType, credential_id: str, *parts: str) -> str:
    """An event once per stored user token (and ``parts``, e.g. the dead Pages).

    Several posts of one user may find a token dead at once; they all name the same
    stored token, whose ciphertext (read raw, never decrypted) changes only when a
    fresh token is stored. A hash of the ciphertext tells the episodes apart.
    """
    raw = session.scalar(
        select(type_coerce(Credential.user_token, Text)).where(Credential.id == credential_id)
    )
    fingerprint = hashlib.sha256("\n".join([raw or "", *parts]).encode("utf-8")).hexdigest()[:24]
    return f"{type_.value}:{credential_id}:{fingerprint}"


def expiring_dedupe_key(credential_id: str, expires_at: datetime | None, days: int) -> str:
    """``credential.expiring`` once per credential, expiry date and warning (``days``
    before the end), not once a day."""
    when = utc_z(expires_at) if expires_at is not None else "never"
    return f"{EventType.CREDENTIAL_EXPIRING.value}:{credential_id}:{when}:{days}d"

"""Idempotency keys: the first answer to ``POST /v1/posts`` with an ``Idempotency-Key``.

The API inserts the row (``response_status`` ``NULL``) before it does the
work, inside the same transaction as the post it creates; the primary key
``(client_id, key)`` makes a concurrent duplicate wait for that transaction and
then collide, instead of creating a second post. ``request_hash`` tells "the
same request again" (answer with the stored response) from "the same key with
another body" (409). Rows live 24 hours (``expires_at``); an expired row may be
deleted and the key used afresh.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from offpost.models.base import Base, utcnow
from offpost.models.ids import ID_LENGTH

#: How long an idempotency key is remembered (the OpenAPI document).
IDEMPOTENCY_TTL = timedelta(hours=24)
#: The longest key accepted (longer keys are refused by the API with a 422).
MAX_KEY_LENGTH = 255


class IdempotencyKey(Base):
    """A remembered request and, once it finished, its response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    client_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("clients.id"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    #: SHA-256 hex of the canonical request (see :func:`request_hash`).
    request_hash: Mapped[str] = mapped_column(String(64))
    #: ``None`` while the first request is still being handled.
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(default=lambda: utcnow() + IDEMPOTENCY_TTL)

    def is_expired(self, now: datetime) -> bool:
        """Whether the key is past its lifetime at ``now`` (an aware datetime)."""
        return now >= self.expires_at


def request_hash(method: str, path: str, body: Any) -> str:
    """A digest of a request that ignores key order and whitespace in its JSON body."""
    canonical = json.dumps(
        [method.upper(), path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def purge_expired_keys(session: Session, now: datetime) -> int:
    """Delete every expired key; how many. The caller commits (the dispatcher, daily)."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]

"""API clients: who may call offpost, and with which key.

A client is created by ``offpost clients create NAME [--admin]``, which shows
its key once. offpost keeps only the SHA-256 of the key: the key is 256 random
bits, so a plain hash cannot be brute-forced, and unlike a slow password hash
it can be looked up through a unique index on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, utcnow
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory

#: Every API key starts with this, so a leaked key is recognisable (secret scanners).
API_KEY_PREFIX = "opk_"


class Client(Base):
    """An API client; a revoked one (``revoked_at`` set) is refused from then on."""

    __tablename__ = "clients"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_clients_key_hash", "key_hash", unique=True),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.CLIENT)
    )
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Quotas for this client only; NULL means the deployment's default (offpost.posts.quotas).
    max_requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    max_posts_per_day: Mapped[int | None] = mapped_column(Integer, default=None)
    max_pending_posts: Mapped[int | None] = mapped_column(Integer, default=None)
    max_active_schedules: Mapped[int | None] = mapped_column(Integer, default=None)
    max_occurrences_per_day: Mapped[int | None] = mapped_column(Integer, default=None)

    @property
    def is_revoked(self) -> bool:
        """Whether the client's key has been revoked."""
        return self.revoked_at is not None

    def __repr__(self) -> str:
        return f"Client(id={self.id!r}, name={self.name!r}, is_admin={self.is_admin!r})"


def new_api_key() -> str:
    """A fresh API key: :data:`API_KEY_PREFIX` and 256 random bits, URL-safe."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The value stored in ``clients.key_hash`` for ``key`` (SHA-256, lowercase hex)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, key_hash: str) -> bool:
    """Whether ``key`` hashes to ``key_hash``, compared in constant time."""
    return hmac.compare_digest(hash_api_key(key), key_hash)

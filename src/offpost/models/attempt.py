"""Attempts: one row per try to publish a post (``GET /v1/posts/{id}/attempts``).

A worker inserts the attempt when it starts the Graph call (``outcome`` is
``NULL`` while the call is in flight) and fills in ``finished_at`` and the
outcome when it knows it. An attempt left in flight by a crashed worker is
what the reaper reconciles: it reads the Page's feed from ``started_at`` on
and records ``reconciled`` (found: the post was published) or ``retry``.

``number`` counts from 1 within a post; the unique ``(post_id, number)`` makes
two workers that both believe they own a post collide instead of both calling
Graph.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, check_in, utcnow
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import StrEnumType


class AttemptOutcome(enum.StrEnum):
    """How an attempt ended (the OpenAPI document, ``GET /v1/posts/{id}/attempts``)."""

    #: Graph created the post.
    PUBLISHED = "published"
    #: A transient failure: the post is scheduled again with backoff.
    RETRY = "retry"
    #: A permanent failure, or the last attempt failed.
    FAILED = "failed"
    #: Graph rejected the token: the credential needs a fresh one.
    NEEDS_REAUTH = "needs_reauth"
    #: The reply was lost, and reconciliation found the post on the Page.
    RECONCILED = "reconciled"


@dataclass(frozen=True, slots=True)
class Sent:
    """What one Graph call publishes, in the form reconciliation compares.

    Recorded on the attempt before the call, so that a lost reply is searched
    for by what *that call* sent, whatever the post holds later.
    """

    #: SHA-256 (hex) of the text, surrounding whitespace removed; ``None`` for no text.
    text_sha256: str | None
    #: The link of a feed post (a photo post carries its link in the caption).
    link: str | None
    #: The photo's URL, for a photo post.
    media: str | None

    @classmethod
    def of(cls, text: str | None, link: str | None, media: str | None) -> Sent:
        return cls(text_sha256(text), link, media)

    def columns(self) -> dict[str, str | None]:
        """The attempt columns that hold it."""
        return {"sent_sha256": self.text_sha256, "sent_link": self.link, "sent_media": self.media}


def text_sha256(text: str | None) -> str | None:
    """The digest reconciliation compares texts by (whitespace at the ends ignored)."""
    stripped = (text or "").strip()
    return hashlib.sha256(stripped.encode("utf-8")).hexdigest() if stripped else None


class Attempt(Base):
    """One try to publish one post, with what Graph answered."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("post_id", "number"),
        CheckConstraint("number >= 1", name="number"),
        check_in("outcome", AttemptOutcome, "outcome"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.ATTEMPT)
    )
    post_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("posts.id", ondelete="CASCADE")
    )
    #: 1 for the first attempt of the post, 2 for the second...
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    #: ``None`` while the Graph call is in flight.
    outcome: Mapped[AttemptOutcome | None] = mapped_column(
        StrEnumType(AttemptOutcome), default=None
    )
    http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    #: Graph's ``error.code``/``error_subcode``/``message``/``fbtrace_id``, when it failed.
    #: Graph's ``error.code`` as text, or an offpost code such as ``timeout``.
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_subcode: Mapped[int | None] = mapped_column(Integer, default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    fbtrace_id: Mapped[str | None] = mapped_column(String(64), default=None)
    #: Which worker made it (hostname and process), for operators.
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    #: What the call sent, as reconciliation compares it with the Page's posts:
    #: the SHA-256 of the text (message, or caption), the link, the photo URL.
    sent_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    sent_link: Mapped[str | None] = mapped_column(Text, default=None)
    sent_media: Mapped[str | None] = mapped_column(Text, default=None)

    @property
    def in_flight(self) -> bool:
        """Whether the attempt has not recorded an outcome yet."""
        return self.outcome is None

    def __repr__(self) -> str:
        outcome = self.outcome.value if self.outcome else None
        return f"Attempt(post_id={self.post_id!r}, number={self.number!r}, outcome={outcome!r})"

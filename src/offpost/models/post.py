"""Posts: one publication on one Page, and the state it is in (the OpenAPI document).

::

    scheduled ──dispatcher──▶ queued ──worker claim──▶ publishing ──▶ published
        ▲                                                  │
        └──────── retry (due_at = backoff time) ◀──────────┤
                                                           ├──▶ failed
    needs_reauth ◀─── credential rejected ─────────────────┘
    any state before publishing ──client──▶ canceled

``publish_at`` is what the client asked for and never changes by itself;
``due_at`` is when the post is next due: ``publish_at`` at first, then the
retry time. The dispatcher reads only ``due_at``, through the partial index
``ix_posts_due`` (scheduled rows only), so finding due posts is a short index
range scan however many published rows pile up. The other partial indexes
serve the two watchdogs: queued rows that sat too long (``queued_at``) and
publishing rows whose lease ran out (``lease_expires_at``).

An occurrence of a schedule is an ordinary post with ``schedule_id`` and
``occurrence_at`` set; the unique pair makes materialising an occurrence twice
(two dispatchers, a restart) impossible rather than unlikely.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, Timestamps, check_in, where_status, where_status_in
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import NullableJSONDocument, StrEnumType

#: Attempts a post gets before it is ``failed`` (retries are ``max_attempts - 1``).
DEFAULT_MAX_ATTEMPTS = 5


class PostStatus(enum.StrEnum):
    """Where a post stands (the OpenAPI document)."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    NEEDS_REAUTH = "needs_reauth"
    CANCELED = "canceled"
    #: Published, then deleted from Facebook at the client's request.
    DELETED = "deleted"


#: A post waits in these states to be published (parked when its credential dies).
WAITING_STATUSES = frozenset({PostStatus.SCHEDULED, PostStatus.QUEUED})
#: A post in these states is not done yet: it counts against its client's pending_posts quota.
PENDING_POST_STATUSES = (
    PostStatus.SCHEDULED,
    PostStatus.QUEUED,
    PostStatus.PUBLISHING,
    PostStatus.NEEDS_REAUTH,
)
#: A client may edit a post only in these states (``PATCH /v1/posts/{id}``).
EDITABLE_STATUSES = frozenset({PostStatus.SCHEDULED, PostStatus.FAILED, PostStatus.NEEDS_REAUTH})
#: A client may cancel a post only in these states (``DELETE /v1/posts/{id}``); a
#: schedule's or a credential's deletion cancels its posts in the same states.
CANCELABLE_STATUSES = frozenset(
    {
        PostStatus.SCHEDULED,
        PostStatus.QUEUED,
        PostStatus.FAILED,
        PostStatus.NEEDS_REAUTH,
    }
)


class Post(Timestamps, Base):
    """One post to publish on one Page, once."""

    __tablename__ = "posts"
    __table_args__ = (
        check_in("status", PostStatus, "status"),
        CheckConstraint(
            "message IS NOT NULL OR link IS NOT NULL OR photo_url IS NOT NULL OR media IS NOT NULL",
            name="content",
        ),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        # An occurrence time belongs to a schedule, and a schedule's post has one.
        CheckConstraint("(schedule_id IS NULL) = (occurrence_at IS NULL)", name="occurrence"),
        UniqueConstraint("schedule_id", "occurrence_at"),
        Index("ix_posts_due", "due_at", **where_status(PostStatus.SCHEDULED)),
        Index("ix_posts_queued", "queued_at", **where_status(PostStatus.QUEUED)),
        Index("ix_posts_lease", "lease_expires_at", **where_status(PostStatus.PUBLISHING)),
        # Cursor pagination, newest first: (created_at, id) < (:t, :id) ORDER BY both DESC.
        Index("ix_posts_client_created", "client_id", "created_at", "id"),
        Index("ix_posts_created", "created_at", "id"),
        Index("ix_posts_credential_status", "credential_id", "status"),
        # A client's posts not done yet: its pending_posts quota counts them per creation.
        Index("ix_posts_client_pending", "client_id", **where_status_in(PENDING_POST_STATUSES)),
        # A Graph post is at most one offpost post's: reconciliation can never adopt
        # a post that another one recorded, however the two race.
        Index("ix_posts_graph_post_id", "graph_post_id", unique=True),
        # A Page's Reels by time: the 30-a-day budget counts them at create and publish.
        Index(
            "ix_posts_target_reels",
            "target",
            "publish_at",
            postgresql_where=text("media_kind = 'reel'"),
            sqlite_where=text("media_kind = 'reel'"),
        ),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.POST)
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    credential_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("credentials.id"))
    #: The Page id to publish on.
    target: Mapped[str] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text, default=None)
    link: Mapped[str | None] = mapped_column(Text, default=None)
    photo_url: Mapped[str | None] = mapped_column(Text, default=None)
    #: Photos, a video or a Reel: ``{"photos": [...]}``, ``{"video": {...}}`` or
    #: ``{"reel": {...}}``, each source a ``url`` or an uploaded ``media_id``
    #: (offpost.posts.media).
    media: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDocument, default=None)
    #: Posted as the Page on the published post right after it (docs/after-publishing.md).
    first_comment: Mapped[str | None] = mapped_column(Text, default=None)
    #: ``pending``, ``posted`` or ``failed``; ``None`` without a first comment.
    first_comment_status: Mapped[str | None] = mapped_column(String(16), default=None)
    first_comment_id: Mapped[str | None] = mapped_column(String(128), default=None)
    #: ``photos``, ``video`` or ``reel`` (the key of ``media``): what Graph's per-Page
    #: budgets count (30 Reels a day), without reading JSON.
    media_kind: Mapped[str | None] = mapped_column(String(8), default=None)
    #: When the client asked for it to be published.
    publish_at: Mapped[datetime]
    #: When it is next due: ``publish_at``, or the time of the next retry.
    due_at: Mapped[datetime]
    status: Mapped[PostStatus] = mapped_column(
        StrEnumType(PostStatus), default=PostStatus.SCHEDULED
    )
    schedule_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("schedules.id"), default=None
    )
    #: The schedule occurrence this post publishes (UTC), with ``schedule_id``.
    occurrence_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Attempts made so far (rate-limit waits and Page-token re-derivations do not count).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_ATTEMPTS)
    #: When the dispatcher moved it to ``queued`` and sent the task.
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The worker holding the ``publishing`` lease, and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(255), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    graph_post_id: Mapped[str | None] = mapped_column(String(128), default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    #: ``{"code", "subcode", "message", "fbtrace_id"}`` of the last failure, if any.
    last_error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    #: Set when an attempt's outcome is unknown (timeout, lost reply, 5xx, duplicate):
    #: the start of the earliest such attempt. Before any further Graph call the
    #: worker reads the Page's posts since then and adopts ours if it is there.
    reconcile_since: Mapped[datetime | None] = mapped_column(default=None)

    def __repr__(self) -> str:
        return (
            f"Post(id={self.id!r}, target={self.target!r}, "
            f"status={self.status.value if self.status else None!r})"
        )


def error_document(
    code: int | str | None,
    message: str,
    *,
    subcode: int | None = None,
    fbtrace_id: str | None = None,
) -> dict[str, Any]:
    """The shape stored in ``Post.last_error`` and returned as the post's ``last_error``.

    ``code`` is Graph's ``error.code``, or an offpost code such as ``"timeout"``.
    """
    return {"code": code, "subcode": subcode, "message": message, "fbtrace_id": fbtrace_id}


#: ``last_error.message`` of a post whose credential was deleted while an earlier
#: attempt's outcome was unknown (it is ``failed`` with the code ``outcome_unknown``).
OUTCOME_UNKNOWN_AT_DELETION = (
    "the credential was deleted while an earlier attempt's outcome was unknown: the post "
    "may be on the Page; offpost can no longer read the Page to find out"
)

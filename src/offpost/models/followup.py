"""Follow-ups: what offpost does on Facebook with a post once it is published.

A follow-up is one Graph call on a published post, done exactly once, with the
same care as the publish itself (docs/after-publishing.md):

- ``comment``: the post's ``first_comment``, posted as the Page right after it;
- ``edit``: a new message for the post (``PATCH /v1/posts/{id}``);
- ``delete``: the post removed from Facebook (``DELETE /v1/posts/{id}?on_facebook=true``).

The row is the truth about it, as a webhook event's row is about its delivery::

    pending ──dispatcher: send──▶ pending (in flight until the re-send time)
       ▲                              │ worker: claim_followup (attempts + 1, lease,
       │                              │         reconcile_since set if it was not)
       │                              ▼
       └── retry (due_at = backoff) ◀─ Graph call ──▶ done (graph_id) | failed
                                                 └──▶ canceled (superseded, post deleted)

A claim marks the follow-up's outcome unknown from that moment
(``reconcile_since``): a worker that dies mid-call, or a reply that is lost,
leaves it set, and the next worker first looks on Facebook for what the call
made (the Page's comment with that text; for an edit or a delete the call is
idempotent and is simply made again). Only a known outcome clears it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from offpost.models.base import Base, Timestamps, check_in, where_status
from offpost.models.due import claim_due
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import StrEnumType

#: Attempts a follow-up gets before it is ``failed``.
FOLLOWUP_MAX_ATTEMPTS = 5


class FollowupKind(enum.StrEnum):
    """What a follow-up does on Facebook."""

    COMMENT = "comment"
    EDIT = "edit"
    DELETE = "delete"


class FollowupStatus(enum.StrEnum):
    """Where a follow-up stands."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    #: Not done and never will be: a newer edit replaced it, or the post was deleted.
    CANCELED = "canceled"


class Followup(Timestamps, Base):
    """One Graph call on a published post."""

    __tablename__ = "post_followups"
    __table_args__ = (
        check_in("kind", FollowupKind, "kind"),
        check_in("status", FollowupStatus, "status"),
        Index("ix_post_followups_due", "due_at", **where_status(FollowupStatus.PENDING)),
        Index("ix_post_followups_post", "post_id", "created_at"),
        # A comment on Facebook is at most one follow-up's: reconciliation cannot adopt
        # another one's.
        Index("ix_post_followups_graph_id", "graph_id", unique=True),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.FOLLOWUP)
    )
    post_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("posts.id", ondelete="CASCADE")
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    kind: Mapped[FollowupKind] = mapped_column(StrEnumType(FollowupKind))
    status: Mapped[FollowupStatus] = mapped_column(
        StrEnumType(FollowupStatus), default=FollowupStatus.PENDING
    )
    #: The text of a comment or an edit.
    message: Mapped[str | None] = mapped_column(Text, default=None)
    due_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Sent to a worker, or held by one: not sent again before this.
    in_flight_until: Mapped[datetime | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(255), default=None)
    #: Set by the first claim whose outcome is not known yet: the next worker looks first.
    reconcile_since: Mapped[datetime | None] = mapped_column(default=None)
    #: What the call made: the comment's id.
    graph_id: Mapped[str | None] = mapped_column(String(128), default=None)
    #: ``{"code", "subcode", "message", "fbtrace_id"}`` of the last failure.
    last_error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    def __repr__(self) -> str:
        return f"Followup(id={self.id!r}, kind={self.kind!r}, status={self.status!r})"


def claim_due_followups(
    session: Session, now: datetime, resend_after: timedelta, limit: int
) -> list[tuple[str, int]]:
    """Pick up to ``limit`` due follow-ups to send; ``(id, attempts)`` of each.

    ``in_flight_until`` moves to ``now + resend_after``: if the message is lost
    or its worker dies, the follow-up is sent again then (and reconciled first).
    """
    # A lease left by a worker that died has run out (the row is free): whoever claims
    # the re-sent message takes over, and the old worker can record nothing.
    return claim_due(
        session, Followup, FollowupStatus.PENDING, now, resend_after, limit, lease_owner=None
    )


@dataclass(frozen=True, slots=True)
class ClaimedFollowup:
    """What a worker needs of a follow-up it holds."""

    id: str
    post_id: str
    client_id: str
    kind: FollowupKind
    message: str | None
    attempt: int
    #: When an earlier attempt's outcome became unknown; ``None``: nothing to look for.
    reconcile_since: datetime | None
    claimed_at: datetime


def claim_followup(
    session: Session, followup_id: str, attempts: int, worker: str, now: datetime, lease: timedelta
) -> ClaimedFollowup | None:
    """Take attempt ``attempts + 1`` of a pending follow-up; None if it moved on (done,
    failed, canceled, held by another worker, or this message is a duplicate)."""
    result = session.execute(
        update(Followup)
        .where(
            Followup.id == followup_id,
            Followup.status == FollowupStatus.PENDING,
            Followup.attempts == attempts,
            or_(Followup.lease_owner.is_(None), Followup.in_flight_until <= now),
        )
        .values(
            attempts=attempts + 1,
            lease_owner=worker,
            in_flight_until=now + lease,
            reconcile_since=func.coalesce(Followup.reconcile_since, now),
            updated_at=now,
        )
        .returning(
            Followup.id,
            Followup.post_id,
            Followup.client_id,
            Followup.kind,
            Followup.message,
            Followup.reconcile_since,
        )
        .execution_options(synchronize_session=False)
    )
    row = result.one_or_none()
    if row is None:
        return None
    since = row.reconcile_since
    return ClaimedFollowup(
        id=row.id,
        post_id=row.post_id,
        client_id=row.client_id,
        kind=FollowupKind(row.kind),
        message=row.message,
        attempt=attempts + 1,
        # Set by this very claim: no earlier attempt left anything to look for.
        reconcile_since=None if since == now else since,
        claimed_at=now,
    )


def finish_followup(
    session: Session, followup: ClaimedFollowup, worker: str, now: datetime, **values: Any
) -> bool:
    """Record the outcome of the attempt ``followup`` holds; False if the row moved on."""
    values.setdefault("in_flight_until", None)
    values.setdefault("lease_owner", None)
    result = session.execute(
        update(Followup)
        .where(
            Followup.id == followup.id,
            Followup.status == FollowupStatus.PENDING,
            Followup.attempts == followup.attempt,
            Followup.lease_owner == worker,
        )
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def newer_edit_exists(session: Session, followup: ClaimedFollowup) -> bool:
    """Whether the client asked for a later edit of the same post (this one is superseded)."""
    mine = select(Followup.created_at).where(Followup.id == followup.id).scalar_subquery()
    later = session.scalar(
        select(Followup.id)
        .where(
            Followup.post_id == followup.post_id,
            Followup.kind == FollowupKind.EDIT,
            Followup.id != followup.id,
            Followup.created_at > mine,
            Followup.status.in_([FollowupStatus.PENDING, FollowupStatus.DONE]),
        )
        .limit(1)
    )
    return later is not None


def earlier_edit_in_flight(session: Session, followup: ClaimedFollowup, now: datetime) -> bool:
    """Whether an older edit of the post is still held by a worker, or has an unknown
    outcome (Graph may still apply it late): this one waits until that is settled, so
    that the newest text is the one Facebook keeps."""
    mine = select(Followup.created_at).where(Followup.id == followup.id).scalar_subquery()
    held = session.scalar(
        select(Followup.id)
        .where(
            Followup.post_id == followup.post_id,
            Followup.kind == FollowupKind.EDIT,
            Followup.id != followup.id,
            Followup.created_at < mine,
            Followup.status == FollowupStatus.PENDING,
            or_(
                and_(Followup.lease_owner.is_not(None), Followup.in_flight_until > now),
                Followup.reconcile_since.is_not(None),
            ),
        )
        .limit(1)
    )
    return held is not None


def cancel_followups(
    session: Session, post_id: str, now: datetime, *, kinds: tuple[FollowupKind, ...]
) -> int:
    """Cancel the post's pending follow-ups of ``kinds`` not held by a worker; how many."""
    result = session.execute(
        update(Followup)
        .where(
            Followup.post_id == post_id,
            Followup.kind.in_(list(kinds)),
            Followup.status == FollowupStatus.PENDING,
            or_(Followup.lease_owner.is_(None), Followup.in_flight_until <= now),
        )
        .values(status=FollowupStatus.CANCELED, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]

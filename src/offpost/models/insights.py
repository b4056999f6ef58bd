"""Insights of published posts: one row per post and age, filled by one fetch (docs/insights.md).

When a post is published, one row per age of ``OFFPOST_INSIGHTS_AFTER`` (``1h``,
``24h``, ``7d``) is written, due at ``published_at + age``. A worker fetches it
then — the post's counts (reactions, comments, shares) and, where the Page has
them, its views and viewers (impressions, reach) — and records the values::

    pending ──dispatcher: send──▶ pending (in flight until the re-send time)
       ▲                              │ worker: claim_insight (attempts + 1)
       │                              ▼
       └── retry (due_at = backoff) ◀─ Graph calls ──▶ done (values, errors)
          or wait (no attempt)                    └──▶ failed (after 5 attempts)
                                                  └──▶ canceled (the post is gone)

``errors`` names, per Graph metric, why it has no value: Graph refused it (its
message, e.g. a deprecated metric) or answered nothing (a Page under 100 likes).
The other values are stored all the same.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from offpost.models.base import Base, Timestamps, check_in, where_status
from offpost.models.due import claim_due
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory, new_ids
from offpost.models.post import Post
from offpost.models.types import NullableJSONDocument, StrEnumType

#: Attempts a fetch gets before it is ``failed``.
INSIGHTS_MAX_ATTEMPTS = 5


class InsightStatus(enum.StrEnum):
    """Where one fetch stands."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    #: Never fetched and never will be: the post is gone from Facebook (or from offpost).
    CANCELED = "canceled"


class PostInsight(Timestamps, Base):
    """One fetch of a published post's counts and insights, at one age."""

    __tablename__ = "post_insights"
    __table_args__ = (
        check_in("status", InsightStatus, "status"),
        UniqueConstraint("post_id", "age"),
        # The dispatcher's question: "pending fetches due now".
        Index("ix_post_insights_due", "due_at", **where_status(InsightStatus.PENDING)),
        # The Page's summary and `offpost status`: fetches of a Page, by time.
        Index("ix_post_insights_target_fetched", "target", "fetched_at"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.INSIGHTS)
    )
    post_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("posts.id", ondelete="CASCADE")
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    #: The Page the post is on.
    target: Mapped[str] = mapped_column(String(64))
    #: The label of the age (``1h``, ``24h``, ``7d``), from ``OFFPOST_INSIGHTS_AFTER``.
    age: Mapped[str] = mapped_column(String(8))
    due_at: Mapped[datetime]
    fetched_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Sent to a worker, or held by one: not sent again before this.
    in_flight_until: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[InsightStatus] = mapped_column(
        StrEnumType(InsightStatus), default=InsightStatus.PENDING
    )
    reactions: Mapped[int | None] = mapped_column(BigInteger, default=None)
    comments: Mapped[int | None] = mapped_column(BigInteger, default=None)
    shares: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: ``post_media_view`` (Meta's replacement of ``post_impressions``).
    impressions: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: ``post_total_media_view_unique`` (Meta's replacement of ``post_impressions_unique``).
    reach: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: Graph metric name → why it has no value (Graph's message, or "no data").
    errors: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDocument, default=None)
    #: Why the last attempt failed (and, once ``failed``, why it was given up).
    last_error: Mapped[str | None] = mapped_column(Text, default=None)

    def __repr__(self) -> str:
        return f"PostInsight(id={self.id!r}, age={self.age!r}, status={self.status!r})"


def schedule_insights(
    session: Session,
    post_id: str,
    client_id: str,
    target: str,
    published_at: datetime,
    ages: Sequence[tuple[str, timedelta]],
) -> int:
    """Add one pending fetch per ``(label, age)``, due at ``published_at + age``; how many
    were new. A post that has one for a label already keeps it (ON CONFLICT DO NOTHING),
    so a publish recorded twice, or reconciled, schedules nothing twice."""
    return schedule_insights_of(session, [(post_id, client_id, target, published_at)], ages)


def schedule_insights_of(
    session: Session,
    posts: Sequence[tuple[str, str, str, datetime]],
    ages: Sequence[tuple[str, timedelta]],
) -> int:
    """:func:`schedule_insights` for many posts, each ``(post_id, client_id, target,
    published_at)``, in one statement (a batch's published posts)."""
    if not ages or not posts:
        return 0
    ids = iter(new_ids(IdPrefix.INSIGHTS, len(posts) * len(ages)))
    rows = [
        {
            "id": next(ids),
            "post_id": post_id,
            "client_id": client_id,
            "target": target,
            "age": label,
            "due_at": published_at + age,
            "attempts": 0,
            "status": InsightStatus.PENDING,
            "created_at": published_at,
            "updated_at": published_at,
        }
        for post_id, client_id, target, published_at in posts
        for label, age in ages
    ]
    if session.get_bind().dialect.name == "postgresql":
        # One array per column: the statement's text is the same whatever the number of
        # rows, so it is parsed once (a statement of literal rows is parsed every time,
        # and that was most of a published batch's CPU).
        columns = {name: [row[name] for row in rows] for name in _UNNESTED}
        pending = InsightStatus.PENDING.value
        return len(session.execute(_INSERT_UNNESTED, {**columns, "pending": pending}).all())
    table: Table = PostInsight.__table__  # type: ignore[assignment]
    result = session.execute(
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["post_id", "age"])
        .returning(table.c.id),
        rows,
    )
    return len(result.all())


_UNNESTED = ("id", "post_id", "client_id", "target", "age", "due_at", "created_at")
_INSERT_UNNESTED = text(
    """
    INSERT INTO post_insights
        (id, post_id, client_id, target, age, due_at, attempts, status, created_at, updated_at)
    SELECT id, post_id, client_id, target, age, due_at, 0, :pending, created_at, created_at
    FROM unnest(
        CAST(:id AS text[]), CAST(:post_id AS text[]), CAST(:client_id AS text[]),
        CAST(:target AS text[]), CAST(:age AS text[]), CAST(:due_at AS timestamptz[]),
        CAST(:created_at AS timestamptz[])
    ) AS r(id, post_id, client_id, target, age, due_at, created_at)
    ON CONFLICT (post_id, age) DO NOTHING
    RETURNING id
    """
)


def claim_due_insights(
    session: Session, now: datetime, resend_after: timedelta, limit: int
) -> list[tuple[str, int]]:
    """Pick up to ``limit`` due fetches to send, oldest due first; ``(id, attempts)`` of each.

    ``in_flight_until`` moves to ``now + resend_after``: if the message is lost or
    its worker dies, the fetch is sent again then. On PostgreSQL the rows are
    locked ``FOR UPDATE SKIP LOCKED``, so two dispatchers never send the same one.
    """
    return claim_due(session, PostInsight, InsightStatus.PENDING, now, resend_after, limit)


def cancel_pending_insights(session: Session, post_id: str, now: datetime) -> int:
    """Cancel the fetches a deleted post still had due; how many."""
    result = session.execute(
        update(PostInsight)
        .where(PostInsight.post_id == post_id, PostInsight.status == InsightStatus.PENDING)
        .values(status=InsightStatus.CANCELED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def series(session: Session, post_id: str) -> list[PostInsight]:
    """Every fetch of ``post_id``, pending ones too, in the order they fall due."""
    return list(
        session.scalars(
            select(PostInsight)
            .where(PostInsight.post_id == post_id)
            .order_by(PostInsight.due_at, PostInsight.id)
        )
    )


def latest(session: Session, post_id: str) -> PostInsight | None:
    """The most recent fetch of ``post_id`` that is done, or None."""
    return session.scalars(
        select(PostInsight)
        .where(PostInsight.post_id == post_id, PostInsight.status == InsightStatus.DONE)
        .order_by(PostInsight.fetched_at.desc(), PostInsight.due_at.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True, slots=True)
class DaySummary:
    """One UTC day of a Page: posts published that day, and the sums of those posts'
    latest counts (a post not fetched yet counts 0)."""

    day: date
    posts: int
    reactions: int
    comments: int
    shares: int

    @property
    def engagement(self) -> int:
        return self.reactions + self.comments + self.shares


def page_summary(
    session: Session, target: str, since: datetime, until: datetime | None = None
) -> list[DaySummary]:
    """Per UTC day from ``since`` to ``until`` (default: today), oldest first, every day
    present: the Page's posts published that day and their latest fetched counts."""
    ranked = (
        select(
            PostInsight.post_id,
            PostInsight.reactions,
            PostInsight.comments,
            PostInsight.shares,
            func.row_number()
            .over(
                partition_by=PostInsight.post_id,
                order_by=(PostInsight.fetched_at.desc(), PostInsight.id.desc()),
            )
            .label("rank"),
        )
        .where(PostInsight.target == target, PostInsight.status == InsightStatus.DONE)
        .subquery()
    )
    rows = session.execute(
        select(Post.published_at, ranked.c.reactions, ranked.c.comments, ranked.c.shares)
        .outerjoin(ranked, (ranked.c.post_id == Post.id) & (ranked.c.rank == 1))
        .where(
            Post.target == target,
            Post.published_at.is_not(None),
            Post.published_at >= since,
            *([Post.published_at <= until] if until is not None else []),
        )
    ).all()
    first, last = since.date(), (until or datetime.now(UTC)).date()
    days = {first + timedelta(days=i): [0, 0, 0, 0] for i in range((last - first).days + 1)}
    for published_at, reactions, comments, shares in rows:
        bucket = days.setdefault(published_at.date(), [0, 0, 0, 0])
        bucket[0] += 1
        bucket[1] += reactions or 0
        bucket[2] += comments or 0
        bucket[3] += shares or 0
    return [DaySummary(day, *values) for day, values in sorted(days.items())]


@dataclass(frozen=True, slots=True)
class InsightCounts:
    """What ``offpost status`` says of insights."""

    fetched_last_day: int
    due: int
    failed: int


def insight_counts(session: Session, now: datetime) -> InsightCounts:
    """Fetches done in the 24 h before ``now``, pending ones due by ``now``, failed ones."""
    fetched = session.scalar(
        select(func.count())
        .select_from(PostInsight)
        .where(
            PostInsight.status == InsightStatus.DONE,
            PostInsight.fetched_at > now - timedelta(days=1),
        )
    )
    due = session.scalar(
        select(func.count())
        .select_from(PostInsight)
        .where(PostInsight.status == InsightStatus.PENDING, PostInsight.due_at <= now)
    )
    failed = session.scalar(
        select(func.count())
        .select_from(PostInsight)
        .where(PostInsight.status == InsightStatus.FAILED)
    )
    return InsightCounts(int(fetched or 0), int(due or 0), int(failed or 0))

"""Quotas per client: what one client of a shared deployment may use (docs/quotas.md).

Five quotas, each a deployment default (settings) that an operator may
override per client (``offpost clients create|update NAME --max-…``, or
``PATCH /v1/admin/clients/{id}``):

==========================  ==============================================  =========
quota                       counts                                          over it
==========================  ==============================================  =========
``requests_per_minute``     authenticated API requests, per clock minute    429
``posts_per_day``           posts created through the API, last 24 hours    429
``pending_posts``           posts not yet done (scheduled, queued,          409
                            publishing, needs_reauth), occurrences included
``active_schedules``        schedules with status ``active``                409
``occurrences_per_day``     one schedule's occurrences in any 24 hours      422
==========================  ==============================================  =========

Counts come from the database in the transaction that creates, which locks the
client's row before it counts: two requests of one client that race cannot
both take the last unit of a quota. Other clients never wait on it.

``occurrences_per_day`` is checked twice: when a rule is created, changed or
resumed (the first week of occurrences, so a minutely rule is refused with a
clear answer), and when the dispatcher materialises occurrences (every
occurrence, so no rule, however its density varies over the year, makes more
posts in a day than the quota allows: the extra ones are skipped, with a
``skipped`` event in the schedule's history).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from offpost.errors import OffpostError
from offpost.models import Client, Post, PostStatus, Schedule, ScheduleStatus
from offpost.models.post import PENDING_POST_STATUSES
from offpost.recurrence import Recurrence
from offpost.settings import Settings

DAY = timedelta(days=1)


#: How far ahead a new rule's density is checked at the API.
RULE_CHECK_SPAN = timedelta(days=7)


class Quota(enum.StrEnum):
    """A quota's name, as problem documents, the admin API and the CLI spell it."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    POSTS_PER_DAY = "posts_per_day"
    PENDING_POSTS = "pending_posts"
    ACTIVE_SCHEDULES = "active_schedules"
    OCCURRENCES_PER_DAY = "occurrences_per_day"

    @property
    def column(self) -> str:
        """The ``clients`` column that overrides it for one client."""
        return f"max_{self.value}"


@dataclass(frozen=True)
class Quotas:
    """One client's quotas: its overrides over the deployment's defaults."""

    requests_per_minute: int
    posts_per_day: int
    pending_posts: int
    active_schedules: int
    occurrences_per_day: int

    def __getitem__(self, quota: Quota) -> int:
        value: int = getattr(self, quota.value)
        return value


@dataclass(frozen=True)
class QuotaDefaults(Quotas):
    """The deployment's defaults (``OFFPOST_RATE_LIMIT_PER_MINUTE``, ``OFFPOST_QUOTA_*``)."""

    @classmethod
    def of(cls, settings: Settings) -> QuotaDefaults:
        return cls(
            requests_per_minute=settings.rate_limit_per_minute,
            posts_per_day=settings.quota_posts_per_day,
            pending_posts=settings.quota_pending_posts,
            active_schedules=settings.quota_active_schedules,
            occurrences_per_day=settings.quota_occurrences_per_day,
        )

    def for_client(self, client: Client) -> Quotas:
        """``client``'s quotas: each override if set, else the default."""
        values = {}
        for quota in Quota:
            override = getattr(client, quota.column)
            values[quota.value] = override if override is not None else getattr(self, quota.value)
        return Quotas(**values)


#: The defaults as shipped (the settings' own defaults, no environment read).
SHIPPED_DEFAULTS = QuotaDefaults.of(Settings.model_construct())


class QuotaExceededError(OffpostError):
    """A request would take a client over one of its quotas."""

    def __init__(
        self,
        quota: Quota,
        limit: int,
        used: int,
        message: str,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit
        self.used = used
        self.retry_after_s = retry_after_s


def lock_client(session: Session, client_id: str) -> None:
    """Hold the client's row until the transaction ends: its quota checks are serial.

    On PostgreSQL ``FOR NO KEY UPDATE``: it excludes another quota check of the
    client but not the ``KEY SHARE`` lock that every insert referencing the
    client takes (a post, an idempotency key, a webhook event), so it never
    deadlocks with them. SQLite has no row locks: a write to the row starts the
    transaction's write lock instead, so two checks still take turns.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Client).where(Client.id == client_id).values(name=Client.name))
        return
    session.execute(lock_query(client_id))


def lock_query(client_id: str | ColumnElement[str]) -> Select[str]:
    """:func:`lock_client`'s statement on PostgreSQL."""
    return select(Client.id).where(Client.id == client_id).with_for_update(key_share=True)


def _created_through_api(
    client_id: str | ColumnElement[str], since: datetime | ColumnElement[datetime]
) -> list[ColumnElement[bool]]:
    return [Post.client_id == client_id, Post.created_at > since, Post.schedule_id.is_(None)]


def posts_created(session: Session, client_id: str, now: datetime) -> int:
    """How many posts the client created through the API in the 24 hours before ``now``."""
    return int(session.scalar(select(created_since(client_id, now - DAY))) or 0)


def nth_created(session: Session, client_id: str, now: datetime, n: int) -> datetime | None:
    """When the ``n``-th oldest (from 0) of those posts was created."""
    return session.scalar(nth_created_query(client_id, now - DAY, n))


def nth_created_query(
    client_id: str | ColumnElement[str],
    since: datetime | ColumnElement[datetime],
    n: int | ColumnElement[int],
) -> Select[datetime]:
    """:func:`nth_created`'s statement, for the posts created after ``since``."""
    where = _created_through_api(client_id, since)
    return select(Post.created_at).where(*where).order_by(Post.created_at).offset(n).limit(1)


def pending_posts(session: Session, client_id: str, *, up_to: int | None = None) -> int:
    """How many of the client's posts are not done yet (counted up to ``up_to`` when given)."""
    return int(session.scalar(select(_pending_count(client_id, up_to))) or 0)


#: The pending statuses written into the SQL, not bound: the planner then sees that
#: ``ix_posts_client_pending`` (a partial index on them) serves the count, with a
#: generic plan of a prepared statement too.
_PENDING = Post.status.in_(
    [literal_column(f"'{status.value}'") for status in PENDING_POST_STATUSES]
)


def _pending_count(
    client_id: str | ColumnElement[str], up_to: int | ColumnElement[int] | None
) -> Any:
    """The count of the client's pending posts (at most ``up_to``), as a scalar subquery."""
    query = select(Post.id).where(Post.client_id == client_id, _PENDING)
    if up_to is not None:
        query = query.limit(up_to)
    return select(func.count()).select_from(query.subquery()).scalar_subquery()


def active_schedules(session: Session, client_id: str) -> int:
    """How many of the client's schedules are active."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Schedule)
            .where(Schedule.client_id == client_id, Schedule.status == ScheduleStatus.ACTIVE)
        )
        or 0
    )


def check_inserted_posts(
    session: Session, client_id: str, quotas: Quotas, count: int, now: datetime
) -> None:
    """Raise :class:`QuotaExceededError` if the ``count`` posts this transaction has just
    inserted (created at ``now``) take the client over ``posts_per_day`` or
    ``pending_posts``; the caller then rolls back.

    The posts are inserted first and the client's row locked after: inserts of
    one client run in parallel, and only this check and the commit take turns.
    A second transaction's counts, made after the first one committed and let
    go of the lock, include the first one's posts. (The batch route; one post
    at a time goes through :func:`room_for` instead.)
    """
    check_request_size(quotas, count)
    lock_client(session, client_id)
    # Both counts in one statement, after the lock (in a statement of their own, so
    # that they see what a transaction that held the lock before committed).
    created, pending = session.execute(
        select(_created_count(client_id, now), _pending_count(client_id, quotas.pending_posts + 1))
    ).one()
    if created > quotas.posts_per_day or pending > quotas.pending_posts:
        raise _over(session, client_id, quotas, count, created, pending, now)


def check_request_size(quotas: Quotas, count: int) -> None:
    """Raise :class:`QuotaExceededError` if ``count`` posts are more than a day's quota."""
    per_day = quotas.posts_per_day
    if count > per_day:
        raise QuotaExceededError(
            Quota.POSTS_PER_DAY,
            per_day,
            0,
            f"{count} posts in one request are more than this client may create in a day "
            f"(posts_per_day quota: {per_day}); send fewer at a time",
        )


def room_for(client_id: str, quotas: Quotas, count: int, now: datetime) -> ColumnElement[bool]:
    """True while ``count`` more posts created at ``now`` keep the client within
    ``posts_per_day`` and ``pending_posts``: the condition of an ``INSERT … SELECT …
    WHERE`` that checks and writes in one statement.

    The caller holds :func:`lock_client` (taken by a statement before this one,
    so that its counts see what the previous holder committed) until it
    commits; when nothing was written, :func:`refusal` says why.
    """
    return and_(
        _created_count(client_id, now) + count <= quotas.posts_per_day,
        _pending_count(client_id, quotas.pending_posts) + count <= quotas.pending_posts,
    )


def refusal(
    session: Session, client_id: str, quotas: Quotas, count: int, now: datetime
) -> QuotaExceededError:
    """Why ``count`` more posts did not fit (:func:`room_for` was false), counted again
    under the lock the caller still holds."""
    created, pending = session.execute(
        select(_created_count(client_id, now), _pending_count(client_id, quotas.pending_posts))
    ).one()
    return _over(session, client_id, quotas, count, created + count, pending + count, now)


def _created_count(client_id: str, now: datetime) -> Any:
    """The count of the client's posts created through the API in the day before ``now``."""
    return created_since(client_id, now - DAY)


def created_since(
    client_id: str | ColumnElement[str], since: datetime | ColumnElement[datetime]
) -> Any:
    """The count of the client's posts created through the API after ``since``.

    ``schedule_id IS NULL`` is a FILTER of the count, not a condition of the
    scan: the scan is then the client's own rows of ``ix_posts_client_created``.
    As a condition, a planner with stale statistics (after a bulk load) could
    combine it with the index on ``(schedule_id, occurrence_at)``, whose NULL
    entries are every one-off post of every client: measured at 610,000 posts,
    15 ms per count even for a client with none (benchmarks.md §4).
    """
    client, after, scheduled = _created_through_api(client_id, since)
    return (
        select(func.count().filter(scheduled))
        .select_from(Post)
        .where(client, after)
        .scalar_subquery()
    )


def pending_count(client_id: ColumnElement[str], up_to: ColumnElement[int]) -> Any:
    """The count of the client's pending posts, at most ``up_to`` (a scalar subquery)."""
    return _pending_count(client_id, up_to)


def _over(
    session: Session,
    client_id: str,
    quotas: Quotas,
    count: int,
    created: int,
    pending: int,
    now: datetime,
) -> QuotaExceededError:
    """The error for ``count`` new posts that make ``created`` in the day and ``pending``."""
    freed_by = None
    if created > quotas.posts_per_day:
        freed_by = nth_created(session, client_id, now, created - quotas.posts_per_day - 1)
    return refusal_for(quotas, count, created - count, pending - count, now, freed_by)


def refusal_for(
    quotas: Quotas,
    count: int,
    created: int,
    pending: int,
    now: datetime,
    freed_by: datetime | None,
) -> QuotaExceededError:
    """The error for ``count`` posts refused when the client had created ``created`` posts
    in the day and had ``pending`` waiting; ``freed_by`` is when the post whose day
    ends first to make room was created (:func:`nth_created`), if over ``posts_per_day``."""
    per_day = quotas.posts_per_day
    if created + count > per_day:
        # The day's window slides: room for `count` once enough of the oldest are a day old.
        wait_s = (freed_by + DAY - now).total_seconds() if freed_by is not None else 60.0
        return QuotaExceededError(
            Quota.POSTS_PER_DAY,
            per_day,
            created,
            f"this client created {created} posts in the last 24 hours; its "
            f"posts_per_day quota is {per_day}, so {count} more must wait",
            retry_after_s=max(1.0, wait_s),
        )
    return _over_pending(quotas, pending, count)


def check_pending(session: Session, client_id: str, quotas: Quotas, count: int) -> None:
    """Raise :class:`QuotaExceededError` unless ``count`` more posts may wait to be published
    (failed ones retried). The caller holds :func:`lock_client`."""
    pending = pending_posts(session, client_id, up_to=quotas.pending_posts + 1)
    if pending + count > quotas.pending_posts:
        raise _over_pending(quotas, pending, count)


def _over_pending(quotas: Quotas, pending: int, count: int) -> QuotaExceededError:
    return QuotaExceededError(
        Quota.PENDING_POSTS,
        quotas.pending_posts,
        pending,
        f"this client has {pending} posts waiting to be published; its pending_posts "
        f"quota is {quotas.pending_posts}, so {count} more cannot be added until some "
        "are published or canceled",
    )


def check_new_active_schedule(session: Session, client_id: str, quotas: Quotas) -> None:
    """Raise :class:`QuotaExceededError` unless one more schedule of the client may be active."""
    lock_client(session, client_id)
    active = active_schedules(session, client_id)
    if active + 1 > quotas.active_schedules:
        raise QuotaExceededError(
            Quota.ACTIVE_SCHEDULES,
            quotas.active_schedules,
            active,
            f"this client has {active} active schedules; its active_schedules quota is "
            f"{quotas.active_schedules}: pause or delete one first",
        )


def densest_day(occurrences: Iterable[datetime], limit: int) -> int:
    """The most occurrences in any 24 hours among ``occurrences`` (in order).

    Stops counting once it passes ``limit``."""
    window: list[datetime] = []
    most = 0
    for occurrence in occurrences:
        window.append(occurrence)
        start = bisect.bisect_right(window, occurrence - DAY)
        del window[:start]
        most = max(most, len(window))
        if most > limit:
            break
    return most


def check_rule(recurrence: Recurrence, now: datetime, quotas: Quotas) -> None:
    """Raise :class:`QuotaExceededError` if the rule's first week from ``now`` has a day
    with more occurrences than ``occurrences_per_day``.

    The work is bounded: at most the occurrences of a week, and never more than
    one past the quota in any day. The dispatcher enforces the quota on every
    occurrence anyway (:func:`over_daily_quota`); this is the early, clear answer.
    """
    limit = quotas.occurrences_per_day
    first = next(recurrence.occurrences(now, inclusive=True), None)
    if first is None:
        return
    end = first + RULE_CHECK_SPAN

    def week() -> Iterable[datetime]:
        for occurrence in recurrence.occurrences(first, inclusive=True):
            if occurrence > end:
                return
            yield occurrence

    most = densest_day(week(), limit)
    if most > limit:
        raise QuotaExceededError(
            Quota.OCCURRENCES_PER_DAY,
            limit,
            most,
            f"the rule makes more than {limit} posts in a day (occurrences_per_day quota: "
            f"{limit}); make it less frequent",
        )


def over_daily_quota(
    earlier: Sequence[datetime], candidates: Sequence[datetime], limit: int
) -> tuple[list[datetime], list[datetime]]:
    """Split ``candidates`` (in order) into those within ``limit`` per any 24 hours and the rest.

    ``earlier`` are the schedule's live occurrences before the first candidate
    (those within a day of it matter), in order. A skipped candidate does not
    count against later ones.
    """
    window = [o for o in earlier if candidates and o > candidates[0] - DAY]
    kept: list[datetime] = []
    skipped: list[datetime] = []
    for occurrence in candidates:
        del window[: bisect.bisect_right(window, occurrence - DAY)]
        if len(window) >= limit:
            skipped.append(occurrence)
            continue
        window.append(occurrence)
        kept.append(occurrence)
    return kept, skipped


def live_occurrences_before(session: Session, schedule_id: str, first: datetime) -> list[datetime]:
    """The schedule's occurrences in the day before ``first`` that have a post not canceled."""
    return list(
        session.scalars(
            select(Post.occurrence_at)
            .where(
                Post.schedule_id == schedule_id,
                Post.occurrence_at > first - DAY,
                Post.occurrence_at < first,
                Post.status != PostStatus.CANCELED,
            )
            .order_by(Post.occurrence_at)
        )
    )


@dataclass(frozen=True)
class Usage:
    """How much of each quota a client uses now (``offpost status``, the dashboard)."""

    posts_last_day: int
    pending_posts: int
    active_schedules: int


def usage(session: Session, client_id: str, now: datetime) -> Usage:
    """The client's current use of its countable quotas."""
    return Usage(
        posts_last_day=posts_created(session, client_id, now),
        pending_posts=pending_posts(session, client_id),
        active_schedules=active_schedules(session, client_id),
    )


def usage_by_client(session: Session, now: datetime) -> dict[str, Usage]:
    """Every client's :class:`Usage`, in three grouped queries (whatever the number of clients)."""
    created = dict(
        session.execute(
            select(Post.client_id, func.count())
            .where(Post.created_at > now - DAY, Post.schedule_id.is_(None))
            .group_by(Post.client_id)
        ).all()
    )
    pending = dict(
        session.execute(
            select(Post.client_id, func.count())
            .where(Post.status.in_(PENDING_POST_STATUSES))
            .group_by(Post.client_id)
        ).all()
    )
    schedules = dict(
        session.execute(
            select(Schedule.client_id, func.count())
            .where(Schedule.status == ScheduleStatus.ACTIVE)
            .group_by(Schedule.client_id)
        ).all()
    )
    ids = session.scalars(select(Client.id)).all()
    return {
        client_id: Usage(
            posts_last_day=int(created.get(client_id, 0)),
            pending_posts=int(pending.get(client_id, 0)),
            active_schedules=int(schedules.get(client_id, 0)),
        )
        for client_id in ids
    }


@dataclass(frozen=True)
class ClientQuotas:
    """One client's quotas, which of them are its own, and its use of them."""

    id: str
    name: str
    is_admin: bool
    revoked: bool
    quotas: Quotas
    #: The quotas set for this client (the others are the deployment's defaults).
    overridden: frozenset[Quota]
    usage: Usage

    @classmethod
    def of(cls, client: Client, defaults: QuotaDefaults, use: Usage) -> ClientQuotas:
        return cls(
            id=client.id,
            name=client.name,
            is_admin=client.is_admin,
            revoked=client.is_revoked,
            quotas=defaults.for_client(client),
            overridden=frozenset(q for q in Quota if getattr(client, q.column) is not None),
            usage=use,
        )

    def used(self, quota: Quota) -> int | None:
        """How much of ``quota`` the client uses now (None: a rate, not counted here)."""
        return {
            Quota.POSTS_PER_DAY: self.usage.posts_last_day,
            Quota.PENDING_POSTS: self.usage.pending_posts,
            Quota.ACTIVE_SCHEDULES: self.usage.active_schedules,
        }.get(quota)

    def near(self, share: float = 0.8) -> list[Quota]:
        """The countable quotas this client uses at least ``share`` of."""
        return [
            quota
            for quota in Quota
            if (used := self.used(quota)) is not None and used >= share * self.quotas[quota]
        ]


def client_quotas(session: Session, now: datetime, defaults: QuotaDefaults) -> list[ClientQuotas]:
    """Every client's quotas and use, by name (the admin API, the dashboard, the CLI)."""
    use = usage_by_client(session, now)
    return [
        ClientQuotas.of(client, defaults, use.get(client.id, Usage(0, 0, 0)))
        for client in session.scalars(select(Client).order_by(Client.name))
    ]

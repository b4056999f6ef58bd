"""The dashboard's schedules pages: every client's schedules, and one schedule's runs.

A page of schedules costs two queries whatever its size — the schedules with
their client's name, newest first by ``(created_at, id)`` (the API's order and
cursor), then the names of their Pages (:func:`.credentials.page_names`, never a
token) — plus each rule's arithmetic for its next runs. That arithmetic is the
API's own (:func:`offpost.api.schedules.future_runs`: the same five runs, in the
same format, as ``GET /v1/schedules`` shows), so the page and the API cannot
disagree. The detail page reads the API's detail (:func:`offpost.api.schedules.schedule_detail`:
upcoming runs and history) and the schedule's posts.

Schedules and posts carry no token, so loading them as objects decrypts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offpost.api.dashboard.credentials import page_names
from offpost.api.dashboard.rule_words import describe_rule
from offpost.api.schedules import future_runs
from offpost.models import Client, Post, PostStatus, Schedule, ScheduleStatus
from offpost.posts.rules import Cursor, older_than, split_page
from offpost.recurrence import RuleError, load_zone

#: Runs listed on a schedule's page, newest first.
LAST_RUNS = 10


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One schedule as the pages show it."""

    schedule: Schedule
    client_name: str
    #: The name of the Page it posts on; ``None`` when its credential no longer lists it.
    page_name: str | None
    #: The rule in words; ``None`` when :func:`describe_rule` has none (show :attr:`rule`).
    words: str | None
    #: ``"rrule"`` or ``"cron"``.
    rule_kind: str
    #: The rule as stored.
    rule: str
    next_run_at: datetime | None
    #: The next runs in the schedule's zone, RFC 3339 with its offset (empty unless active).
    upcoming: list[str]


def rule_words(schedule: Schedule) -> str | None:
    """The schedule's rule in words; RRULE parts left out come from its start, in its zone."""
    try:
        start = schedule.start_at.astimezone(load_zone(schedule.timezone))
    except RuleError:  # a zone this machine's tzdata lacks: no words, the raw rule shows
        return None
    return describe_rule(schedule.rrule, schedule.cron, start)


def schedule_row(
    schedule: Schedule, client_name: str, page_name: str | None, now: datetime
) -> ScheduleRow:
    next_run_at, upcoming = future_runs(schedule, now)
    return ScheduleRow(
        schedule=schedule,
        client_name=client_name,
        page_name=page_name,
        words=rule_words(schedule),
        rule_kind="rrule" if schedule.rrule is not None else "cron",
        rule=schedule.rrule if schedule.rrule is not None else schedule.cron or "",
        next_run_at=next_run_at,
        upcoming=upcoming,
    )


def list_schedules(
    session: Session,
    now: datetime,
    *,
    limit: int,
    status: ScheduleStatus | None = None,
    client_id: str | None = None,
    after: Cursor | None = None,
) -> tuple[list[ScheduleRow], Cursor | None]:
    """A page of every client's schedules, newest first, and the next page's cursor.

    ``status`` ``None`` means active or paused: deleted ones only when asked for,
    as ``GET /v1/schedules`` lists them.
    """
    query = (
        select(Schedule, Client.name)
        .join(Client, Client.id == Schedule.client_id)
        .order_by(Schedule.created_at.desc(), Schedule.id.desc())
        .limit(limit + 1)
    )
    if status is None:
        query = query.where(Schedule.status != ScheduleStatus.DELETED)
    else:
        query = query.where(Schedule.status == status)
    if client_id is not None:
        query = query.where(Schedule.client_id == client_id)
    if after is not None:
        query = query.where(older_than(Schedule.created_at, Schedule.id, after))
    rows, next_page = split_page(
        session.execute(query).all(), limit, lambda r: (r[0].created_at, r[0].id)
    )
    names = page_names(session, {(s.credential_id, s.target) for s, _ in rows})
    return [
        schedule_row(s, client_name, names.get((s.credential_id, s.target)), now)
        for s, client_name in rows
    ], next_page


@dataclass(frozen=True, slots=True)
class ScheduleRuns:
    """A schedule's posts: its latest runs, and those already made for later."""

    #: Posts of occurrences up to now, newest first (at most :data:`LAST_RUNS`).
    last: list[Post]
    #: Posts made ahead for occurrences after now, by status (none left out).
    ahead: dict[str, int]

    @property
    def ahead_total(self) -> int:
        return sum(self.ahead.values())


def schedule_runs(session: Session, schedule_id: str, now: datetime) -> ScheduleRuns:
    """The schedule's last runs and the posts it has made ahead: two queries."""
    last = session.scalars(
        select(Post)
        .where(Post.schedule_id == schedule_id, Post.occurrence_at <= now)
        .order_by(Post.occurrence_at.desc(), Post.id.desc())
        .limit(LAST_RUNS)
    )
    ahead = session.execute(
        select(Post.status, func.count())
        .where(Post.schedule_id == schedule_id, Post.occurrence_at > now)
        .group_by(Post.status)
    )
    counts = {status: int(n) for status, n in ahead}
    return ScheduleRuns(
        last=list(last), ahead={s.value: counts[s] for s in PostStatus if s in counts}
    )

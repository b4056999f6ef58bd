"""Materialisation: a schedule's occurrences become ordinary posts, a bounded horizon ahead.

The dispatcher calls :func:`run_schedules` every tick. It

1. finds the active schedules whose next unmaterialised occurrence
   (``next_run_at``) falls within ``now + horizon`` — one range scan of the
   partial index ``ix_schedules_next_run``, so a tick with nothing to do costs
   one indexed query — and for each, in its own transaction, inserts a post
   per occurrence up to the horizon, at most ``max_per_schedule`` of them per
   tick (a per-minute cron fills its horizon over several ticks instead of in
   one burst). Occurrences already more than ``misfire_grace`` in the past
   when they are reached (offpost was down beyond the horizon) get no post
   but go through the misfire policy (below);
2. sweeps the misfires among existing posts: schedule posts still
   ``scheduled``, never attempted, whose ``publish_at`` is more than
   ``misfire_grace`` (5 minutes) in the past.

Misfire policy (the OpenAPI document): ``skip`` cancels every missed occurrence (post
``canceled`` with ``last_error.code = "misfire_skipped"``; an occurrence that
never had a post just gets the event) and records a ``skipped`` event in the
schedule's history. ``catch_up_one`` does the same for all but the latest
missed occurrence, which is published (event ``caught_up``) — unless a
later occurrence is already due on time, which supersedes it (so a restart
never publishes two posts of one schedule in a burst). Step 1 runs
before step 2 so that the latest missed occurrence is known when older posts
are swept. Only never-attempted posts count: a post in retry backoff is not a
misfire.

Exactly once per occurrence: posts are inserted with ``INSERT … ON CONFLICT
(schedule_id, occurrence_at)``, so a second dispatcher (or a retried tick)
cannot create a second post for an occurrence; on PostgreSQL the schedule row
is also taken with ``FOR UPDATE SKIP LOCKED`` so dispatchers share the work
instead of repeating it. History events are unique per ``(schedule,
occurrence, kind)`` the same way.

A conflicting post is revived only if offpost itself canceled it when the
schedule was paused or changed (``last_error.code`` ``schedule_paused`` or
``schedule_changed``): resuming a schedule, or changing it back, re-creates
those occurrences with the current content. A post the client canceled stays
canceled.

Content template: in ``message``, ``{date}`` becomes the occurrence's local
date (``2026-12-01``) and ``{time}`` its local time (``09:00``), in the
schedule's zone. Nothing else is interpreted; other braces stay as written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from offpost.media.spec import spec_media_ids
from offpost.media.uses import record_uses
from offpost.models import (
    Client,
    Credential,
    CredentialStatus,
    Misfire,
    Post,
    PostStatus,
    Schedule,
    ScheduleEvent,
    ScheduleEventKind,
    ScheduleStatus,
    transitions,
)
from offpost.models.clock import is_postgresql
from offpost.models.post import CANCELABLE_STATUSES, error_document
from offpost.posts import quotas
from offpost.posts.quotas import SHIPPED_DEFAULTS
from offpost.posts.store import NewPost, new_post_rows
from offpost.recurrence import Recurrence, RuleError, parse_rule

logger = logging.getLogger(__name__)

#: How far ahead occurrences exist as posts (visible, editable, cancelable).
DEFAULT_HORIZON = timedelta(hours=24)
#: An occurrence later than this when it is reached is a misfire.
MISFIRE_GRACE = timedelta(minutes=5)
#: Occurrences one schedule turns into posts (or misfire events) per tick.
MAX_PER_SCHEDULE = 100
#: Schedules worked on per tick; the rest wait for the next one.
MAX_SCHEDULES = 200
#: Stale posts swept per batch, and batches per tick.
MAX_STALE_POSTS = 500
MAX_SWEEP_BATCHES = 20

#: ``last_error.code`` of posts offpost canceled itself.
MISFIRE_SKIPPED = "misfire_skipped"
SCHEDULE_PAUSED = "schedule_paused"
SCHEDULE_CHANGED = "schedule_changed"
SCHEDULE_DELETED = "schedule_deleted"
#: Posts with these codes come back when their occurrence is materialised again.
REVIVABLE_CODES = (SCHEDULE_PAUSED, SCHEDULE_CHANGED)


@dataclass
class ScheduleTickResult:
    """What one tick (or one schedule) did."""

    #: Schedules materialised.
    schedules: int = 0
    #: Posts created (or revived) for occurrences.
    created: int = 0
    #: Missed occurrences dropped.
    skipped: int = 0
    #: Missed occurrences kept to publish late (``catch_up_one``).
    caught_up: int = 0
    #: Schedules paused because their credential was deleted or their rule no longer parses.
    paused: int = 0

    def add(self, other: ScheduleTickResult) -> None:
        self.schedules += other.schedules
        self.created += other.created
        self.skipped += other.skipped
        self.caught_up += other.caught_up
        self.paused += other.paused


def recurrence_of(schedule: Schedule) -> Recurrence:
    """The schedule's rule, parsed (raises :class:`RuleError` if the stored rule is invalid)."""
    return parse_rule(
        rrule=schedule.rrule,
        cron=schedule.cron,
        timezone=schedule.timezone,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
    )


def render_message(template: str | None, local: datetime) -> str | None:
    """``template`` with ``{date}`` and ``{time}`` of the occurrence's local time filled in."""
    if template is None:
        return None
    return template.replace("{date}", local.strftime("%Y-%m-%d")).replace(
        "{time}", local.strftime("%H:%M")
    )


# --- the tick -------------------------------------------------------------------


def run_schedules(
    session_factory: sessionmaker[Session],
    now: datetime,
    *,
    horizon: timedelta = DEFAULT_HORIZON,
    max_per_schedule: int = MAX_PER_SCHEDULE,
    max_schedules: int = MAX_SCHEDULES,
    misfire_grace: timedelta = MISFIRE_GRACE,
    occurrences_per_day: int = SHIPPED_DEFAULTS.occurrences_per_day,
) -> ScheduleTickResult:
    """Materialise due schedules up to ``now + horizon``, then sweep misfires.

    ``occurrences_per_day`` is the deployment's quota; a client's own
    (``clients.max_occurrences_per_day``) replaces it for its schedules.

    Safe to run from any number of dispatchers at once; each schedule is
    worked on in its own transaction, and a failure in one is logged and
    retried next tick without stopping the others.
    """
    result = ScheduleTickResult()
    limit = now + horizon
    with session_factory() as session:
        ids = session.scalars(
            select(Schedule.id)
            .where(
                Schedule.status == ScheduleStatus.ACTIVE,
                Schedule.next_run_at.is_not(None),
                Schedule.next_run_at <= limit,
            )
            .order_by(Schedule.next_run_at)
            .limit(max_schedules)
        ).all()
    for schedule_id in ids:
        try:
            with session_factory.begin() as session:
                schedule = _lock_due_schedule(session, schedule_id, limit)
                if schedule is None:
                    continue  # another dispatcher has it, or it changed meanwhile
                own = session.scalar(
                    select(Client.max_occurrences_per_day).where(Client.id == schedule.client_id)
                )
                result.add(
                    materialize_schedule(
                        session,
                        schedule,
                        now,
                        horizon=horizon,
                        max_occurrences=max_per_schedule,
                        misfire_grace=misfire_grace,
                        occurrences_per_day=own or occurrences_per_day,
                    )
                )
        except SQLAlchemyError:
            logger.warning(
                "materialising schedule %s failed; retrying next tick",
                schedule_id,
                exc_info=True,
                extra={"action": "schedule_materialize_failed", "schedule_id": schedule_id},
            )
    try:
        # All stale posts before the dispatcher claims any: after a long outage a
        # batch limit must not let the rest be published in a burst.
        for _ in range(MAX_SWEEP_BATCHES):
            with session_factory.begin() as session:
                swept, examined = sweep_misfires(
                    session, now, misfire_grace=misfire_grace, max_posts=MAX_STALE_POSTS
                )
            result.add(swept)
            if examined < MAX_STALE_POSTS:
                break
    except SQLAlchemyError:
        logger.warning(
            "sweeping schedule misfires failed; retrying next tick",
            exc_info=True,
            extra={"action": "schedule_sweep_failed"},
        )
    return result


def _lock_due_schedule(session: Session, schedule_id: str, limit: datetime) -> Schedule | None:
    query = select(Schedule).where(
        Schedule.id == schedule_id,
        Schedule.status == ScheduleStatus.ACTIVE,
        Schedule.next_run_at.is_not(None),
        Schedule.next_run_at <= limit,
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).one_or_none()


def materialize_schedule(
    session: Session,
    schedule: Schedule,
    now: datetime,
    *,
    horizon: timedelta = DEFAULT_HORIZON,
    max_occurrences: int = MAX_PER_SCHEDULE,
    misfire_grace: timedelta = MISFIRE_GRACE,
    occurrences_per_day: int = SHIPPED_DEFAULTS.occurrences_per_day,
) -> ScheduleTickResult:
    """Create posts for ``schedule``'s occurrences from ``next_run_at`` up to ``now + horizon``.

    At most ``max_occurrences`` occurrences per call; missed ones (older than
    ``now - misfire_grace``) go through the misfire policy; an occurrence that
    would make more than ``occurrences_per_day`` live posts of the schedule in
    24 hours gets none (a ``skipped`` event with reason ``quota``). Updates
    ``next_run_at``, ``materialized_until`` and ``occurrences_created``. The
    caller holds the schedule (row lock on PostgreSQL) and commits.
    """
    result = ScheduleTickResult(schedules=1)
    if schedule.status != ScheduleStatus.ACTIVE or schedule.next_run_at is None:
        return ScheduleTickResult()
    # The status alone: loading the credential would decrypt its tokens for nothing.
    credential_status = session.scalar(
        select(Credential.status).where(Credential.id == schedule.credential_id)
    )
    if credential_status in (None, CredentialStatus.DELETED):
        _pause_by_offpost(session, schedule, now, "credential_deleted")
        result.paused = 1
        return result
    try:
        recurrence = recurrence_of(schedule)
    except RuleError as exc:
        logger.error(
            "schedule %s has an invalid rule (%s); pausing it",
            schedule.id,
            exc,
            extra={"action": "schedule_rule_invalid", "schedule_id": schedule.id},
        )
        _pause_by_offpost(session, schedule, now, "invalid_rule")
        result.paused = 1
        return result

    limit = now + horizon
    cutoff = now - misfire_grace
    taken: list[datetime] = []
    following: datetime | None = None
    for occurrence in recurrence.occurrences(schedule.next_run_at, inclusive=True):
        if occurrence > limit or len(taken) >= max_occurrences:
            following = occurrence
            break
        taken.append(occurrence)
    missed = [o for o in taken if o < cutoff]
    to_create = taken[len(missed) :]
    # The latest missed occurrence is known only once the missed run has ended.
    missed_run_over = bool(to_create) or following is None or following >= cutoff
    # An occurrence that is due on time supersedes the missed ones: no burst of two.
    on_time_due = any(o <= now for o in to_create)
    caught: datetime | None = None
    if missed and schedule.misfire == Misfire.CATCH_UP_ONE and missed_run_over and not on_time_due:
        caught = missed.pop()
        to_create.insert(0, caught)
    if missed:
        detail = {"reason": "missed", "misfire": schedule.misfire.value}
        record_events(
            session, schedule.id, ScheduleEventKind.SKIPPED, now, [(o, detail) for o in missed]
        )
        result.skipped = len(missed)
    to_create = _within_daily_quota(session, schedule, to_create, occurrences_per_day, now, result)
    # Caught up only if the quota left it a post.
    if caught is not None and caught in to_create:
        record_events(session, schedule.id, ScheduleEventKind.CAUGHT_UP, now, [(caught, None)])
        result.caught_up = 1
    result.created = insert_occurrence_posts(session, schedule, recurrence, to_create, now)

    schedule.next_run_at = following
    if following is None or following > limit:
        schedule.materialized_until = limit
    elif taken:
        schedule.materialized_until = taken[-1]
    if result.created:
        # In SQL, so that a concurrent writer's count is added to, not overwritten.
        schedule.occurrences_created = Schedule.occurrences_created + result.created
    schedule.updated_at = now
    if result.created or missed:
        logger.info(
            "schedule %s: %d posts, %d missed occurrences skipped",
            schedule.id,
            result.created,
            len(missed),
            extra={"action": "schedule_materialized", "schedule_id": schedule.id},
        )
    return result


def _within_daily_quota(
    session: Session,
    schedule: Schedule,
    occurrences: list[datetime],
    per_day: int,
    now: datetime,
    result: ScheduleTickResult,
) -> list[datetime]:
    """``occurrences`` without those over the client's ``occurrences_per_day`` quota,
    which get a ``skipped`` event (reason ``quota``) instead of a post."""
    if not occurrences:
        return occurrences
    earlier = quotas.live_occurrences_before(session, schedule.id, occurrences[0])
    kept, over = quotas.over_daily_quota(earlier, occurrences, per_day)
    if over:
        detail: dict[str, Any] = {
            "reason": "quota",
            "quota": quotas.Quota.OCCURRENCES_PER_DAY.value,
            "limit": per_day,
        }
        record_events(
            session, schedule.id, ScheduleEventKind.SKIPPED, now, [(o, detail) for o in over]
        )
        result.skipped += len(over)
        logger.warning(
            "schedule %s: %d occurrences over the occurrences_per_day quota (%d) skipped",
            schedule.id,
            len(over),
            per_day,
            extra={"action": "schedule_quota_skipped", "schedule_id": schedule.id},
        )
    return kept


def insert_occurrence_posts(
    session: Session,
    schedule: Schedule,
    recurrence: Recurrence,
    occurrences: Sequence[datetime],
    now: datetime,
) -> int:
    """Insert one post per occurrence, exactly once; returns how many were created or revived."""
    if not occurrences:
        return 0
    rows = new_post_rows(
        schedule.client_id,
        [
            NewPost(
                credential_id=schedule.credential_id,
                target=schedule.target,
                message=render_message(schedule.message, recurrence.local(occurrence)),
                link=schedule.link,
                photo_url=schedule.photo_url,
                media=schedule.media,
                first_comment=render_message(schedule.first_comment, recurrence.local(occurrence)),
                publish_at=occurrence,
                schedule_id=schedule.id,
                occurrence_at=occurrence,
            )
            for occurrence in occurrences
        ],
        now,
    )
    made = transitions.insert_occurrences(session, rows, REVIVABLE_CODES)
    if media_ids := spec_media_ids(schedule.media):
        # Each occurrence keeps its uploads alive until it is done, schedule or not.
        for post_id in made:
            record_uses(session, media_ids, post_id=post_id)
    return len(made)


# --- misfires -------------------------------------------------------------------


def sweep_misfires(
    session: Session,
    now: datetime,
    *,
    misfire_grace: timedelta = MISFIRE_GRACE,
    max_posts: int = MAX_STALE_POSTS,
) -> tuple[ScheduleTickResult, int]:
    """Apply the misfire policy to never-attempted schedule posts overdue by ``misfire_grace``.

    Returns what it did and how many stale posts it examined (``max_posts`` means
    there may be more).
    """
    result = ScheduleTickResult()
    cutoff = now - misfire_grace
    stale = (
        select(
            Post.id, Post.schedule_id, Post.occurrence_at, Schedule.misfire, Schedule.next_run_at
        )
        .join(Schedule, Schedule.id == Post.schedule_id)
        .where(
            Post.status == PostStatus.SCHEDULED,
            Post.due_at < cutoff,
            Post.publish_at < cutoff,
            Post.schedule_id.is_not(None),
            Post.attempts == 0,
        )
        .order_by(Post.due_at)
        .limit(max_posts)
    )
    if is_postgresql(session):
        stale = stale.with_for_update(skip_locked=True, of=Post)
    rows = session.execute(stale).all()
    if not rows:
        return result, 0
    kept: dict[str, datetime] = {}
    catching_up = {
        row.schedule_id: row.next_run_at for row in rows if row.misfire == Misfire.CATCH_UP_ONE
    }
    for schedule_id, next_run_at in catching_up.items():
        if next_run_at is not None and next_run_at < cutoff:
            continue  # later missed occurrences are still to come: none of these is the latest
        latest = session.scalar(
            select(func.max(Post.occurrence_at)).where(
                Post.schedule_id == schedule_id,
                Post.status == PostStatus.SCHEDULED,
                Post.attempts == 0,
                Post.due_at < cutoff,
            )
        )
        superseded = session.scalar(
            select(func.count())
            .select_from(Post)
            .where(
                Post.schedule_id == schedule_id,
                Post.occurrence_at > latest,
                Post.occurrence_at <= now,
                Post.status != PostStatus.CANCELED,
            )
        )
        if latest is not None and not superseded:
            kept[schedule_id] = latest
    to_cancel = [
        row.id
        for row in rows
        if not (row.schedule_id in kept and row.occurrence_at == kept[row.schedule_id])
    ]
    canceled = cancel_posts(
        session,
        [Post.id.in_(to_cancel), Post.status == PostStatus.SCHEDULED, Post.attempts == 0],
        now,
        MISFIRE_SKIPPED,
        "the occurrence was missed (offpost was not running at its time) and the "
        "schedule's misfire policy dropped it",
    )
    for post_id, schedule_id, occurrence_at in canceled:
        record_events(
            session,
            schedule_id,
            ScheduleEventKind.SKIPPED,
            now,
            [(occurrence_at, {"reason": "misfire", "post_id": post_id})],
        )
    for schedule_id, occurrence_at in kept.items():
        record_events(
            session, schedule_id, ScheduleEventKind.CAUGHT_UP, now, [(occurrence_at, None)]
        )
    result.skipped = len(canceled)
    result.caught_up = len(kept)
    if canceled:
        logger.info(
            "%d missed schedule posts skipped, %d caught up",
            len(canceled),
            len(kept),
            extra={"action": "schedule_misfires_swept"},
        )
    return result, len(rows)


# --- building blocks for the API ------------------------------------------------


def cancel_posts(
    session: Session, where: Iterable[Any], now: datetime, code: str, message: str
) -> list[tuple[str, str, datetime]]:
    """Cancel the posts matching ``where`` (:func:`~offpost.models.transitions.cancel_where`);
    returns ``(id, schedule_id, occurrence_at)`` of each."""
    rows = transitions.cancel_where(session, where, now, error_document(code, message))
    # Only schedule posts are canceled here, so both occurrence columns are set.
    return [(row[0], str(row[1]), row[2]) for row in rows if row[2] is not None]


def cancel_pending_posts(
    session: Session, schedule_id: str, now: datetime, code: str, *, after: datetime | None = None
) -> int:
    """Cancel the schedule's never-attempted ``scheduled`` posts (those after ``after`` only)."""
    where = [
        Post.schedule_id == schedule_id,
        Post.status == PostStatus.SCHEDULED,
        Post.attempts == 0,
    ]
    if after is not None:
        where.append(Post.occurrence_at > after)
    messages = {
        SCHEDULE_PAUSED: "the schedule was paused",
        SCHEDULE_CHANGED: "the schedule was changed; the occurrence was re-made",
    }
    return len(cancel_posts(session, where, now, code, messages.get(code, code)))


def cancel_unpublished_posts(session: Session, schedule_id: str, now: datetime) -> int:
    """Cancel every post of the schedule not yet published or publishing (its deletion)."""
    where = [Post.schedule_id == schedule_id, Post.status.in_(CANCELABLE_STATUSES)]
    return len(cancel_posts(session, where, now, SCHEDULE_DELETED, "the schedule was deleted"))


def restart_schedule(schedule: Schedule, recurrence: Recurrence, now: datetime) -> None:
    """Make materialisation continue from ``now`` (creation, resume, a changed rule)."""
    schedule.next_run_at = next(recurrence.occurrences(now, inclusive=True), None)
    schedule.materialized_until = now


def record_events(
    session: Session,
    schedule_id: str,
    kind: ScheduleEventKind,
    now: datetime,
    occurrences: Sequence[tuple[datetime | None, dict[str, Any] | None]] = ((None, None),),
) -> None:
    """Add history events; an occurrence event already recorded is not recorded again."""
    if not occurrences:
        return
    rows = [
        {
            "schedule_id": schedule_id,
            "kind": kind,
            "occurrence_at": occurrence_at,
            "detail": detail,
            "created_at": now,
        }
        for occurrence_at, detail in occurrences
    ]
    statement = _insert(session, ScheduleEvent).values(rows)
    session.execute(
        statement.on_conflict_do_nothing(index_elements=["schedule_id", "occurrence_at", "kind"])
    )


def _pause_by_offpost(session: Session, schedule: Schedule, now: datetime, reason: str) -> None:
    schedule.status = ScheduleStatus.PAUSED
    schedule.updated_at = now
    cancel_pending_posts(session, schedule.id, now, SCHEDULE_PAUSED)
    record_events(session, schedule.id, ScheduleEventKind.PAUSED, now, [(None, {"reason": reason})])
    logger.warning(
        "schedule %s paused: %s",
        schedule.id,
        reason,
        extra={"action": "schedule_paused_by_offpost", "schedule_id": schedule.id},
    )


def _insert(session: Session, model: type[ScheduleEvent]) -> Any:
    if is_postgresql(session):
        return postgresql.insert(model)
    return sqlite.insert(model)

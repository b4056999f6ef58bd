"""Schedules for the dashboard's schedules pages, written on top of ``admin_support.populate``.

:func:`add_schedules` gives acme and globex four schedules in every status, one
of them with a past (a run skipped by the misfire policy, one published, one
failed, one due now) and posts made ahead, relative to a ``now`` the tests
choose. ``admin_support.add_page_health`` should run first, so that the Pages
have names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from offpost.models import (
    Client,
    Credential,
    Misfire,
    Post,
    PostStatus,
    Schedule,
    ScheduleEventKind,
    ScheduleStatus,
)
from offpost.scheduler.materialize import (
    MISFIRE_SKIPPED,
    materialize_schedule,
    record_events,
    recurrence_of,
    restart_schedule,
)
from offpost.settings import Settings
from tests.integration.admin_support import session_for

#: A Monday, 13:00 in Berlin.
SCHEDULE_NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Schedules:
    """Ids of what :func:`add_schedules` wrote."""

    #: acme's, active: ``FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0`` in Europe/Berlin,
    #: no post yet.
    weekly: str
    #: acme's, active: cron ``0 * * * *`` in UTC since three hours before now, with runs.
    hourly: str
    #: globex's, paused: cron ``*/15 * * * *`` in America/New_York.
    paused: str
    #: acme's, deleted.
    deleted: str
    #: The hourly schedule's runs: three hours ago (skipped by the misfire policy, a
    #: history event names it), two hours ago (published), an hour ago (failed), now (due).
    skipped_run: str
    published_run: str
    failed_run: str
    due_run: str
    #: Its posts made ahead, for the occurrences after now.
    ahead: list[str]


def add_schedules(settings: Settings, now: datetime = SCHEDULE_NOW) -> Schedules:
    """Write the schedules of :class:`Schedules`, relative to ``now`` (whole hours best)."""
    with session_for(settings) as s:
        clients = {name: cid for cid, name in s.execute(select(Client.id, Client.name))}
        credentials = {
            user: cid for user, cid in s.execute(select(Credential.fb_user_id, Credential.id))
        }

        def schedule(
            client: str,
            *,
            status: ScheduleStatus = ScheduleStatus.ACTIVE,
            created_at: datetime,
            **rule: str | datetime | Misfire,
        ) -> Schedule:
            acme = client == "acme"
            row = Schedule(
                client_id=clients[client],
                credential_id=credentials["u1" if acme else "u4"],
                target="page-acme" if acme else "page-globex",
                message=f"{client}'s news for {{date}}",
                status=status,
                occurrences_created=0,
                created_at=created_at,
                updated_at=created_at,
                **rule,
            )
            restart_schedule(row, recurrence_of(row), created_at)
            s.add(row)
            s.flush()
            return row

        weekly = schedule(
            "acme",
            rrule="FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0",
            timezone="Europe/Berlin",
            start_at=now - timedelta(days=30),
            created_at=now - timedelta(days=4),
        )
        began = now - timedelta(hours=3)
        hourly = schedule(
            "acme", cron="0 * * * *", timezone="UTC", start_at=began, created_at=began
        )
        # Made when it was created, 24 hours ahead, as the API does.
        materialize_schedule(s, hourly, began)
        posts = list(
            s.scalars(
                select(Post).where(Post.schedule_id == hourly.id).order_by(Post.occurrence_at)
            )
        )
        skipped, published, failed, due, *ahead = posts
        assert [p.occurrence_at for p in (skipped, due)] == [began, now]
        skipped.status = PostStatus.CANCELED
        skipped.last_error = {
            "code": MISFIRE_SKIPPED,
            "subcode": None,
            "message": "missed",
            "fbtrace_id": None,
        }
        record_events(
            s,
            hourly.id,
            ScheduleEventKind.SKIPPED,
            began + timedelta(minutes=10),
            [(began, {"reason": "misfire", "post_id": skipped.id})],
        )
        published.status = PostStatus.PUBLISHED
        published.attempts = 1
        published.published_at = published.occurrence_at + timedelta(seconds=4)
        published.graph_post_id = "g-hourly"
        failed.status = PostStatus.FAILED
        failed.attempts = 1
        failed.last_error = {
            "code": 368,
            "subcode": None,
            "message": "blocked",
            "fbtrace_id": None,
        }
        paused = schedule(
            "globex",
            status=ScheduleStatus.PAUSED,
            cron="*/15 * * * *",
            timezone="America/New_York",
            start_at=now - timedelta(days=1),
            created_at=now - timedelta(days=1),
        )
        deleted = schedule(
            "acme",
            status=ScheduleStatus.DELETED,
            rrule="FREQ=DAILY;BYHOUR=18;BYMINUTE=30",
            timezone="UTC",
            start_at=now - timedelta(days=5),
            created_at=now - timedelta(days=5),
        )
        s.flush()
        return Schedules(
            weekly=weekly.id,
            hourly=hourly.id,
            paused=paused.id,
            deleted=deleted.id,
            skipped_run=skipped.id,
            published_run=published.id,
            failed_run=failed.id,
            due_run=due.id,
            ahead=[p.id for p in ahead],
        )

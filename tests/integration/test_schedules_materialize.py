"""Schedules becoming posts over weeks of (frozen, moving) time, on SQLite and PostgreSQL.

The dispatcher's part is played by a loop that calls ``run_schedules`` and
then "publishes" what is due, as the dispatcher and a worker would.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from offpost.models import (
    Client,
    Credential,
    CredentialStatus,
    Misfire,
    Post,
    PostStatus,
    ScheduleEventKind,
    ScheduleStatus,
    utcnow,
)
from offpost.recurrence import load_zone
from offpost.scheduler.materialize import MISFIRE_SKIPPED, run_schedules
from tests.integration.schedules_support import (
    Owner,
    add_owner,
    add_schedule,
    events_of,
    migrated,
    posts_of,
    schedule_row,
)

BERLIN = load_zone("Europe/Berlin")


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated(database_url) as factory:
        yield factory


@pytest.fixture
def owner(sessions: sessionmaker[Session]) -> Owner:
    return add_owner(sessions)


def publish_due(sessions: sessionmaker[Session], now: datetime) -> int:
    """What dispatcher + worker do to due posts, minus Graph."""
    with sessions.begin() as session:
        result = session.execute(
            update(Post)
            .where(Post.status == PostStatus.SCHEDULED, Post.due_at <= now)
            .values(status=PostStatus.PUBLISHED, published_at=now, attempts=1)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(UTC)


def test_three_weeks_of_mondays_and_wednesdays_across_the_spring_change(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    horizon = timedelta(days=2)
    with freeze_time("2026-03-16T06:00:00Z") as clock:
        schedule_id = add_schedule(
            sessions,
            owner,
            utcnow(),
            rrule="FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0",
            start_at=utcnow(),
        )
        published_at: dict[datetime, datetime] = {}
        while utcnow() < datetime(2026, 4, 6, 12, tzinfo=UTC):
            now = utcnow()
            run_schedules(sessions, now, horizon=horizon, max_per_schedule=3)
            for post in posts_of(sessions, schedule_id):
                # Never materialised beyond the horizon.
                assert post.created_at >= post.publish_at - horizon
            publish_due(sessions, now)
            for post in posts_of(sessions, schedule_id):
                if post.status == PostStatus.PUBLISHED:
                    published_at.setdefault(post.occurrence_at, now)  # type: ignore[arg-type]
            clock.tick(timedelta(minutes=20))

    expected = [
        berlin(f"2026-{day}T09:00")
        for day in ("03-16", "03-18", "03-23", "03-25", "03-30", "04-01", "04-06")
    ]
    posts = posts_of(sessions, schedule_id)
    # Wednesday 8 April is within the 2-day horizon of the last tick: made, not yet due.
    assert [p.occurrence_at for p in posts] == [*expected, berlin("2026-04-08T09:00")]
    assert all(p.status == PostStatus.PUBLISHED for p in posts[:-1])
    assert posts[-1].status == PostStatus.SCHEDULED
    assert all(p.publish_at == p.due_at == p.occurrence_at for p in posts)
    # 09:00 Berlin is 08:00Z before 29 March and 07:00Z after it.
    assert expected[3].hour == 8
    assert expected[4].hour == 7
    assert set(published_at) == set(expected)
    for occurrence, when in published_at.items():
        assert timedelta(0) <= when - occurrence < timedelta(minutes=20)
    assert [p.message for p in posts][:2] == ["hello 2026-03-16", "hello 2026-03-18"]
    row = schedule_row(sessions, schedule_id)
    assert row.occurrences_created == len(posts)
    assert row.next_run_at == berlin("2026-04-13T09:00")
    assert events_of(sessions, schedule_id) == []


def test_a_per_minute_cron_fills_its_horizon_a_bounded_batch_per_tick(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    with freeze_time("2026-05-04T10:00:00Z"):
        now = utcnow()
        schedule_id = add_schedule(sessions, owner, now, cron="* * * * *", start_at=now)
        first = run_schedules(sessions, now, horizon=timedelta(hours=2), max_per_schedule=50)
        assert first.created == 50
        assert len(posts_of(sessions, schedule_id)) == 50
        while run_schedules(sessions, now, horizon=timedelta(hours=2), max_per_schedule=50).created:
            pass
        posts = posts_of(sessions, schedule_id)
        assert len(posts) == 121  # 10:00 to 12:00 inclusive
        assert posts[-1].occurrence_at == now + timedelta(hours=2)
        # Nothing left to do: a tick finds no schedule.
        assert run_schedules(sessions, now, horizon=timedelta(hours=2)).schedules == 0


def test_no_day_holds_more_occurrences_than_the_quota(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    """Every ten minutes (144 a day) under a quota of 10: ten posts in any 24 hours, the
    rest skipped with the quota named; the window slides, and a client's own quota wins."""
    with freeze_time("2026-05-04T10:00:00Z") as clock:
        now = utcnow()
        schedule_id = add_schedule(sessions, owner, now, cron="*/10 * * * *", start_at=now)
        ticks = 0
        while run_schedules(
            sessions, utcnow(), horizon=timedelta(hours=3), occurrences_per_day=10
        ).schedules:
            ticks += 1
            assert ticks < 10
        created = [p.occurrence_at for p in posts_of(sessions, schedule_id)]
        assert created == [now + timedelta(minutes=10 * i) for i in range(10)]
        skipped = [
            e for e in events_of(sessions, schedule_id) if e.kind == ScheduleEventKind.SKIPPED
        ]
        # 10:00 to 13:00 inclusive is 19 occurrences.
        assert len(skipped) == 9
        assert all(
            e.detail == {"reason": "quota", "quota": "occurrences_per_day", "limit": 10}
            for e in skipped
        )
        assert schedule_row(sessions, schedule_id).occurrences_created == 10
        # A day after the first post (published meanwhile), the window has room again.
        publish_due(sessions, now + timedelta(hours=2))
        clock.move_to(now + timedelta(hours=22))
        while run_schedules(
            sessions, utcnow(), horizon=timedelta(hours=2), occurrences_per_day=10
        ).schedules:
            pass
        later = [p.occurrence_at for p in posts_of(sessions, schedule_id)][10:]
        assert later[0] == now + timedelta(days=1)
        assert all(b - a == timedelta(minutes=10) for a, b in itertools.pairwise(later))
        # Every 24 hours holds at most 10 posts of the schedule.
        every = [p.occurrence_at for p in posts_of(sessions, schedule_id)]
        for i, first in enumerate(every):
            assert sum(1 for o in every[i:] if o < first + timedelta(days=1)) <= 10
        # The client's own quota replaces the deployment's.
        with sessions.begin() as session:
            session.execute(
                update(Client).where(Client.id == owner.client_id).values(max_occurrences_per_day=3)
            )
        other = add_schedule(sessions, owner, utcnow(), cron="*/10 * * * *", start_at=utcnow())
        run_schedules(sessions, utcnow(), horizon=timedelta(hours=1), occurrences_per_day=10)
        assert len(posts_of(sessions, other)) == 3


def _downtime_walk(
    sessions: sessionmaker[Session], owner: Owner, misfire: Misfire
) -> tuple[str, datetime]:
    """Hourly posts; offpost runs 10:00-12:00, is down until 20:10, runs again."""
    with freeze_time("2026-06-01T10:00:00Z") as clock:
        schedule_id = add_schedule(
            sessions,
            owner,
            utcnow(),
            cron="0 * * * *",
            timezone="UTC",
            start_at=utcnow(),
            misfire=misfire,
        )
        for _ in range(3):  # 10:00, 11:00, 12:00
            run_schedules(sessions, utcnow(), horizon=timedelta(hours=3))
            publish_due(sessions, utcnow())
            clock.tick(timedelta(hours=1))
        clock.move_to("2026-06-01T20:10:00Z")  # back after a long outage
        restarted = utcnow()
        for _ in range(3):
            run_schedules(sessions, utcnow(), horizon=timedelta(hours=3), max_per_schedule=4)
            publish_due(sessions, utcnow())
            clock.tick(timedelta(seconds=1))
    return schedule_id, restarted


def at(hour: int) -> datetime:
    return datetime(2026, 6, 1, hour, tzinfo=UTC)


def test_skip_drops_every_missed_occurrence_and_records_each_once(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    schedule_id, _ = _downtime_walk(sessions, owner, Misfire.SKIP)
    posts = {p.occurrence_at: p for p in posts_of(sessions, schedule_id)}
    assert [t for t, p in posts.items() if p.status == PostStatus.PUBLISHED] == [
        at(10),
        at(11),
        at(12),
    ]
    # 13:00-15:00 had posts (the horizon) and were canceled; 16:00-20:00 never got one.
    skipped_posts = [t for t, p in posts.items() if p.status == PostStatus.CANCELED]
    assert skipped_posts == [at(13), at(14), at(15)]
    assert all(posts[t].last_error["code"] == MISFIRE_SKIPPED for t in skipped_posts)  # type: ignore[index]
    events = events_of(sessions, schedule_id)
    assert [e.kind for e in events] == [ScheduleEventKind.SKIPPED] * 8
    assert sorted(e.occurrence_at for e in events) == [at(h) for h in range(13, 21)]  # type: ignore[type-var]
    # 20:00 was missed by 10 minutes (beyond the 5-minute grace): nothing publishes late.
    assert all(t >= at(21) for t, p in posts.items() if p.status == PostStatus.SCHEDULED)


def test_catch_up_one_publishes_only_the_latest_missed_occurrence(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    schedule_id, restarted = _downtime_walk(sessions, owner, Misfire.CATCH_UP_ONE)
    posts = {p.occurrence_at: p for p in posts_of(sessions, schedule_id)}
    published = [t for t, p in posts.items() if p.status == PostStatus.PUBLISHED]
    assert published == [at(10), at(11), at(12), at(20)]
    assert posts[at(20)].published_at is not None
    assert posts[at(20)].published_at >= restarted  # type: ignore[operator]
    assert [t for t, p in posts.items() if p.status == PostStatus.CANCELED] == [
        at(13),
        at(14),
        at(15),
    ]
    kinds = Counter(e.kind for e in events_of(sessions, schedule_id))
    assert kinds == {ScheduleEventKind.SKIPPED: 7, ScheduleEventKind.CAUGHT_UP: 1}


def test_catch_up_one_keeps_the_latest_of_already_made_posts(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    # Down for 100 minutes inside the horizon: every missed occurrence has a post.
    with freeze_time("2026-06-01T10:00:00Z") as clock:
        schedule_id = add_schedule(
            sessions,
            owner,
            utcnow(),
            cron="*/30 * * * *",
            timezone="UTC",
            start_at=utcnow(),
            misfire=Misfire.CATCH_UP_ONE,
        )
        run_schedules(sessions, utcnow(), horizon=timedelta(hours=6))
        clock.tick(timedelta(minutes=100))  # 11:40: 10:00-11:30 missed
        result = run_schedules(sessions, utcnow(), horizon=timedelta(hours=6))
        assert (result.skipped, result.caught_up) == (3, 1)
        scheduled = [
            p.occurrence_at
            for p in posts_of(sessions, schedule_id)
            if p.status == PostStatus.SCHEDULED
        ]
        assert scheduled[0] == datetime(2026, 6, 1, 11, 30, tzinfo=UTC)
        assert scheduled[1] == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        # A second sweep changes nothing and records nothing again.
        again = run_schedules(sessions, utcnow(), horizon=timedelta(hours=6))
        assert (again.skipped, again.created) == (0, 0)
        assert len(events_of(sessions, schedule_id)) == 4


def test_a_month_of_downtime_is_worked_off_in_bounded_ticks_without_a_burst(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    with freeze_time("2026-01-01T00:00:00Z") as clock:
        schedule_id = add_schedule(
            sessions,
            owner,
            utcnow(),
            cron="0 */2 * * *",
            timezone="UTC",
            start_at=utcnow(),
            misfire=Misfire.CATCH_UP_ONE,
        )
        clock.move_to("2026-02-01T00:03:00Z")  # 372 occurrences later
        ticks = 0
        while True:
            result = run_schedules(
                sessions, utcnow(), horizon=timedelta(hours=1), max_per_schedule=100
            )
            ticks += 1
            assert result.skipped <= 100
            if result.created:
                break
        assert ticks == 4
        posts = posts_of(sessions, schedule_id)
        # Only the latest missed one (00:00, 3 minutes ago, within grace, is not missed).
        assert [p.occurrence_at for p in posts] == [datetime(2026, 2, 1, 0, 0, tzinfo=UTC)]
        kinds = Counter(e.kind for e in events_of(sessions, schedule_id))
        assert kinds[ScheduleEventKind.SKIPPED] == 372


def test_a_schedule_of_a_deleted_credential_is_paused_not_spun(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    with freeze_time("2026-06-01T10:00:00Z"):
        schedule_id = add_schedule(
            sessions, owner, utcnow(), cron="0 * * * *", timezone="UTC", start_at=utcnow()
        )
        with sessions.begin() as session:
            credential = session.get(Credential, owner.credential_id)
            assert credential is not None
            credential.forget_tokens()
            assert credential.status == CredentialStatus.DELETED
        result = run_schedules(sessions, utcnow())
        assert (result.paused, result.created) == (1, 0)
        assert schedule_row(sessions, schedule_id).status == ScheduleStatus.PAUSED
        assert run_schedules(sessions, utcnow()).schedules == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_dispatchers_materialising_at_once_create_each_occurrence_once(
    database_url: str, sessions: sessionmaker[Session], owner: Owner
) -> None:
    now = datetime(2026, 6, 1, 10, tzinfo=UTC)
    ids = [
        add_schedule(sessions, owner, now, cron=f"{m} * * * *", timezone="UTC", start_at=now)
        for m in range(0, 60, 6)
    ]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            with migrated(database_url) as own_sessions:
                barrier.wait()
                for _ in range(8):
                    run_schedules(
                        own_sessions, now, horizon=timedelta(hours=12), max_per_schedule=5
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    while run_schedules(sessions, now, horizon=timedelta(hours=12), max_per_schedule=5).created:
        pass
    for schedule_id in ids:
        posts = posts_of(sessions, schedule_id)
        occurrences = [p.occurrence_at for p in posts]
        assert len(occurrences) == len(set(occurrences)) == 12 + (schedule_id == ids[0])
        assert schedule_row(sessions, schedule_id).occurrences_created == len(posts)


def test_every_stale_post_is_swept_before_anything_could_be_claimed(
    sessions: sessionmaker[Session], owner: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("offpost.scheduler.materialize.MAX_STALE_POSTS", 3)
    with freeze_time("2026-06-01T10:00:00Z") as clock:
        schedule_id = add_schedule(
            sessions, owner, utcnow(), cron="*/5 * * * *", timezone="UTC", start_at=utcnow()
        )
        run_schedules(sessions, utcnow(), horizon=timedelta(hours=1))
        clock.tick(timedelta(hours=2))
        result = run_schedules(sessions, utcnow(), horizon=timedelta(hours=1))
    assert result.skipped >= 13
    stale = [
        p
        for p in posts_of(sessions, schedule_id)
        if p.status == PostStatus.SCHEDULED
        and p.publish_at < datetime(2026, 6, 1, 11, 55, tzinfo=UTC)
    ]
    assert stale == []


def test_a_caught_up_occurrence_over_the_quota_is_skipped_not_caught_up(
    sessions: sessionmaker[Session], owner: Owner
) -> None:
    with freeze_time("2026-06-01T10:00:00Z") as clock:
        schedule_id = add_schedule(
            sessions,
            owner,
            utcnow(),
            cron="0 * * * *",
            timezone="UTC",
            start_at=utcnow(),
            misfire=Misfire.CATCH_UP_ONE,
        )
        run_schedules(sessions, utcnow(), horizon=timedelta(minutes=30), occurrences_per_day=1)
        publish_due(sessions, utcnow())  # 10:00 is published
        clock.move_to("2026-06-01T12:10:00Z")  # 11:00 and 12:00 were missed
        run_schedules(sessions, utcnow(), horizon=timedelta(minutes=30), occurrences_per_day=1)
        events = events_of(sessions, schedule_id)
        assert not [e for e in events if e.kind == ScheduleEventKind.CAUGHT_UP]
        by_time = {e.occurrence_at: e.detail for e in events if e.kind == ScheduleEventKind.SKIPPED}
        noon = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        assert by_time[noon] == {"reason": "quota", "quota": "occurrences_per_day", "limit": 1}
        assert by_time[noon - timedelta(hours=1)] == {"reason": "missed", "misfire": "catch_up_one"}
        assert [p.occurrence_at for p in posts_of(sessions, schedule_id)] == [
            noon - timedelta(hours=2)
        ]

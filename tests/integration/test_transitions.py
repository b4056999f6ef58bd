"""The guarded state changes on SQLite and PostgreSQL: each claim happens once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from offpost.models import (
    Attempt,
    AttemptOutcome,
    Client,
    Credential,
    Post,
    PostStatus,
    make_engine,
    make_sessionmaker,
)
from offpost.models.base import utcnow
from offpost.models.clock import DatabaseClock
from offpost.models.migrate import upgrade_to_head
from offpost.models.transitions import (
    begin_attempt,
    claim_due,
    claim_for_publishing,
    leave_published,
    next_due_at,
    park_page_posts,
    reap_expired,
    requeue_stale,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    yield from _sessions(database_url)


@pytest.fixture
def postgres_sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    yield from _sessions(postgres_url)


def _sessions(url: str) -> Iterator[sessionmaker[Session]]:
    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_posts(sessions: sessionmaker[Session], dues: list[timedelta]) -> list[str]:
    with sessions.begin() as session:
        client = Client(name="c", key_hash="0" * 64)
        session.add(client)
        session.flush()
        credential = Credential(client_id=client.id, fb_user_id="1")
        session.add(credential)
        session.flush()
        posts = [
            Post(
                client_id=client.id,
                credential_id=credential.id,
                target="p",
                message=f"m{i}",
                publish_at=NOW + d,
                due_at=NOW + d,
            )
            for i, d in enumerate(dues)
        ]
        session.add_all(posts)
    return [p.id for p in posts]


def statuses(sessions: sessionmaker[Session]) -> dict[str, PostStatus]:
    with sessions() as session:
        return {
            post_id: status for post_id, status in session.execute(select(Post.id, Post.status))
        }


def test_claim_due_takes_only_due_posts_oldest_first_in_batches(
    sessions: sessionmaker[Session],
) -> None:
    ids = add_posts(
        sessions,
        [
            timedelta(seconds=-1),
            timedelta(seconds=-10),
            timedelta(seconds=5),
            timedelta(seconds=-5),
        ],
    )
    with sessions.begin() as session:
        first = claim_due(session, NOW, 2)
    assert first == [ids[1], ids[3]]
    with sessions.begin() as session:
        second = claim_due(session, NOW, 10)
    assert second == [ids[0]]
    with sessions.begin() as session:
        assert claim_due(session, NOW, 10) == []
        assert next_due_at(session) == NOW + timedelta(seconds=5)


def test_worker_claim_is_guarded_against_duplicate_deliveries(
    sessions: sessionmaker[Session],
) -> None:
    ids = add_posts(sessions, [timedelta(0), timedelta(0)])
    with sessions.begin() as session:
        claim_due(session, NOW, 10)
    with sessions.begin() as session:
        claimed = claim_for_publishing(session, ids, "w1", NOW, LEASE)
    assert sorted(c.id for c in claimed) == sorted(ids)
    with sessions.begin() as session:
        assert claim_for_publishing(session, ids, "w2", NOW, LEASE) == []
    with sessions.begin() as session:
        published = {"graph_post_id": "1_1", "attempts": 1}
        assert leave_published(session, ids[0], "w2", NOW, **published) is None
        written = leave_published(session, ids[0], "w1", NOW, **published)
        assert written is not None
        assert written["status"] is PostStatus.PUBLISHED
    assert statuses(sessions)[ids[0]] == PostStatus.PUBLISHED


def test_expired_leases_are_reaped_owing_reconciliation(sessions: sessionmaker[Session]) -> None:
    # Leases are on the database's clock, so this test runs on real time.
    lease = timedelta(seconds=1.5)
    [post_id] = add_posts(sessions, [timedelta(0)])
    with sessions.begin() as session:
        claim_due(session, NOW, 10)
        [claimed] = claim_for_publishing(session, [post_id], "w1", utcnow(), lease)
        begin_attempt(session, post_id, "w1", utcnow())
    assert claimed.lease_deadline is not None
    assert 1.0 < claimed.lease_deadline - time.monotonic() <= 1.5
    with sessions.begin() as session:
        assert reap_expired(session, utcnow(), 10) == []
    time.sleep(1.6)
    later = utcnow()
    with sessions.begin() as session:
        assert reap_expired(session, later, 10) == [post_id]
    with sessions() as session:
        post = session.get(Post, post_id)
        assert post is not None
        assert post.status == PostStatus.SCHEDULED
        assert post.reconcile_since == NOW  # the queued time: before the attempt began
        assert post.lease_owner is None
        attempt = session.scalars(select(Attempt)).one()
        assert (attempt.outcome, attempt.error_code) == (AttemptOutcome.RETRY, "lease_expired")
    with sessions.begin() as session:
        # The late worker cannot record anything any more.
        assert (
            leave_published(session, post_id, "w1", later, graph_post_id="1_1", attempts=1) is None
        )


def test_a_reaper_whose_clock_runs_ahead_leaves_a_live_lease_alone(
    postgres_sessions: sessionmaker[Session],
) -> None:
    """The database's clock decides that a lease ran out, not the reaper's machine's.

    PostgreSQL only: on SQLite every process shares one machine, and so one clock.
    """
    sessions = postgres_sessions
    [post_id] = add_posts(sessions, [timedelta(0)])
    with sessions.begin() as session:
        claim_due(session, NOW, 10)
        # The worker's machine runs 10 minutes behind: its lease still ends 60 s from now.
        claim_for_publishing(session, [post_id], "w1", utcnow() - timedelta(minutes=10), LEASE)
    with sessions.begin() as session:
        # A reaper whose machine runs 10 minutes ahead finds nothing to take back.
        assert reap_expired(session, utcnow() + timedelta(minutes=10), 10) == []
    assert statuses(sessions)[post_id] == PostStatus.PUBLISHING


def test_stale_queued_posts_are_resent_once_per_window(sessions: sessionmaker[Session]) -> None:
    ids = add_posts(sessions, [timedelta(0)])
    with sessions.begin() as session:
        claim_due(session, NOW, 10)
    window = timedelta(seconds=30)
    with sessions.begin() as session:
        assert requeue_stale(session, NOW + timedelta(seconds=10), window, 10) == []
    with sessions.begin() as session:
        assert requeue_stale(session, NOW + timedelta(seconds=31), window, 10) == ids
    with sessions.begin() as session:
        assert requeue_stale(session, NOW + timedelta(seconds=32), window, 10) == []


def test_a_dead_page_token_parks_only_that_pages_waiting_posts(
    sessions: sessionmaker[Session],
) -> None:
    ids = add_posts(sessions, [timedelta(0)] * 4)
    with sessions.begin() as session:
        session.get(Post, ids[1]).status = PostStatus.PUBLISHED  # type: ignore[union-attr]
        session.get(Post, ids[2]).status = PostStatus.FAILED  # type: ignore[union-attr]
        session.get(Post, ids[3]).target = "other"  # type: ignore[union-attr]
    with sessions.begin() as session:
        credential_id = session.scalars(select(Credential.id)).one()
        assert park_page_posts(session, credential_id, ["p"], NOW) == 1
    assert statuses(sessions) == {
        ids[0]: PostStatus.NEEDS_REAUTH,
        ids[1]: PostStatus.PUBLISHED,
        ids[2]: PostStatus.FAILED,
        ids[3]: PostStatus.SCHEDULED,  # another Page of the same credential
    }


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_dispatchers_never_claim_the_same_post(sessions: sessionmaker[Session]) -> None:
    ids = add_posts(sessions, [timedelta(seconds=-i) for i in range(400)])
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def dispatcher() -> None:
        barrier.wait()
        mine: list[str] = []
        while True:
            with sessions.begin() as session:
                claimed = claim_due(session, NOW, 25)
            if not claimed:
                break
            mine += claimed
        results.append(mine)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [i for mine in results for i in mine]
    assert len(every) == len(set(every)) == len(ids)
    assert sum(1 for mine in results if mine) >= 2  # the work was shared, not serialised


def test_the_database_clock_corrects_a_machine_clock_that_is_off(
    postgres_sessions: sessionmaker[Session],
) -> None:
    """A process whose machine runs 90 s ahead still stamps the database's time."""
    ahead = DatabaseClock(postgres_sessions, machine=lambda: utcnow() + timedelta(seconds=90))
    stamped = ahead()
    with postgres_sessions() as session:
        database = session.scalar(select(func.statement_timestamp()))
    assert abs((stamped - database).total_seconds()) < 1.0
    assert abs(ahead.offset.total_seconds() + 90) < 1.0

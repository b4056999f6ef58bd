"""``POST /v1/posts`` on the event loop (offpost.posts.single): the same guarantees as the
session-based route, with its own statements — real PostgreSQL and Redis.

A revoked key stops at once; the client's requests per minute and the address's
failed authentications are counted as everywhere else; an ``Idempotency-Key``
creates once even when two requests race; a refused request keeps no key; a
connection the server closed is not handed out; another event loop (a second
test client) gets the session-based route.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from offpost.api import posts as posts_api
from offpost.api.fastdb import AsyncDatabase, conninfo_of
from offpost.api.limits import (
    KeyCheck,
    KeyVerdict,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from offpost.models import Client, IdempotencyKey, Post
from offpost.settings import Settings
from tests.integration.api_support import bearer, make_settings, running_api
from tests.integration.posts_support import (
    Account,
    assert_problem,
    count_posts,
    db_session,
    make_account,
)
from tests.integration.sandbox_support import RunningSandbox, SandboxClient

FAILURES = 3


class Clock:
    """A limiter clock of our own, 10 s into a minute far from now (no shared windows)."""

    def __init__(self) -> None:
        self.now = float(60 * (10**9 + secrets.randbelow(10**6))) + 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(postgres_url: str, sandbox_server: RunningSandbox, redis_url: str) -> Settings:
    return make_settings(postgres_url, sandbox_server, redis_url, auth_failures_per_minute=FAILURES)


@pytest.fixture
def alice(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "alice")


@pytest.fixture
def bob(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "bob")


@pytest.fixture
def on_loop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The clients whose posts were created on the event loop."""
    seen: list[str] = []
    original = posts_api._create_on_loop

    async def spy(database: AsyncDatabase, request: Any, client: Client, *args: Any) -> Any:
        seen.append(client.id)
        return await original(database, request, client, *args)

    monkeypatch.setattr(posts_api, "_create_on_loop", spy)
    return seen


@pytest.fixture
def clock(api: TestClient, settings: Settings) -> Iterator[Clock]:
    """The app's limiter on a clock of ours, with an asyncio client as the app's has."""
    clock = Clock()
    limiter = RedisRateLimiter(
        redis.Redis.from_url(settings.broker_url),
        clock=clock,
        async_client=redis.asyncio.Redis.from_url(settings.broker_url),
    )
    api.app.state.limiter = limiter  # type: ignore[attr-defined]
    yield clock
    limiter.close()
    api.portal.call(limiter.aclose)  # type: ignore[union-attr]


def set_client(settings: Settings, account: Account, **values: Any) -> None:
    with db_session(settings) as session:
        session.execute(update(Client).where(Client.id == account.client_id).values(**values))
        session.commit()


def test_posts_are_created_on_the_event_loop(
    api: TestClient, alice: Account, on_loop: list[str], settings: Settings
) -> None:
    response = api.post("/v1/posts", json=alice.body(), headers=alice.headers)
    assert response.status_code == 201, response.text
    assert on_loop == [alice.client_id]
    with db_session(settings) as session:
        stored = session.scalars(select(Post).where(Post.id == response.json()["id"])).one()
    assert stored.client_id == alice.client_id
    assert stored.message == "hello"


def test_another_event_loop_gets_the_session_route(
    api: TestClient, alice: Account, on_loop: list[str]
) -> None:
    """A second test client runs the app on an event loop of its own: no loop connections."""
    other = TestClient(api.app, raise_server_exceptions=False)
    response = other.post("/v1/posts", json=alice.body(), headers=alice.headers)
    assert response.status_code == 201, response.text
    assert on_loop == []


def test_a_revoked_key_stops_at_once(api: TestClient, alice: Account, settings: Settings) -> None:
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201
    set_client(settings, alice, revoked_at=datetime.now(UTC))
    refused = api.post("/v1/posts", json=alice.body(), headers=alice.headers)
    assert_problem(refused, 401, "unauthorized")
    # A bad body does not get past the key either.
    assert_problem(api.post("/v1/posts", json={}, headers=alice.headers), 401, "unauthorized")


def test_a_replaced_key_stops_at_once(api: TestClient, alice: Account, settings: Settings) -> None:
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201
    set_client(settings, alice, key_hash="0" * 64)
    assert_problem(
        api.post("/v1/posts", json=alice.body(), headers=alice.headers), 401, "unauthorized"
    )


def test_requests_per_minute_counts_each_creation(
    api: TestClient, alice: Account, settings: Settings, clock: Clock
) -> None:
    set_client(settings, alice, max_requests_per_minute=2)
    codes = [
        api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code
        for _ in range(2)
    ]
    assert codes == [201, 201]
    refused = assert_problem(
        api.post("/v1/posts", json=alice.body(), headers=alice.headers), 429, "rate_limited"
    )
    assert refused["quota"] == {"name": "requests_per_minute", "limit": 2, "used": 2}
    clock.now += 60
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201


def test_failed_keys_slow_the_address(
    api: TestClient, alice: Account, bob: Account, clock: Clock
) -> None:
    """Alice's key works from this address before the guesses; a key never seen here waits."""
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201
    for n in range(FAILURES):
        guess = bearer(f"opk_guess{n}")
        assert_problem(api.post("/v1/posts", json=alice.body(), headers=guess), 401, "unauthorized")
    slowed = api.post("/v1/posts", json=alice.body(), headers=bearer("opk_one-more"))
    assert_problem(slowed, 429, "rate_limited")
    assert slowed.headers["Retry-After"] == "50"
    assert_problem(api.post("/v1/posts", json=bob.body(), headers=bob.headers), 429, "rate_limited")
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201
    clock.now += 60
    assert api.post("/v1/posts", json=bob.body(), headers=bob.headers).status_code == 201


def test_a_refused_request_keeps_no_key(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    set_client(settings, alice, max_pending_posts=1)
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201
    keyed = {**alice.headers, "Idempotency-Key": "after-the-quota"}
    refused = api.post("/v1/posts", json=alice.body(message="two"), headers=keyed)
    assert_problem(refused, 409, "quota_exceeded")
    with db_session(settings) as session:
        assert session.scalars(select(IdempotencyKey.key)).all() == []
    set_client(settings, alice, max_pending_posts=5)
    again = api.post("/v1/posts", json=alice.body(message="two"), headers=keyed)
    assert again.status_code == 201, again.text
    replay = api.post("/v1/posts", json=alice.body(message="two"), headers=keyed)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == again.json()
    assert count_posts(settings) == 2


def test_an_expired_key_is_used_afresh(api: TestClient, alice: Account, settings: Settings) -> None:
    keyed = {**alice.headers, "Idempotency-Key": "old"}
    first = api.post("/v1/posts", json=alice.body(message="first"), headers=keyed)
    assert first.status_code == 201
    with db_session(settings) as session:
        session.execute(
            update(IdempotencyKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    second = api.post("/v1/posts", json=alice.body(message="second"), headers=keyed)
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"]
    assert count_posts(settings) == 2


def test_racing_duplicates_create_once(api: TestClient, alice: Account, settings: Settings) -> None:
    """Two requests with one key while the client's row is locked: both wait, one claims the
    key, the other collides when it commits and answers the same post."""
    keyed = {**alice.headers, "Idempotency-Key": "race"}
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    with running_api(settings) as url, psycopg.connect(conninfo_of(settings.database_url)) as db:
        db.execute("SELECT id FROM clients WHERE id = %s FOR UPDATE", (alice.client_id,))

        def one() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                response = http.post("/v1/posts", json=alice.body(), headers=keyed)
            with lock:
                answers.append(response)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        threads[0].join(1.0)
        assert not answers, "both wait for the client's row"
        db.rollback()
        for thread in threads:
            thread.join(30)
    assert sorted(a.status_code for a in answers) == [201, 201]
    assert answers[0].json() == answers[1].json()
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    assert count_posts(settings) == 1


def test_a_connection_the_server_closed_is_not_handed_out(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201
    with psycopg.connect(conninfo_of(settings.database_url), autocommit=True) as db:
        db.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    response = api.post("/v1/posts", json=alice.body(), headers=alice.headers)
    assert response.status_code == 201, response.text


# --- the limiter's one round trip ---------------------------------------------------------------


def scenario() -> list[KeyCheck]:
    """Alice proven here, three guesses, a fourth, Alice again, a new key, Alice revoked."""
    alice, new = "authok:203.0.113.9:aaaa", "authok:203.0.113.9:bbbb"
    fail = "authfail:203.0.113.9"

    def check(proven: str | None, *, good: bool) -> KeyCheck:
        rate = "client:cli_alice" if good else None
        return KeyCheck(fail, FAILURES, proven, good, rate, 100)

    return [
        check(alice, good=True),
        *[check(f"authok:203.0.113.9:guess{n}", good=False) for n in range(FAILURES)],
        check("authok:203.0.113.9:guess-more", good=False),
        check(None, good=False),
        check(alice, good=True),
        check(new, good=True),
        check(alice, good=False),
    ]


EXPECTED = [
    KeyVerdict.ACCEPTED,
    *[KeyVerdict.BAD_KEY] * FAILURES,
    KeyVerdict.ADDRESS_SLOWED,
    KeyVerdict.ADDRESS_SLOWED,
    KeyVerdict.ACCEPTED,
    KeyVerdict.ADDRESS_SLOWED,
    KeyVerdict.ADDRESS_SLOWED,
]


def judged(limiter: RateLimiter) -> list[KeyVerdict]:
    return [limiter.check_key(check)[0] for check in scenario()]


def test_every_limiter_judges_keys_alike(redis_url: str) -> None:
    memory = MemoryRateLimiter(clock=Clock())
    shared = RedisRateLimiter(redis.Redis.from_url(redis_url), clock=Clock())
    assert judged(memory) == judged(shared) == EXPECTED


def test_the_event_loop_judges_keys_alike(redis_url: str) -> None:
    async def run() -> list[KeyVerdict]:
        limiter = RedisRateLimiter(
            redis.Redis.from_url(redis_url),
            clock=Clock(),
            async_client=redis.asyncio.Redis.from_url(redis_url),
        )
        try:
            return [(await limiter.check_key_async(check))[0] for check in scenario()]
        finally:
            await limiter.aclose()
            limiter.close()

    assert asyncio.run(run()) == EXPECTED


def test_a_client_over_its_minute_is_refused_by_every_limiter(redis_url: str) -> None:
    check = KeyCheck("authfail:198.51.100.1", FAILURES, "authok:198.51.100.1:cc", True, "c", 2)
    for limiter in (
        MemoryRateLimiter(clock=Clock()),
        RedisRateLimiter(redis.Redis.from_url(redis_url), clock=Clock()),
    ):
        verdicts = [limiter.check_key(check) for _ in range(3)]
        assert [v for v, _ in verdicts] == [KeyVerdict.ACCEPTED] * 2 + [
            KeyVerdict.CLIENT_OVER_LIMIT
        ]
        assert verdicts[-1][1] == 50.0

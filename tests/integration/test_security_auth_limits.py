"""Repeated bad keys are slowed: 429 with ``Retry-After``, per source address, then recovery.

The rule (``auth_failures_per_minute``, 20 by default): an address that has sent
that many bad keys within a clock minute gets ``429 rate_limited`` for every
request until the minute ends — a right key included, so a guesser learns
nothing while slowed — and other addresses are not affected. The counts live in
Redis when the broker is Redis (shared by every API process) and in memory in
the embedded mode. The limiter's clock is replaced, so no test waits a minute.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update

from offpost.api.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from offpost.graph.sandbox import RunningSandbox
from offpost.models import Client, make_engine, make_sessionmaker
from offpost.models.base import utcnow
from offpost.settings import Settings
from tests.integration.api_support import add_client, api_client, bearer, make_settings
from tests.integration.posts_support import assert_problem

LIMIT = 3


class Clock:
    """A clock of our own, far from now, so no other test shares its windows in Redis."""

    def __init__(self) -> None:
        self.now = float(60 * (10**9 + secrets.randbelow(10**6))) + 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def limiter_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str, limiter_kind: str
) -> Settings:
    broker = "memory://" if limiter_kind == "memory" else redis_url
    return make_settings(
        postgres_url, sandbox_server, redis_url, auth_failures_per_minute=LIMIT, broker_url=broker
    )


def make_limiter(settings: Settings, clock: Clock) -> RateLimiter:
    if settings.broker_url.startswith("redis://"):
        return RedisRateLimiter(redis.Redis.from_url(settings.broker_url), clock=clock)
    return MemoryRateLimiter(clock=clock)


@pytest.fixture
def api(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    with api_client(settings) as client:
        kind = type(client.app.state.limiter)  # type: ignore[attr-defined]
        # The app chose the limiter its broker calls for; we only give it our clock.
        assert kind is (RedisRateLimiter if "redis" in settings.broker_url else MemoryRateLimiter)
        client.app.state.limiter = make_limiter(settings, clock)  # type: ignore[attr-defined]
        yield client


def from_address(api: TestClient, host: str) -> TestClient:
    """The same running app, reached from another address (no second lifespan)."""
    return TestClient(api.app, client=(host, 40000), raise_server_exceptions=False)


def test_bad_keys_from_one_address_get_429_with_retry_after(
    api: TestClient, settings: Settings, clock: Clock
) -> None:
    good = bearer(add_client(settings, "alice"))
    attacker = from_address(api, "203.0.113.7")
    guesses = [
        attacker.get("/v1/posts", headers=bearer(f"opk_guess{n}")).status_code for n in range(LIMIT)
    ]
    assert guesses == [401] * LIMIT
    slowed = attacker.get("/v1/posts", headers=bearer("opk_one-more-guess"))
    assert_problem(slowed, 429, "rate_limited")
    # The window (a clock minute) started 10 s ago: 50 s to wait.
    assert slowed.headers["Retry-After"] == "50"
    # While slowed, even a right key is not judged: no guess can be confirmed.
    assert_problem(attacker.get("/v1/posts", headers=good), 429, "rate_limited")
    assert_problem(attacker.get("/v1/posts"), 429, "rate_limited")
    # Everyone else is unaffected, and has a budget of its own.
    elsewhere = from_address(api, "198.51.100.20")
    assert elsewhere.get("/v1/posts", headers=good).status_code == 200
    assert_problem(elsewhere.get("/v1/posts", headers=bearer("opk_typo")), 401, "unauthorized")


def test_the_right_key_is_refused_as_soon_as_the_budget_is_spent(
    api: TestClient, settings: Settings, clock: Clock
) -> None:
    good = bearer(add_client(settings, "alice"))
    attacker = from_address(api, "203.0.113.11")
    for n in range(LIMIT):
        assert attacker.get("/v1/posts", headers=bearer(f"opk_guess{n}")).status_code == 401
    # No further guess is judged, a right one included.
    assert_problem(attacker.get("/v1/posts", headers=good), 429, "rate_limited")


def test_a_guesser_does_not_lock_out_the_people_sharing_its_address(
    api: TestClient, settings: Settings, clock: Clock
) -> None:
    """An office behind one address: Alice works, a guesser spends the address's budget.
    Alice's key, proven from there, keeps working; a key never seen from there (a
    guess that happens to be right) is not judged until the window ends."""
    alice = bearer(add_client(settings, "alice"))
    bob = bearer(add_client(settings, "bob"))
    office = from_address(api, "203.0.113.40")
    assert office.get("/v1/posts", headers=alice).status_code == 200
    for n in range(LIMIT):
        assert office.get("/v1/posts", headers=bearer(f"opk_guess{n}")).status_code == 401
    assert_problem(office.get("/v1/posts", headers=bearer("opk_more")), 429, "rate_limited")
    codes = [office.get("/v1/posts", headers=alice).status_code for _ in range(5)]
    assert codes == [200] * 5
    assert_problem(office.get("/v1/posts", headers=bob), 429, "rate_limited")
    # Proven from that address only: elsewhere Alice's key is just a key.
    assert from_address(api, "198.51.100.40").get("/v1/posts", headers=alice).status_code == 200
    # Revoked meanwhile: refused like any other key while the address is slowed.
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine).begin() as session:
        session.execute(update(Client).where(Client.name == "alice").values(revoked_at=utcnow()))
    engine.dispose()
    assert_problem(office.get("/v1/posts", headers=alice), 429, "rate_limited")


def test_the_address_recovers_when_the_window_ends(
    api: TestClient, settings: Settings, clock: Clock
) -> None:
    good = bearer(add_client(settings, "alice"))
    attacker = from_address(api, "203.0.113.8")
    for _ in range(LIMIT + 2):
        attacker.get("/v1/posts", headers=bearer("opk_wrong"))
    assert attacker.get("/v1/posts", headers=good).status_code == 429
    clock.now += 49
    assert attacker.get("/v1/posts", headers=good).headers["Retry-After"] == "1"
    clock.now += 1  # the next minute
    assert attacker.get("/v1/posts", headers=good).status_code == 200
    assert_problem(attacker.get("/v1/posts", headers=bearer("opk_wrong")), 401, "unauthorized")


def test_a_good_key_alone_never_counts_as_a_failure(
    api: TestClient, settings: Settings, clock: Clock
) -> None:
    good = bearer(add_client(settings, "alice"))
    client = from_address(api, "203.0.113.9")
    codes = [client.get("/v1/posts", headers=good).status_code for _ in range(LIMIT * 3)]
    assert codes == [200] * (LIMIT * 3)


def test_failures_count_across_api_processes_through_redis(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str, clock: Clock
) -> None:
    settings = make_settings(postgres_url, sandbox_server, redis_url, auth_failures_per_minute=4)
    codes = []
    # Two app instances, as two API processes behind a load balancer.
    with api_client(settings) as first, api_client(settings, migrate=False) as second:
        for api in (first, second):
            api.app.state.limiter = make_limiter(settings, clock)  # type: ignore[attr-defined]
        for api in (first, second, first, second, first):
            peer = from_address(api, "203.0.113.10")
            codes.append(peer.get("/v1/posts", headers=bearer("opk_wrong")).status_code)
    assert codes == [401, 401, 401, 401, 429]

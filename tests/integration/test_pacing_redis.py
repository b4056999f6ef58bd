"""RedisPacer on the real Redis: the scenarios of tests/unit/test_pacing.py, unchanged.

Every ``test_scenario_*`` of the unit module runs here with the ``pacers``
fixture opening :class:`RedisPacer` instead: two pacers opened in one test
share one state (a fresh key prefix per test), as workers on several machines
do. Then what only Redis has: a Redis that is down, and one random history
replayed on both pacers, which must answer alike to the millisecond.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Iterator

import pytest
import redis

from offpost.workers.pacing import (
    MemoryPacer,
    PaceReader,
    PacingConfig,
    PacingUnavailableError,
    RedisPacer,
)
from offpost.workers.ratelimit import UNREACHABLE_WAIT_S
from tests.conftest import free_port
from tests.unit import test_pacing as scenarios
from tests.unit.test_pacing import CONFIG, PAGE, Clock, Pacers, Recorder

# The scenarios, collected here too (they take the `pacers` fixture defined below).
for _name in dir(scenarios):
    if _name.startswith("test_scenario_"):
        globals()[_name] = getattr(scenarios, _name)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"offpost:pace:test-{secrets.token_hex(6)}:"
    yield prefix
    names = list(client.scan_iter(f"{prefix}*", count=1000))
    if names:
        client.delete(*names)


@pytest.fixture
def pacers(client: redis.Redis, prefix: str) -> Pacers:
    def open_pacer(clock: Clock, config: PacingConfig, observer: Recorder | None) -> RedisPacer:
        return RedisPacer(client, config, clock, observer, prefix=prefix)

    return Pacers(open_pacer, True)


def test_keys_expire_after_their_window(client: redis.Redis, pacers: Pacers, prefix: str) -> None:
    pacer = pacers(Clock())
    pacer.admit([[PAGE], ["app:9"]])
    page_ttl = client.pttl(f"{prefix}{PAGE}")
    app_ttl = client.pttl(f"{prefix}app:9")
    # A window and a bucket, and a second: 600 + 10 + 1 s; 60 + 1 + 1 s.
    assert 600_000 < page_ttl <= 611_000
    assert 60_000 < app_ttl <= 62_000
    assert client.pttl(f"{prefix}index") > 2 * 600_000


def test_a_key_whose_window_changed_starts_afresh(pacers: Pacers) -> None:
    clock = Clock()
    assert pacers(clock).admit([[PAGE]] * 10) == [0.0] * 10
    shorter = pacers(clock, scenarios.config(page_window_s=300))
    # Its own 10 calls, from nothing: the 11th waits 61 buckets of 300/60 = 5 s.
    assert shorter.admit([[PAGE]] * 11) == [0.0] * 10 + [305.0]


def test_redis_down_admits_nothing_and_drops_readings(caplog: pytest.LogCaptureFixture) -> None:
    down = redis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    pacer = RedisPacer(down, CONFIG, Clock())
    with caplog.at_level(logging.WARNING, logger="offpost.workers.pacing"):
        assert pacer.admit([[PAGE], ["user:1"], ["app:1", PAGE]]) == [
            UNREACHABLE_WAIT_S,
            0.0,  # nothing paced in it: nothing to ask Redis
            UNREACHABLE_WAIT_S,
        ]
        assert pacer.admit([[PAGE]]) == [UNREACHABLE_WAIT_S]
        pacer.observe([(PAGE, 50)])  # dropped, never raised
    said = [r.message for r in caplog.records if "Redis unreachable" in r.message]
    assert len(said) == 1, said  # once per outage
    with pytest.raises(PacingUnavailableError, match="Redis unreachable"):
        pacer.snapshot()


def test_status_reads_the_shared_state(pacers: Pacers, prefix: str, redis_url: str) -> None:
    clock = Clock()
    pacers(clock).admit([[PAGE]] * 11)
    reader = PaceReader(redis_url, CONFIG)
    reader._redis = RedisPacer(redis.Redis.from_url(redis_url), CONFIG, clock, prefix=prefix)
    states, why = reader.read()
    reader.close()
    assert why == ""
    assert states is not None
    assert [(s.key, s.calls, s.waits) for s in states] == [(PAGE, 10, 1)]


def test_both_pacers_answer_alike_on_one_random_history(pacers: Pacers) -> None:
    """The Lua script is the Python, line for line: same waits, same states, always."""
    rng = random.Random(20240611)
    config = scenarios.config(probe_calls=8)
    memory_clock, redis_clock = Clock(START_OFFBEAT), Clock(START_OFFBEAT)
    memory = MemoryPacer(config, memory_clock)
    shared = pacers(redis_clock, config)
    keys = ["app:1", "app:2", "page:1", "page:2", "page:3", "user:1"]
    for step in range(600):
        advance = rng.choice([0.0, 0.0, 0.25, 1.0, 3.5, 9.0, 40.0, 130.0])
        memory_clock.advance(advance)
        redis_clock.advance(advance)
        if rng.random() < 0.6:
            calls = [rng.sample(keys, rng.randint(1, 3)) for _ in range(rng.randint(1, 12))]
            assert memory.admit(calls) == shared.admit(calls), step
        else:
            readings = [
                (rng.choice(keys), rng.choice([0, 0, 1, 3, 9, 20, 50, 85, 89, 90, 95, 100, 130]))
                for _ in range(rng.randint(1, 4))
            ]
            memory.observe(readings)
            shared.observe(readings)
        if step % 25 == 0:
            assert memory.snapshot() == shared.snapshot(), step


#: Not on a bucket boundary, so the buckets' edges are crossed at odd moments.
START_OFFBEAT = 1_700_000_003.37

"""Exactly-once at scale, through process kills, lost replies and both servers restarting.

A thousand posts fall due within seconds across ten Pages. Two dispatchers and
three workers run; at random instants one of them is killed with SIGKILL and
restarted. A tenth of the publish replies are lost after Graph created the post;
publishes go in Graph batch requests (as shipped), and a tenth of those requests
lose their whole reply after Graph ran every call. In the middle, Redis restarts
(its queued messages are lost with it: it runs without persistence), and later
PostgreSQL restarts (fast shutdown: every open session is cut). Both run as
servers of this test's own, so that their restarts touch nothing else on the
machine.

Afterwards: every post is ``published``, exactly once, on its Page; no process
exited by itself (the ones not killed reconnected on their own, and said so in
their logs); and the API, never restarted, answers ``/readyz`` with 200 again.
"""

from __future__ import annotations

import logging
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import PostStatus
from tests.conftest import free_port, service_missing
from tests.integration.pipeline_support import (
    Pipeline,
    assert_each_published_once,
    lose_publish_replies,
    new_client,
    posts_across_pages,
    running_pipeline,
    wait_for,
)
from tests.integration.sandbox_support import TIMEOUT, SandboxClient
from tests.integration.services_support import (
    PrivatePostgres,
    PrivateRedis,
    ServiceError,
    private_postgres,
    private_redis,
)

logger = logging.getLogger(__name__)

PAGES = 10
POSTS_PER_PAGE = 100
DUE_WINDOW_S = 20.0
LOST_REPLY_RATE = 0.1
#: Seconds into the chaos at which each server goes down, and for how long.
REDIS_DOWN_AT_S = 10.0
POSTGRES_DOWN_AT_S = 20.0
OUTAGE_S = 2.0
CHAOS_S = 30.0
#: No kill this long before an outage, and none while the roles get ready for it.
QUIET_S = 2.0
#: A process still starting when a server goes away may exit at its schema check,
#: as a supervisor would see and restart. Here every process meets the outage
#: running: before each outage the test waits (up to this long, the chaos clock
#: standing still meanwhile) until every role has said it is ready.
READY_TIMEOUT_S = 90.0

WORKERS = ("worker-1", "worker-2", "worker-3")
DISPATCHERS = ("dispatcher-1", "dispatcher-2")


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    try:
        with private_postgres() as server:
            yield server
    except ServiceError as exc:
        service_missing("a private PostgreSQL cluster", exc)


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    try:
        with private_redis() as server:
            yield server
    except ServiceError as exc:
        service_missing("a private Redis server", exc)


def readyz(api: httpx.Client) -> int:
    try:
        return api.get("/readyz").status_code
    except httpx.HTTPError:
        return 0


def log_tail(pipeline: Pipeline, name: str, lines: int = 40) -> str:
    text = (pipeline.logs / f"{name}.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def ready_line(name: str) -> re.Pattern[str]:
    """What role ``name`` logs once it runs: past its schema check and connected."""
    if name in DISPATCHERS:
        return re.compile(r"\bdispatcher started\b")
    # Celery's own line, once the worker consumes: "worker-1@host ready."
    return re.compile(rf"\b{re.escape(name)}@\S+ ready\.")


class Chaos:
    """The test's supervisor: kills and restarts the roles, takes the servers down."""

    def __init__(self, pipeline: Pipeline, api: httpx.Client, rng: random.Random) -> None:
        self.pipeline = pipeline
        self.api = api
        self.rng = rng
        self.roles: dict[str, Callable[[str], subprocess.Popen[bytes]]] = {
            **{name: pipeline.start_dispatcher for name in DISPATCHERS},
            **{name: pipeline.start_worker for name in WORKERS},
        }
        self.kills: Counter[str] = Counter()
        #: Where each role's log stood when its current process started.
        self.log_starts: dict[str, int] = {}
        #: The processes that lived through each outage: (outage, role) → process.
        self.witnesses: dict[str, dict[str, subprocess.Popen[bytes]]] = {}
        self.not_ready_seen: set[str] = set()

    def start(self, name: str) -> None:
        # The log is appended to across restarts: only what follows counts.
        log = self.pipeline.logs / f"{name}.log"
        self.log_starts[name] = log.stat().st_size if log.exists() else 0
        self.roles[name](name)

    def start_all(self) -> None:
        for name in self.roles:
            self.start(name)

    def kill_one(self) -> None:
        # Each role once first (in random order), then any: every role dies at least once.
        spared = sorted(set(self.roles) - set(self.kills))
        victim = self.rng.choice(spared or sorted(self.roles))
        self.pipeline.kill(victim, signal.SIGKILL)
        self.kills[victim] += 1
        time.sleep(self.rng.random() * 0.5)
        self.start(victim)

    def is_ready(self, name: str) -> bool:
        with (self.pipeline.logs / f"{name}.log").open("rb") as log:
            log.seek(self.log_starts[name])
            since_start = log.read().decode(errors="replace")
        return ready_line(name).search(since_start) is not None

    def wait_ready(self) -> float:
        """Wait until every role's current process is ready; returns the seconds waited."""
        began = time.monotonic()

        def all_ready() -> bool:
            self.check_alive()
            return all(self.is_ready(name) for name in self.roles)

        wait_for(all_ready, timeout_s=READY_TIMEOUT_S, what="every role to be ready")
        waited = time.monotonic() - began
        logger.info("chaos: every role ready after %.1f s", waited)
        return waited

    def outage(self, what: str, stop: Callable[[], None], start: Callable[[], None]) -> None:
        """``what`` goes down for OUTAGE_S, then comes back on the same port."""
        self.witnesses[what] = {name: self.pipeline.procs[name] for name in self.roles}
        logger.info("chaos: %s goes down", what)
        stop()
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until:
            if readyz(self.api) == 503:
                self.not_ready_seen.add(what)
            time.sleep(0.2)
        start()
        logger.info("chaos: %s is back", what)

    def check_alive(self) -> None:
        """No role may have exited by itself (only the test kills them)."""
        for name in self.roles:
            code = self.pipeline.procs[name].poll()
            assert code is None, (
                f"{name} exited by itself with {code}:\n{log_tail(self.pipeline, name)}"
            )


@pytest.mark.timeout(300)
def test_exactly_once_through_kills_lost_replies_and_server_restarts(
    postgres: PrivatePostgres,
    redis_server: PrivateRedis,
    sandbox_server: RunningSandbox,
    tmp_path: Path,
) -> None:
    rng = random.Random(20261205)
    api_port = free_port()
    with (
        running_pipeline(
            postgres.url, redis_server.url, sandbox_server, tmp_path / "logs"
        ) as pipeline,
        httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http,
        httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api,
    ):
        graph = SandboxClient(sandbox_server, http)
        client_id, key = new_client(pipeline, "chaos-scale")
        api_proc = pipeline.start_api(api_port)
        post_ids = posts_across_pages(
            pipeline,
            graph,
            client_id,
            key,
            pages=PAGES,
            per_page=POSTS_PER_PAGE,
            label="chaos at scale",
            window_s=DUE_WINDOW_S,
            rng=rng,
        )
        every = [i for ids in post_ids.values() for i in ids]
        wait_for(lambda: readyz(api) == 200, timeout_s=30, what="the API to be ready")

        lose_publish_replies(graph, LOST_REPLY_RATE, times=100_000)
        chaos = Chaos(pipeline, api, rng)
        chaos.start_all()
        outages: list[tuple[float, str, Callable[[], None], Callable[[], None]]] = [
            (REDIS_DOWN_AT_S, "redis", redis_server.stop, redis_server.start),
            (POSTGRES_DOWN_AT_S, "postgres", postgres.stop, postgres.start),
        ]
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < CHAOS_S:
            if outages and elapsed >= outages[0][0] - QUIET_S:
                at, what, stop, start = outages.pop(0)
                time.sleep(max(0.0, began + at - time.monotonic()))
                # The chaos clock stands still while the roles get ready: a slow
                # start delays the outage, and the schedule after it, alike.
                began += chaos.wait_ready()
                chaos.outage(what, stop, start)
            else:
                time.sleep(0.5 + rng.random() * 1.5)
                if not (outages and time.monotonic() - began >= outages[0][0] - QUIET_S):
                    chaos.kill_one()
            chaos.check_alive()
        graph.control("DELETE", "/faults")
        logger.info("chaos over after %d kills; waiting for the rest", chaos.kills.total())

        def all_done() -> bool:
            chaos.check_alive()
            return all(p.status == PostStatus.PUBLISHED for p in pipeline.posts(every))

        wait_for(all_done, timeout_s=150, interval_s=0.5, what="every post published")

        # Exactly once: each post on its Page once, as the post it belongs to.
        assert_each_published_once(pipeline, graph, post_ids)

        # The API saw each outage, and is ready again by itself: same process.
        assert chaos.not_ready_seen == {"redis", "postgres"}
        wait_for(lambda: readyz(api) == 200, timeout_s=30, what="/readyz to be 200 again")
        assert api_proc.poll() is None
        assert pipeline.procs["api"] is api_proc

        # Every role was killed at least once, and none exited by itself.
        assert set(chaos.kills) == set(chaos.roles), chaos.kills
        assert chaos.kills.total() >= 6, chaos.kills
        chaos.check_alive()
        # The processes that met an outage running reconnected by themselves:
        # still alive unless the test killed them later, and they said so.
        logs = pipeline.log_text()
        for what, witnesses in chaos.witnesses.items():
            for name, proc in witnesses.items():
                killed_later = pipeline.procs[name] is not proc
                assert killed_later or proc.poll() is None, f"{name} died after {what}"
        # The dispatchers' lines (offpost.connections); Celery's own for the workers.
        assert "lost the connection to the database" in logs
        assert "connection to the database restored" in logs
        assert "lost the connection to Redis" in logs
        assert "connection to Redis restored" in logs
        assert "Connection to broker lost" in logs
        assert "Unrecoverable error" not in logs

        lost = sum(1 for c in graph.control("GET", "/calls")["data"] if c.get("dropped"))
        logger.info(
            "%d posts, %d kills, %d replies lost, Redis and PostgreSQL restarted: "
            "all published exactly once",
            len(every),
            chaos.kills.total(),
            lost,
        )
        assert lost >= 10

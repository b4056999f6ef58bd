"""Exactly once while the machines' clocks disagree by three minutes.

Leases and every time that another process compares come from PostgreSQL's
clock, never from the clock of the machine that writes them. Here that is
proved with real processes whose clocks are wrong: each ``offpost worker`` and
``offpost dispatcher`` runs under Debian's ``faketime`` (libfaketime preloaded
into the process: ``time.time()``, ``datetime.now()`` and the log stamps move;
the monotonic clock does not, as on a real machine whose wall clock is off),
one of each kind 90 s ahead and one 90 s behind, against one PostgreSQL, Redis
and Graph sandbox on the real clock. That the skew took hold is checked, not
assumed: each process's first log line must carry the real time of its writing
plus its skew. And the timed ``appsecret_proof`` each worker signs its Graph
calls with (``appsecret_time``, kept in the sandbox's call log) must carry the
database's time, not its machine's: Graph refuses a proof from too far in the
future or the past, so a worker signing with a clock 90 s off would have its
calls refused.

Two dispatchers (+90 s and -90 s) run throughout. Then:

1. **A worker dies mid-call and its lease expires.** Only the worker at +90 s
   runs. Graph makes its posts at once but answers 3 s later; while every call
   is in flight the worker is killed with SIGKILL. Its leases expire on the
   database's clock, a dispatcher reaps them (``lease_expired``), and the
   worker at -90 s, started after the kill, reconciles: it reads the Page,
   finds each post inside the window of the dead worker's attempt and adopts
   it (``reconciled``) instead of publishing again.
2. **Lost replies and slow calls, both workers alive.** A worker at +90 s
   joins the one at -90 s. On one Page, Graph makes the first posts and the
   replies are lost (the connection dropped): the next worker reconciles and
   adopts each. On another, every call waits 2 s before Graph acts: no
   dispatcher may take such a lease back while its call runs.

At the end every post is on its Page exactly once under the Graph id offpost
holds (the sandbox's duplicate detection is off, so a second publish cannot
hide behind a ``#506``); exactly the killed worker's attempts expired; every
lost reply was adopted, none sent twice; no post was sent before it was due.

On the machines' clocks (before the database's clock) this fails, as running
these processes on a copy of offpost whose ``models/clock.py`` returns the
machine's time shows: every post of step 1 and most of step 2 end up on their
Page twice. A worker 90 s ahead stamps its attempts 90 s late, so the window
its posts are sought in (attempt start - 60 s onwards) begins 30 s after Graph
made them. A lease's end comes from its worker's clock and is compared with
the reaper's, so a dispatcher 90 s ahead reaps the leases of the worker 90 s
behind as soon as they are taken, mid-call; a post that dispatcher had queued
then owes reconciliation from its queue time, 180 s after its attempt's stamp,
so the next worker sees no attempt to look for and publishes again. A
dispatcher 90 s ahead also claims posts 90 s early.

One setting serves the test, not offpost: ``time.sleep`` in the processes
under faketime is replaced (see :data:`SLEEP_SHIM`) to work around
libfaketime's handling of Python's sleeps and thread waits. The sandbox keeps
its default tolerance for timed proofs (30 s ahead).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import Attempt, AttemptOutcome, PostStatus
from tests.conftest import IN_CI, fresh_postgres_database
from tests.integration.pipeline_support import (
    Pipeline,
    assert_each_published_once,
    new_client,
    running_pipeline,
    wait_for,
)
from tests.integration.sandbox_support import TIMEOUT, SandboxClient

logger = logging.getLogger(__name__)

SKEW_S = 90
#: Short enough to expire within the test, long enough for a call to start:
#: a worker starts one only while its lease outlasts 2 x the Graph timeout.
LEASE_S = 12
GRAPH_TIMEOUT_S = 4
#: Posts in flight when the worker dies; Graph makes them, then answers this late.
KILLED_POSTS = 4
REPLY_DELAY_MS = 3000
#: Phase 2: posts on the Page whose first replies are lost, and on the slow Page.
LOST_PAGE_POSTS = 6
LOST_REPLIES = 3
SLOW_PAGE_POSTS = 4
SLOW_CALL_MS = 2000
#: How far a measured clock may stray from the skew asked for (log stamps have
#: milliseconds, ``appsecret_time`` whole seconds).
CLOCK_TOLERANCE_S = 2.5

#: The timestamp ``offpost``'s log format starts each line with (``%(asctime)s``).
LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.MULTILINE)

#: ``time.sleep`` for the processes under faketime (their ``sitecustomize``).
#: libfaketime either fakes the monotonic clock too, and then every timed wait of
#: a Python thread (``Event.wait``, ``Queue.get``: ``sem_clockwait``, which it does
#: not intercept) waits for ever (libfaketime issue #390); or, with
#: ``FAKETIME_DONT_FAKE_MONOTONIC=1``, it turns Python 3.11's ``time.sleep``
#: (``clock_nanosleep`` to an absolute monotonic time) into EINVAL (issue #426).
#: So the monotonic clock stays true and ``time.sleep`` waits in ``select``.
SLEEP_SHIM = """\
import select
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
"""


@functools.cache
def faketime_library() -> str:
    """The ``LD_PRELOAD`` value Debian's ``faketime`` command runs a program with (its
    multi-threaded library); missing, the test skips locally and fails under CI."""
    path = shutil.which("faketime")
    if path is None:
        message = (
            "faketime is not installed (Debian package faketime: apt-get install faketime); "
            "the clock-skew test runs its processes under it"
        )
        if IN_CI:
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    shown = subprocess.run(
        [path, "-m", "-f", "+0s", "printenv", "LD_PRELOAD"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    library = shown.stdout.strip()
    assert "faketime" in library, f"faketime preloads {library!r}"
    return library


def skewed(pipeline: Pipeline, skew_s: int) -> dict[str, str]:
    """The environment that puts a process's wall clock ``skew_s`` off.

    libfaketime is preloaded as the ``faketime`` command would, but without that
    command as a parent, so that signals, exit codes and :meth:`Pipeline.stop` and
    ``kill`` reach the offpost process itself.
    """
    shim = pipeline.logs.parent / "faketime-site"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
    path = pipeline.env.get("PYTHONPATH")
    return {
        "LD_PRELOAD": faketime_library(),
        "FAKETIME": f"{skew_s:+d}s",
        # Only the wall clock is wrong, as on a real machine: the monotonic clock
        # (the worker's lease deadline, Celery's timers) runs true.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": f"{shim}{os.pathsep}{path}" if path else str(shim),
        # Log stamps in UTC, to compare with the real clock.
        "TZ": "UTC",
    }


def start_skewed(
    pipeline: Pipeline, name: str, skew_s: int, *args: str
) -> tuple[subprocess.Popen[bytes], float]:
    """``offpost <args>`` as process ``name`` with its wall clock ``skew_s`` off; the Popen
    and the real time just before it started."""
    started_at = time.time()
    return pipeline.start(name, *args, env=skewed(pipeline, skew_s)), started_at


def start_skewed_worker(pipeline: Pipeline, name: str, skew_s: int) -> float:
    """A worker as :meth:`Pipeline.start_worker` starts one, with its clock ``skew_s`` off."""
    started_at = time.time()
    pipeline.start_worker(name, env=skewed(pipeline, skew_s))
    return started_at


def assert_clock_skewed(pipeline: Pipeline, name: str, skew_s: int, started_at: float) -> float:
    """That process ``name``'s wall clock runs ``skew_s`` off: its first log line was
    written after ``started_at`` and before this reads it (real time), so its stamp
    must lie in that interval moved by ``skew_s``. Returns the skew measured (to within
    the time the line took to be seen)."""
    path = pipeline.logs / f"{name}.log"

    def first_stamp() -> str | None:
        match = LOG_STAMP.search(path.read_text(errors="replace"))
        return match[1] if match else None

    stamp = wait_for(first_stamp, timeout_s=30, what=f"a timestamped line from {name}")
    seen_at = time.time()
    assert stamp is not None
    stamped = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
    low, high = started_at + skew_s, seen_at + skew_s
    assert low - CLOCK_TOLERANCE_S <= stamped <= high + CLOCK_TOLERANCE_S, (
        f"{name} logged {stamp} UTC between {started_at:.1f} and {seen_at:.1f} (real); "
        f"its clock is not {skew_s:+d} s off: is faketime working?"
    )
    return stamped - (started_at + seen_at) / 2


def signing_skew(call: dict[str, Any]) -> float:
    """How far the caller's clock was off when it signed this Graph call: its
    ``appsecret_time`` minus the sandbox's (real) time when the call arrived."""
    arrived = float(call["time"]) - float(call["duration_ms"]) / 1000
    return float(call["params"]["appsecret_time"]) - arrived


def feed_calls(graph: SandboxClient, page_id: str, method: str) -> list[dict[str, Any]]:
    return [
        c
        for c in graph.control("GET", "/calls")["data"]
        if c["method"] == method and re.search(rf"/{page_id}/feed$", c["path"])
    ]


def near(value: float, target: float) -> bool:
    return abs(value - target) <= CLOCK_TOLERANCE_S


@pytest.mark.timeout(120)
def test_exactly_once_with_clocks_ninety_seconds_off(
    postgres_server_url: str, redis_url: str, sandbox_server: RunningSandbox, tmp_path: Path
) -> None:
    faketime_library()
    with (
        fresh_postgres_database(postgres_server_url) as db,
        running_pipeline(
            db,
            redis_url,
            sandbox_server,
            tmp_path / "logs",
            OFFPOST_LEASE_S=str(LEASE_S),
            OFFPOST_GRAPH_TIMEOUT_S=str(GRAPH_TIMEOUT_S),
            OFFPOST_PUBLISH_CONCURRENCY="8",
            # The faults below time each publish's own reply (made at once, answered
            # 3 s later): inside one batch request they would add up. Batching under
            # lost replies and kills is the chaos tests' part.
            OFFPOST_GRAPH_BATCH="false",
        ) as pipeline,
        httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http,
    ):
        graph = SandboxClient(sandbox_server, http)
        before = graph.control("GET", "/settings")
        graph.settings(duplicate_detection=False)
        try:
            run_scenario(pipeline, graph)
        finally:
            graph.control("DELETE", "/faults")
            graph.settings(duplicate_detection=before["duplicate_detection"])


def run_scenario(pipeline: Pipeline, graph: SandboxClient) -> None:
    client_id, key = new_client(pipeline, "skew")
    pages: list[str] = []
    with pipeline.api() as api:
        credentials = []
        for _ in range(3):
            user = graph.mint_user(pages=1)
            credentials.append(pipeline.credential(api, key, user))
            pages.append(user["pages"][0]["id"])
    killed_page, lost_page, slow_page = pages
    skews: dict[str, float] = {}

    for name, skew in (("dispatcher-ahead", SKEW_S), ("dispatcher-behind", -SKEW_S)):
        _, started_at = start_skewed(pipeline, name, skew, "dispatcher")
        skews[name] = assert_clock_skewed(pipeline, name, skew, started_at)

    # 1. Graph makes each post at once and answers 3 s later; the worker dies meanwhile.
    started_at = start_skewed_worker(pipeline, "worker-ahead", SKEW_S)
    skews["worker-ahead"] = assert_clock_skewed(pipeline, "worker-ahead", SKEW_S, started_at)
    graph.fault(
        path=rf"/{killed_page}/feed$",
        method="POST",
        times=KILLED_POSTS,
        latency_ms=REPLY_DELAY_MS,
        after_effect=True,
    )
    killed = pipeline.add_posts(
        client_id,
        credentials[0],
        killed_page,
        [f"skew killed {n}" for n in range(KILLED_POSTS)],
        due_in_s=1,
    )
    wait_for(
        lambda: len(graph.posts(killed_page)) == KILLED_POSTS,
        timeout_s=30,
        interval_s=0.05,
        what="Graph to make the posts of the worker to kill",
    )
    pipeline.kill("worker-ahead")
    # Killed mid-call: nothing recorded, every attempt in flight.
    in_flight = pipeline.posts(killed)
    assert {p.status for p in in_flight} == {PostStatus.PUBLISHING}, [
        (p.id, p.status) for p in in_flight
    ]
    for post_id in killed:
        assert [a.outcome for a in pipeline.attempts(post_id)] == [None], post_id

    started_at = start_skewed_worker(pipeline, "worker-behind", -SKEW_S)
    skews["worker-behind"] = assert_clock_skewed(pipeline, "worker-behind", -SKEW_S, started_at)
    pipeline.wait_status(killed, {PostStatus.PUBLISHED}, timeout_s=60)

    # 2. Lost replies and slow calls, with a worker on each side of the real time.
    started_at = start_skewed_worker(pipeline, "worker-ahead-2", SKEW_S)
    skews["worker-ahead-2"] = assert_clock_skewed(pipeline, "worker-ahead-2", SKEW_S, started_at)
    graph.fault(
        path=rf"/{lost_page}/feed$",
        method="POST",
        times=LOST_REPLIES,
        after_effect=True,
        drop_response=True,
    )
    graph.fault(
        path=rf"/{slow_page}/feed$", method="POST", times=SLOW_PAGE_POSTS, latency_ms=SLOW_CALL_MS
    )
    lost = [
        post_id
        for n in range(LOST_PAGE_POSTS)
        for post_id in pipeline.add_posts(
            client_id, credentials[1], lost_page, [f"skew lost {n}"], due_in_s=3 + n * 0.5
        )
    ]
    slow = [
        post_id
        for n in range(SLOW_PAGE_POSTS)
        for post_id in pipeline.add_posts(
            client_id, credentials[2], slow_page, [f"skew slow {n}"], due_in_s=3 + n * 0.5
        )
    ]
    pipeline.wait_status(lost + slow, {PostStatus.PUBLISHED}, timeout_s=60)

    # Exactly once each, under the Graph id offpost holds.
    by_page = {killed_page: killed, lost_page: lost, slow_page: slow}
    assert_each_published_once(pipeline, graph, by_page)
    every = killed + lost + slow
    attempts = {post_id: pipeline.attempts(post_id) for post_id in every}

    # 1: the dead worker's attempts expired and the other worker adopted each post.
    for post_id in killed:
        history = [(a.outcome, a.error_code) for a in attempts[post_id]]
        assert history == [
            (AttemptOutcome.RETRY, "lease_expired"),
            (AttemptOutcome.RECONCILED, None),
        ], post_id
    expired = [a for post_id in every for a in attempts[post_id] if a.error_code == "lease_expired"]
    assert len(expired) == KILLED_POSTS, "a live worker's lease was taken back"
    assert len({a.worker for a in expired}) == 1

    # 2: each lost reply adopted, never sent again; the slow calls kept their leases.
    lost_outcomes = Counter(a.outcome for post_id in lost for a in attempts[post_id])
    assert lost_outcomes[AttemptOutcome.RECONCILED] == LOST_REPLIES, lost_outcomes
    assert len(feed_calls(graph, lost_page, "POST")) == LOST_PAGE_POSTS
    for post_id in slow:
        assert [a.outcome for a in attempts[post_id]] == [AttemptOutcome.PUBLISHED], post_id

    # No post went out before it was due (a dispatcher ahead claimed early on its clock).
    posts = {p.id: p for p in pipeline.posts(every)}
    for post_id in every:
        first: Attempt = attempts[post_id][0]
        assert first.started_at >= posts[post_id].publish_at - timedelta(seconds=1), post_id

    # The workers signed every Graph call on the database's clock, not on their own
    # (+90 s for the killed worker, -90 s for the others): no proof was off.
    killed_sends = feed_calls(graph, killed_page, "POST")
    assert len(killed_sends) == KILLED_POSTS
    reads = feed_calls(graph, killed_page, "GET")
    assert reads
    every_call = [
        c
        for page in (killed_page, lost_page, slow_page)
        for m in ("GET", "POST")
        for c in feed_calls(graph, page, m)
    ]
    assert all(near(signing_skew(c), 0) for c in every_call), [signing_skew(c) for c in every_call]

    # No worker recorded after losing its lease, nothing crashed, and every process
    # stops cleanly on SIGTERM under its skewed clock.
    log = pipeline.log_text()
    assert "after losing its lease" not in log
    assert "lost the lease on" not in log
    assert "Traceback" not in log
    for name in sorted(pipeline.procs):
        assert pipeline.stop(name) == 0, name
    assert "Traceback" not in pipeline.log_text()

    lost_replies = sum(1 for c in graph.control("GET", "/calls")["data"] if c.get("dropped"))
    reconciled = sum(
        1 for post_id in every for a in attempts[post_id] if a.outcome == AttemptOutcome.RECONCILED
    )
    logger.info(
        "%d posts, 1 worker killed mid-call, %d replies lost, %d leases expired, "
        "%d reconciled, 0 duplicates; clocks off by %s",
        len(every),
        lost_replies,
        len(expired),
        reconciled,
        ", ".join(f"{name} {skew:+.1f} s" for name, skew in skews.items()),
    )

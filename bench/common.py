"""What every benchmark shares: its own database, Redis DB, Graph sandbox, processes and clocks.

Everything runs on this one machine: PostgreSQL and Redis as found, the Graph
sandbox in its own process (``offpost sandbox``), offpost's dispatcher and
worker (and the baselines) as subprocesses. The benchmarks use their own
database (``offpost_bench``, dropped and created by each run), Redis DB 11 and
their own Celery queues, so they never touch what the test suites use.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from offpost.models.types import new_encryption_key

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OFFPOST = str(BIN / "offpost")
PG_SERVER = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BENCH_DB", "offpost_bench")
DB_URL = f"{PG_SERVER}/{DB_NAME}"
SA_URL = DB_URL.replace("postgresql://", "postgresql+psycopg://", 1)
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/11")
APP_ID = "424242424242"
APP_SECRET = "bench-app-secret-0123456789abcdef"
PUBLISH_LATENCY_MS = 50
LOGS = ROOT / "bench" / ".logs"

console = Console(width=150)

# offpost's own alphabet (offpost.models.ids): ids look like the real ones.
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def utcnow() -> datetime:
    return datetime.now(UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- database -----------------------------------------------------------------------------


def fresh_database() -> None:
    """Drop and create ``offpost_bench``, then bring offpost's schema to head."""
    from offpost.models.migrate import upgrade_to_head

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    upgrade_to_head(SA_URL)


def drop_database() -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def connect() -> psycopg.Connection[Any]:
    return psycopg.connect(DB_URL, autocommit=True)


def flush_redis() -> None:
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    r.close()


class IdMaker:
    """Post-shaped ids (``post_`` + 20 of offpost's characters), fast enough for 10M rows.

    8 random characters per run, then a base-62 counter: unique, and cheap to make
    in bulk (``new_id`` draws 20 ``secrets.choice`` each).
    """

    def __init__(self) -> None:
        self.tag = "".join(secrets.choice(_ALPHABET) for _ in range(8))
        self.n = 0

    def next(self) -> str:
        n, chars = self.n, []
        self.n += 1
        for _ in range(12):
            n, r = divmod(n, 62)
            chars.append(_ALPHABET[r])
        return f"post_{self.tag}{''.join(reversed(chars))}"


_COLUMNS = (
    "id, client_id, credential_id, target, message, publish_at, due_at, status, "
    "attempts, max_attempts, created_at, updated_at"
)


def _ts(value: datetime) -> str:
    return value.isoformat()


def copy_posts(
    conn: psycopg.Connection[Any],
    *,
    client_id: str,
    credential_id: str,
    pages: Sequence[str],
    times: Iterator[datetime],
    count: int,
    ids: IdMaker,
    label: str,
    chunk: int = 50_000,
) -> list[str]:
    """COPY ``count`` scheduled posts into ``posts`` (round-robin over ``pages``); their ids.

    Text COPY in chunks of ``chunk`` rows, with a progress bar.
    """
    now = _ts(utcnow())
    out: list[str] = []
    start = time.perf_counter()
    with (
        _progress() as progress,
        conn.cursor() as cur,
        cur.copy(f"COPY posts ({_COLUMNS}) FROM STDIN") as copy,
    ):
        task = progress.add_task(label, total=count)
        done = 0
        while done < count:
            n = min(chunk, count - done)
            lines = []
            for i in range(done, done + n):
                pid = ids.next()
                out.append(pid)
                at = _ts(next(times))
                lines.append(
                    f"{pid}\t{client_id}\t{credential_id}\t{pages[i % len(pages)]}\t"
                    f"bench post {pid}\t{at}\t{at}\tscheduled\t0\t5\t{now}\t{now}\n"
                )
            copy.write("".join(lines))
            done += n
            progress.update(task, completed=done)
    elapsed = time.perf_counter() - start
    console.print(f"  {label}: {count:,} rows in {elapsed:.1f} s ({count / elapsed:,.0f} rows/s)")
    return out


def spread(start: datetime, span: timedelta, count: int, seed: int = 7) -> Iterator[datetime]:
    """``count`` instants spread uniformly at random over ``[start, start + span)``."""
    import random

    rng = random.Random(seed)
    total = span.total_seconds()
    for _ in range(count):
        yield start + timedelta(seconds=rng.random() * total)


def same_instant(at: datetime) -> Iterator[datetime]:
    while True:
        yield at


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# -- sandbox ------------------------------------------------------------------------------


@dataclass
class Procs:
    """Subprocesses of one benchmark run; all stopped at exit."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        LOGS.mkdir(parents=True, exist_ok=True)
        with (LOGS / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (LOGS / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


@contextlib.contextmanager
def process_group() -> Iterator[Procs]:
    procs = Procs()
    try:
        yield procs
    finally:
        procs.stop_all()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFPOST_")}
    env.update(
        {
            "OFFPOST_APP_ID": APP_ID,
            "OFFPOST_APP_SECRET": APP_SECRET,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


@dataclass
class Sandbox:
    url: str
    http: httpx.Client
    pid: int = 0

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"/_sandbox{path}", json=body)
        response.raise_for_status()
        return response.json()


def start_sandbox(procs: Procs, latency_ms: int = PUBLISH_LATENCY_MS) -> Sandbox:
    """``offpost sandbox`` in its own process: 50 ms per publish, no throttling, no 506."""
    port = free_port()
    proc = procs.start("sandbox", [OFFPOST, "sandbox", "--port", str(port)], base_env())
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            http.get("/_sandbox/settings").raise_for_status()
            break
        except httpx.HTTPError:
            procs.check_alive()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    sandbox = Sandbox(url, http, proc.pid)
    sandbox.control(
        "POST",
        "/settings",
        {
            "publish_latency_ms": latency_ms,
            "duplicate_detection": False,
            "app_call_budget": 1_000_000_000,
            "page_call_budget": 1_000_000_000,
        },
    )
    return sandbox


# -- offpost objects ----------------------------------------------------------------------


@dataclass
class Tenant:
    """An API client with one credential over ``pages`` Pages; page tokens for the baselines."""

    client_id: str
    api_key: str
    credential_id: str
    pages: list[str]
    page_tokens: dict[str, str]
    encryption_keys: str


def make_tenant(sandbox: Sandbox, pages: int = 20, encryption_keys: str | None = None) -> Tenant:
    """A client and a credential made through offpost's own API (in-process, once)."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from offpost.api.app import create_app
    from offpost.models import (
        Client,
        CredentialPage,
        hash_api_key,
        make_engine,
        make_sessionmaker,
        new_api_key,
    )
    from offpost.settings import Settings

    keys = encryption_keys or new_encryption_key()
    settings = Settings(
        database_url=SA_URL,
        broker_url=REDIS_URL,
        graph_url=sandbox.url,
        app_id=APP_ID,
        app_secret=APP_SECRET,
        encryption_keys=keys,
    )
    key = new_api_key()
    engine = make_engine(SA_URL, encryption_keys=settings.encryption_key_list())
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        client = Client(name=f"bench-{secrets.token_hex(4)}", key_hash=hash_api_key(key))
        session.add(client)
        session.flush()
        client_id = client.id
    user = sandbox.control("POST", "/users", {"pages": pages})
    with TestClient(create_app(settings)) as api:
        response = api.post(
            "/v1/credentials",
            json={"access_token": user["access_token"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        response.raise_for_status()
        credential_id = response.json()["id"]
    with sessions() as session:
        rows = session.scalars(
            select(CredentialPage).where(CredentialPage.credential_id == credential_id)
        )
        tokens = {row.page_id: row.page_token for row in rows}
    engine.dispose()
    return Tenant(
        client_id=client_id,
        api_key=key,
        credential_id=credential_id,
        pages=[p["id"] for p in user["pages"]],
        page_tokens={k: v for k, v in tokens.items() if v},
        encryption_keys=keys,
    )


def offpost_env(sandbox: Sandbox, tenant: Tenant, **settings: str) -> dict[str, str]:
    return base_env(
        OFFPOST_DATABASE_URL=SA_URL,
        OFFPOST_BROKER_URL=REDIS_URL,
        OFFPOST_GRAPH_URL=sandbox.url,
        OFFPOST_ENCRYPTION_KEYS=tenant.encryption_keys,
        **settings,
    )


def wait_ready(procs: Procs, name: str, marker: str, timeout_s: float = 60) -> None:
    """Wait until ``marker`` shows in the process's log."""
    deadline = time.monotonic() + timeout_s
    path = LOGS / f"{name}.log"
    while marker not in path.read_text(errors="replace"):
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready after {timeout_s} s (no {marker!r} in its log)")
        time.sleep(0.2)


def wake_dispatcher(due_at: datetime) -> None:
    """What the API does after an insert: tell the dispatchers when the next post is due."""
    from offpost.scheduler.wake import RedisWaker

    waker = RedisWaker(REDIS_URL)
    waker.notify(due_at)
    waker.close()


# -- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (live ones), in seconds."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return total
    except psutil.Error:
        return 0.0


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL process alive now (server and backends)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            with contextlib.suppress(psutil.Error):
                total += sum(proc.cpu_times()[:2])
    return total


class CpuMeter:
    """CPU spent by the system under test, the sandbox and PostgreSQL between two points."""

    def __init__(self, pids: dict[str, int], sandbox_pid: int) -> None:
        self.pids = pids
        self.sandbox_pid = sandbox_pid
        self.own = self.sandbox = self.postgres = 0.0
        self.by_process: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._own0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._sandbox0 = cpu_seconds(self.sandbox_pid)
        self._postgres0 = postgres_cpu_seconds()
        return self

    def __exit__(self, *_: object) -> None:
        self.by_process = {n: cpu_seconds(pid) - self._own0[n] for n, pid in self.pids.items()}
        self.own = sum(self.by_process.values())
        self.sandbox = cpu_seconds(self.sandbox_pid) - self._sandbox0
        # Backends that exited during the run are missed: a lower bound.
        self.postgres = max(0.0, postgres_cpu_seconds() - self._postgres0)


def rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total / 1e6
    except psutil.Error:
        return 0.0


class RssSampler:
    """Samples the RSS of some processes every ``every_s``; keeps the peak of each."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.5) -> None:
        self.pids = pids
        self.every_s = every_s
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.samples: dict[str, list[float]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                value = rss_mb(pid)
                self.samples[name].append(value)
                self.peak[name] = max(self.peak[name], value)
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class DrainResult:
    system: str
    posts: int
    drain_s: float
    lateness_s: list[float]
    cpu_s: float
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    sandbox_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.posts / self.drain_s if self.drain_s > 0 else float("nan")

    @property
    def cpu_ms_per_post(self) -> float:
        return 1000 * self.cpu_s / self.posts

    def p(self, q: float) -> float:
        return percentile(self.lateness_s, q)

    def mean(self) -> float:
        return statistics.fmean(self.lateness_s) if self.lateness_s else float("nan")


#: A drain whose count has not moved for this long has stalled: the bench says so.
STALL_S = 60.0


def wait_count(
    conn: psycopg.Connection[Any],
    sql: str,
    target: int,
    timeout_s: float,
    stall_s: float = STALL_S,
) -> int:
    """Poll ``sql`` (a count) until it reaches ``target``; the last count.

    Gives up at ``timeout_s``, or as soon as the count has not moved for
    ``stall_s`` (a system that lost work would otherwise be waited on for the
    whole timeout), saying which.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last, moved_at = -1, start
    with _progress() as progress:
        task = progress.add_task("  waiting", total=target)
        while True:
            row = conn.execute(sql).fetchone()
            done = int(row[0]) if row else 0
            progress.update(task, completed=done)
            now = time.monotonic()
            if done != last:
                last, moved_at = done, now
            if done >= target:
                return done
            if now > deadline or now - moved_at > stall_s:
                why = "timed out" if now > deadline else f"stalled for {stall_s:g} s"
                console.print(f"  [red]{why} at {done:,} of {target:,}[/red]")
                return done
            time.sleep(0.25)


def lateness(conn: psycopg.Connection[Any], sql: str) -> tuple[list[float], datetime, datetime]:
    """``sql`` returns (publish_at, done_at) rows: lateness list, first due, last done."""
    rows = conn.execute(sql).fetchall()
    late = [(done - due).total_seconds() for due, done in rows]
    return late, min(r[0] for r in rows), max(r[1] for r in rows)


def results_table(title: str, results: Sequence[DrainResult], reference: str) -> Table:
    ref = next(r for r in results if r.system == reference)
    table = Table(title=title)
    for col in (
        "system",
        "posts",
        "drain s",
        "posts/s",
        "x baseline",
        "late p50 ms",
        "late p99 ms",
        "late max ms",
        "CPU ms/post",
        "sandbox + PG ms/post",
        "peak RSS MB",
    ):
        table.add_column(col, justify="right" if col != "system" else "left")
    for r in results:
        table.add_row(
            r.system,
            f"{r.posts:,}",
            f"{r.drain_s:.2f}",
            f"{r.throughput:,.0f}",
            f"{r.throughput / ref.throughput:.2f}",
            f"{1000 * r.p(50):,.0f}",
            f"{1000 * r.p(99):,.0f}",
            f"{1000 * max(r.lateness_s):,.0f}",
            f"{r.cpu_ms_per_post:.2f}",
            f"{1000 * r.sandbox_cpu_s / r.posts:.2f} + {1000 * r.postgres_cpu_s / r.posts:.2f}",
            " / ".join(f"{k} {v:.0f}" for k, v in r.peak_rss_mb.items()),
        )
    return table


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
    )

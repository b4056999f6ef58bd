"""Benchmark 1 (and 5): a burst of posts due at one instant, beside a million scheduled later.

    python -m bench.burst                      # 10,000 due now, 1,000,000 within 30 days
    python -m bench.burst --posts 1000 --background 10000   # a quick check

For each system in turn, on a fresh database, the same Graph sandbox (its own
process, 50 ms per publish) and the same Redis: the background posts are
seeded, the system starts and idles, then ``--posts`` posts fall due at one
instant T0. Reported: drain time (T0 → last publish recorded), throughput,
lateness (done - publish_at) p50/p99/max, CPU ms per published post (the
system's own processes, not PostgreSQL's or the sandbox's), peak RSS, and the
ratio of throughput to the naive baseline measured in the same invocation.

Systems: ``offpost`` (dispatcher + worker processes, Graph batch requests on as
shipped), ``offpost-single`` (the same with ``OFFPOST_GRAPH_BATCH=false``: one
HTTP request per publish), ``naive`` (one Celery task
per post with ``eta=publish_at``, 64 threads) and ``apscheduler`` (APScheduler 3,
SQLAlchemy job store, 64 threads).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench import baseline_apscheduler as aps
from bench import baseline_celery as naive
from bench.common import (
    APP_SECRET,
    BIN,
    DB_URL,
    LOGS,
    OFFPOST,
    REDIS_URL,
    CpuMeter,
    DrainResult,
    IdMaker,
    RssSampler,
    Sandbox,
    _progress,
    base_env,
    connect,
    console,
    copy_posts,
    flush_redis,
    fresh_database,
    lateness,
    machine_line,
    make_tenant,
    offpost_env,
    process_group,
    results_table,
    same_instant,
    spread,
    start_sandbox,
    utcnow,
    wait_count,
    wait_ready,
    wake_dispatcher,
)
from offpost.settings import Settings

BACKGROUND_START = timedelta(hours=1)
BACKGROUND_SPAN = timedelta(days=30)


def offpost_settings(args: argparse.Namespace, *, batch: bool = True) -> dict[str, str]:
    return {
        "OFFPOST_DISPATCH_BATCH": str(args.dispatch_batch),
        "OFFPOST_MESSAGE_BATCH": str(args.message_batch),
        "OFFPOST_PUBLISH_CONCURRENCY": str(args.publish_concurrency),
        "OFFPOST_DISPATCHER_MAX_SLEEP_S": "2",
        "OFFPOST_GRAPH_BATCH": "true" if batch else "false",
    }


def start_offpost(
    procs,
    sandbox: Sandbox,
    tenant,
    args: argparse.Namespace,
    *,
    batch: bool = True,
    extra: dict[str, str] | None = None,
) -> dict[str, int]:
    env = offpost_env(sandbox, tenant, **offpost_settings(args, batch=batch), **(extra or {}))
    pids = {}
    for n in range(args.workers):
        name = f"offpost-worker{n}"
        proc = procs.start(
            name,
            [
                OFFPOST,
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(args.worker_threads),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                f"bench{n}@%h",
            ],
            env,
        )
        pids[name] = proc.pid
    proc = procs.start("offpost-dispatcher", [OFFPOST, "dispatcher"], env)
    pids["offpost-dispatcher"] = proc.pid
    for name in pids:
        wait_ready(procs, name, "ready" if "worker" in name else "dispatcher started")
    return pids


class Profiler:
    """py-spy on a process during the burst (``--profile``): an SVG and collapsed stacks."""

    def __init__(self, name: str, pid: int, enabled: bool) -> None:
        self.enabled = enabled
        self.out = LOGS / f"profile-{name}"
        self.pid = pid
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        if self.enabled:
            for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".txt")):
                self.procs.append(
                    subprocess.Popen(
                        [
                            str(BIN / "py-spy"),
                            "record",
                            "--pid",
                            str(self.pid),
                            "--rate",
                            "50",
                            "--format",
                            fmt,
                            "--output",
                            f"{self.out}{suffix}",
                            "--nonblocking",
                            "--gil",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        return self

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.send_signal(2)
            proc.wait(timeout=60)
        if self.enabled:
            console.print(f"  profile: {self.out}.svg, {self.out}.txt")


def burst_soon(conn: psycopg.Connection[Any], tenant, posts: int) -> datetime:
    """After a moment's idling (the burst finds a sleeping dispatcher), ``posts`` posts
    due at one instant T0 three seconds on, and the wake-up ``POST /v1/posts`` sends
    after its insert; returns T0."""
    time.sleep(2)
    t0 = utcnow() + timedelta(seconds=3)
    copy_posts(
        conn,
        client_id=tenant.client_id,
        credential_id=tenant.credential_id,
        pages=tenant.pages,
        times=same_instant(t0),
        count=posts,
        ids=IdMaker(),
        label="inserting the burst (COPY)",
    )
    wake_dispatcher(t0)
    return t0


def run_offpost_single(sandbox: Sandbox, args: argparse.Namespace) -> DrainResult:
    """offpost with Graph batch requests off: one HTTP request per publish."""
    return run_offpost(sandbox, args, batch=False)


def run_offpost(sandbox: Sandbox, args: argparse.Namespace, *, batch: bool = True) -> DrainResult:
    system = "offpost" if batch else "offpost, no Graph batch"
    console.rule(system)
    fresh_database()
    flush_redis()
    tenant = make_tenant(sandbox, pages=args.pages)
    conn = connect()
    copy_posts(
        conn,
        client_id=tenant.client_id,
        credential_id=tenant.credential_id,
        pages=tenant.pages,
        times=spread(utcnow() + BACKGROUND_START, BACKGROUND_SPAN, args.background),
        count=args.background,
        ids=IdMaker(),
        label="seeding background posts (COPY)",
    )
    conn.execute("VACUUM ANALYZE posts")
    with process_group() as procs:
        pids = start_offpost(procs, sandbox, tenant, args, batch=batch)
        burst_soon(conn, tenant, args.posts)
        worker0 = pids["offpost-worker0"]
        with (
            CpuMeter(pids, sandbox.pid) as cpu,
            RssSampler(pids) as rss,
            Profiler("offpost-worker0", worker0, args.profile),
            Profiler("sandbox", sandbox.pid, args.profile),
        ):
            done = wait_count(
                conn,
                "SELECT count(*) FROM posts WHERE credential_id = "
                f"'{tenant.credential_id}' AND status = 'published'",
                args.posts,
                args.timeout,
            )
        procs.check_alive()
    late, first, last = lateness(
        conn,
        "SELECT publish_at, published_at FROM posts WHERE status = 'published' "
        f"AND credential_id = '{tenant.credential_id}'",
    )
    dupes = conn.execute(
        "SELECT count(*) FROM (SELECT post_id FROM attempts WHERE outcome = 'published' "
        "GROUP BY post_id HAVING count(*) > 1) d"
    ).fetchone()
    conn.close()
    return DrainResult(
        system,
        done,
        (last - first).total_seconds(),
        late,
        cpu.own,
        peak_rss_mb={k.removeprefix("offpost-"): v for k, v in rss.peak.items()},
        notes=f"{dupes[0] if dupes else '?'} posts published twice; CPU ms/post by process: "
        + ", ".join(
            f"{name.removeprefix('offpost-')} {1000 * cpu_s / max(1, done):.2f}"
            for name, cpu_s in cpu.by_process.items()
        ),
        sandbox_cpu_s=cpu.sandbox,
        postgres_cpu_s=cpu.postgres,
    )


def baseline_env(sandbox: Sandbox, tenant) -> dict[str, str]:
    return base_env(
        BENCH_DB_URL=DB_URL,
        BENCH_REDIS=REDIS_URL,
        BENCH_GRAPH_URL=sandbox.url,
        BENCH_APP_SECRET=APP_SECRET,
        BENCH_PAGE_TOKENS=json.dumps(tenant.page_tokens),
    )


def run_naive(sandbox: Sandbox, args: argparse.Namespace) -> DrainResult:
    console.rule("naive Celery (one task per post, eta=publish_at, 64 threads)")
    fresh_database()
    flush_redis()
    tenant = make_tenant(sandbox, pages=args.pages)
    conn = connect()
    naive.create_outcome_table(conn, naive.TABLE)
    # The naive design stores its posts too: same table, same million background rows.
    copy_posts(
        conn,
        client_id=tenant.client_id,
        credential_id=tenant.credential_id,
        pages=tenant.pages,
        times=spread(utcnow() + BACKGROUND_START, BACKGROUND_SPAN, args.background),
        count=args.background,
        ids=IdMaker(),
        label="seeding background posts (COPY)",
    )
    with process_group() as procs:
        proc = procs.start(
            "naive-worker",
            naive.worker_argv(),
            baseline_env(sandbox, tenant),
        )
        wait_ready(procs, "naive-worker", "ready")
        ids = IdMaker()
        burst = [
            (ids.next(), tenant.pages[i % len(tenant.pages)], f"naive burst {i}")
            for i in range(args.posts)
        ]
        # Enough lead for the enqueueing itself (about 0.3 ms a message).
        t0 = utcnow() + timedelta(seconds=5 + args.posts * 0.0006)
        start = time.perf_counter()
        naive.enqueue(burst, t0)
        enqueue_s = time.perf_counter() - start
        console.print(f"  enqueued {args.posts:,} eta tasks in {enqueue_s:.1f} s")
        if utcnow() > t0:
            console.print("  [red]enqueueing overran T0; lateness includes it[/red]")
        result = drain_baseline(
            conn, "naive celery eta", naive.TABLE, "worker", proc.pid, sandbox, args
        )
        procs.check_alive()
    ok = conn.execute(f"SELECT count(*) FROM {naive.TABLE} WHERE ok").fetchone()
    conn.close()
    result.notes = f"{ok[0] if ok else '?'} ok; enqueue {enqueue_s:.1f} s before T0"
    return result


def drain_baseline(
    conn: psycopg.Connection[Any],
    system: str,
    table: str,
    role: str,
    pid: int,
    sandbox: Sandbox,
    args: argparse.Namespace,
) -> DrainResult:
    """Wait for a baseline's ``table`` to hold every outcome; what the drain took."""
    with CpuMeter({role: pid}, sandbox.pid) as cpu, RssSampler({role: pid}) as rss:
        done = wait_count(conn, f"SELECT count(*) FROM {table}", args.posts, args.timeout)
    late, first, last = lateness(conn, f"SELECT publish_at, done_at FROM {table}")
    return DrainResult(
        system,
        done,
        (last - first).total_seconds(),
        late,
        cpu.own,
        peak_rss_mb=rss.peak,
        sandbox_cpu_s=cpu.sandbox,
        postgres_cpu_s=cpu.postgres,
    )


def run_apscheduler(sandbox: Sandbox, args: argparse.Namespace) -> DrainResult:
    console.rule("APScheduler 3 (SQLAlchemy job store on PostgreSQL, 64 threads)")
    fresh_database()
    tenant = make_tenant(sandbox, pages=args.pages)
    conn = connect()
    naive.create_outcome_table(conn, aps.TABLE)
    aps.create_job_table(DB_URL)
    ids = IdMaker()

    def background() -> Iterator[tuple[str, str, str, datetime]]:
        times = spread(utcnow() + BACKGROUND_START, BACKGROUND_SPAN, args.background)
        for i, at in enumerate(times):
            yield ids.next(), tenant.pages[i % len(tenant.pages)], f"aps bg {i}", at

    start = time.perf_counter()
    with _progress() as progress:
        aps.copy_jobs(conn, background(), args.background, progress, "seeding background jobs")
    console.print(f"  {args.background:,} pickled jobs in {time.perf_counter() - start:.1f} s")
    conn.execute(f"VACUUM ANALYZE {aps.JOBS_TABLE}")
    t0 = utcnow() + timedelta(seconds=15)
    burst = (
        (ids.next(), tenant.pages[i % len(tenant.pages)], f"aps burst {i}", t0)
        for i in range(args.posts)
    )
    with _progress() as progress:
        aps.copy_jobs(conn, burst, args.posts, progress, "inserting the burst jobs")
    with process_group() as procs:
        proc = procs.start(
            "apscheduler",
            [sys.executable, "-m", "bench.baseline_apscheduler"],
            baseline_env(sandbox, tenant),
        )
        wait_ready(procs, "apscheduler", "apscheduler ready")
        if utcnow() > t0:
            console.print("  [red]APScheduler started after T0; lateness includes it[/red]")
        result = drain_baseline(
            conn, "apscheduler 3", aps.TABLE, "scheduler", proc.pid, sandbox, args
        )
        procs.check_alive()
    conn.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=10_000, help="posts due at T0")
    parser.add_argument("--background", type=int, default=1_000_000, help="posts due later")
    parser.add_argument("--pages", type=int, default=20, help="Pages the posts spread over")
    parser.add_argument(
        "--systems",
        default="offpost,offpost-single,naive,apscheduler",
        help="offpost (Graph batch requests on, as shipped), offpost-single (off), naive, "
        "apscheduler",
    )
    parser.add_argument("--workers", type=int, default=2, help="offpost worker processes")
    parser.add_argument("--worker-threads", type=int, default=4, help="Celery threads per worker")
    defaults = Settings.model_fields  # offpost as shipped, unless told otherwise
    parser.add_argument(
        "--publish-concurrency", type=int, default=defaults["publish_concurrency"].default
    )
    parser.add_argument("--dispatch-batch", type=int, default=defaults["dispatch_batch"].default)
    parser.add_argument("--message-batch", type=int, default=defaults["message_batch"].default)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait per system")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the first offpost worker and the sandbox"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    console.print(f"[bold]burst[/bold]: {machine_line()}")
    console.print(
        f"  {args.posts:,} posts due at T0, {args.background:,} more within 30 days; "
        f"offpost: {args.workers} worker(s) x {args.worker_threads} threads, "
        f"publish_concurrency {args.publish_concurrency}, dispatch_batch {args.dispatch_batch}, "
        f"message_batch {args.message_batch}; sandbox publish latency 50 ms"
    )
    runners = {
        "offpost": run_offpost,
        "offpost-single": run_offpost_single,
        "naive": run_naive,
        "apscheduler": run_apscheduler,
    }
    results = []
    with process_group() as procs:
        sandbox = start_sandbox(procs)
        for name in args.systems.split(","):
            results.append(runners[name](sandbox, args))
            sandbox.control("DELETE", "/calls")  # the call log would only grow
    reference = "naive celery eta" if "naive" in args.systems else results[0].system
    console.print(
        results_table(f"burst at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", results, reference)
    )
    for r in results:
        if r.notes:
            console.print(f"  {r.system}: {r.notes}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "system": r.system,
                        "posts": r.posts,
                        "drain_s": r.drain_s,
                        "throughput": r.throughput,
                        "p50_ms": 1000 * r.p(50),
                        "p99_ms": 1000 * r.p(99),
                        "cpu_ms_per_post": r.cpu_ms_per_post,
                        "sandbox_cpu_ms_per_post": 1000 * r.sandbox_cpu_s / r.posts,
                        "postgres_cpu_ms_per_post": 1000 * r.postgres_cpu_s / r.posts,
                        "peak_rss_mb": r.peak_rss_mb,
                        "notes": r.notes,
                    }
                    for r in results
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

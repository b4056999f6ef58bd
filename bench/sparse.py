"""Benchmark 2: sparse lateness, one post due per second for five minutes.

    python -m bench.sparse                 # 300 posts, one a second
    python -m bench.sparse --count 20      # a quick check

offpost (one dispatcher, one worker) and both baselines run side by side in
the same five minutes: each has its own post due every second, offset by a
third of a second from the others', so the load is three posts a second in all.
Lateness is the time from ``publish_at`` to the outcome being recorded (after
the sandbox's 50 ms). Target: offpost p99 ≤ 250 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta

from rich.table import Table

from bench import baseline_apscheduler as aps
from bench import baseline_celery as naive
from bench.burst import baseline_env
from bench.common import (
    DB_URL,
    OFFPOST,
    DrainResult,
    IdMaker,
    _progress,
    connect,
    console,
    copy_posts,
    cpu_seconds,
    flush_redis,
    fresh_database,
    lateness,
    machine_line,
    make_tenant,
    offpost_env,
    process_group,
    start_sandbox,
    utcnow,
    wait_count,
    wait_ready,
    wake_dispatcher,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="posts per system")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between posts")
    args = parser.parse_args(argv)
    console.print(f"[bold]sparse[/bold]: {machine_line()}")
    fresh_database()
    flush_redis()
    conn = connect()
    naive.create_outcome_table(conn, naive.TABLE)
    naive.create_outcome_table(conn, aps.TABLE)
    aps.create_job_table(DB_URL)
    with process_group() as procs:
        sandbox = start_sandbox(procs)
        tenant = make_tenant(sandbox, pages=3)
        env = offpost_env(sandbox, tenant)
        pids = {
            "offpost": [
                procs.start(
                    "offpost-worker",
                    [
                        OFFPOST,
                        "worker",
                        "--pool",
                        "threads",
                        "--concurrency",
                        "4",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    env,
                ).pid,
                procs.start("offpost-dispatcher", [OFFPOST, "dispatcher"], env).pid,
            ]
        }
        base = baseline_env(sandbox, tenant)
        pids["naive"] = [
            procs.start(
                "naive-worker",
                naive.worker_argv(),
                base,
            ).pid
        ]
        wait_ready(procs, "offpost-worker", "ready")
        wait_ready(procs, "offpost-dispatcher", "dispatcher started")
        wait_ready(procs, "naive-worker", "ready")
        t0 = utcnow() + timedelta(seconds=15)
        step = timedelta(seconds=args.interval)
        ids = IdMaker()
        copy_posts(
            conn,
            client_id=tenant.client_id,
            credential_id=tenant.credential_id,
            pages=tenant.pages,
            times=iter([t0 + i * step for i in range(args.count)]),
            count=args.count,
            ids=ids,
            label="offpost posts (COPY)",
        )
        wake_dispatcher(t0)
        page = tenant.pages
        naive.enqueue_at(
            [
                (ids.next(), page[i % 3], f"naive {i}", t0 + i * step + step / 3)
                for i in range(args.count)
            ]
        )
        jobs = [
            (ids.next(), page[i % 3], f"aps {i}", t0 + i * step + 2 * step / 3)
            for i in range(args.count)
        ]
        with _progress() as progress:
            aps.copy_jobs(conn, iter(jobs), args.count, progress, "APScheduler jobs (COPY)")
        pids["apscheduler"] = [
            procs.start(
                "apscheduler", [sys.executable, "-m", "bench.baseline_apscheduler"], base
            ).pid
        ]
        wait_ready(procs, "apscheduler", "apscheduler ready")
        if utcnow() > t0:
            console.print("[red]set-up overran T0[/red]")
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        wait_count(
            conn,
            f"SELECT (SELECT count(*) FROM posts WHERE status = 'published') "
            f"+ (SELECT count(*) FROM {naive.TABLE}) + (SELECT count(*) FROM {aps.TABLE})",
            3 * args.count,
            args.count * args.interval + 120,
        )
        cpu = {k: sum(cpu_seconds(p) for p in v) - cpu0[k] for k, v in pids.items()}
        procs.check_alive()
    results = []
    for system, sql in (
        ("offpost", "SELECT publish_at, published_at FROM posts WHERE status = 'published'"),
        ("naive celery eta", f"SELECT publish_at, done_at FROM {naive.TABLE}"),
        ("apscheduler 3", f"SELECT publish_at, done_at FROM {aps.TABLE}"),
    ):
        late, first, last = lateness(conn, sql)
        key = system.split()[0]
        results.append(
            DrainResult(system, len(late), (last - first).total_seconds(), late, cpu[key])
        )
    conn.close()
    table = Table(
        title=f"sparse: one post per {args.interval:g} s for {args.count} posts, per system"
    )
    for col in (
        "system",
        "posts",
        "late p50 ms",
        "late p99 ms",
        "late max ms",
        "p99 / naive p99",
        "CPU ms/post",
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    ref = results[1]
    for r in results:
        table.add_row(
            r.system,
            str(r.posts),
            f"{1000 * r.p(50):.0f}",
            f"{1000 * r.p(99):.0f}",
            f"{1000 * max(r.lateness_s):.0f}",
            f"{r.p(99) / ref.p(99):.2f}",
            f"{r.cpu_ms_per_post:.1f}",
        )
    console.print(table)
    verdict = "met" if results[0].p(99) <= 0.25 else "MISSED"
    console.print(f"target offpost p99 ≤ 250 ms: {verdict} ({1000 * results[0].p(99):.0f} ms)")
    time.sleep(0)


if __name__ == "__main__":
    main()

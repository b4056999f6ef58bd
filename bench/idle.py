"""Benchmark 3: what the dispatcher's idle loop costs, however many posts are scheduled.

    python -m bench.idle                               # 0, 1,000,000 and 10,000,000 posts
    python -m bench.idle --sizes 0,1000000             # without the 10M seeding (minutes)
    python -m bench.idle --sizes 0,10000 --idle-s 5    # a quick check

For each size: a fresh database seeded by COPY with posts due between one hour
and 30 days from now (none due), then

* the dispatcher's tick as ``offpost dispatcher`` runs it (schedules, webhook
  deliveries, reaper, re-sender, claim, next-due lookup), in this process on an
  engine that times every statement: database time per tick as the client sees
  it (PostgreSQL's time plus the local round trip), mean and p99 over
  ``--ticks`` ticks, and its ratio to the same tick on an empty table;
* ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim and of the next-due lookup;
* RSS of a real ``offpost dispatcher`` and ``offpost worker`` idling ``--idle-s``
  seconds against that database.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

from rich.table import Table
from sqlalchemy import event

from bench.common import (
    OFFPOST,
    SA_URL,
    IdMaker,
    RssSampler,
    connect,
    console,
    copy_posts,
    flush_redis,
    fresh_database,
    machine_line,
    make_tenant,
    offpost_env,
    percentile,
    process_group,
    spread,
    start_sandbox,
    utcnow,
    wait_ready,
)


class StatementTimer:
    """Times every statement an engine runs; keeps the last tick's statements for EXPLAIN."""

    def __init__(self, engine: Any) -> None:
        self.total = 0.0
        self.count = 0
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()
        self.statements.append((statement, params))

    def _after(self, conn: Any, *_: Any) -> None:
        self.total += time.perf_counter() - conn.info.pop("bench_t0")
        self.count += 1

    def reset(self) -> None:
        self.total, self.count, self.statements = 0.0, 0, []


def measure_ticks(settings: Any, ticks: int) -> tuple[list[float], float, list[tuple[str, Any]]]:
    """DB seconds of each tick, statements per tick, and one tick's statements."""
    from offpost.models import make_engine, make_sessionmaker
    from offpost.scheduler.dispatcher import Dispatcher, DispatcherConfig
    from offpost.scheduler.housekeeping import build_housekeeping

    engine = make_engine(SA_URL)
    timer = StatementTimer(engine)
    sessions = make_sessionmaker(engine)
    housekeeping, close = build_housekeeping(settings, sessions, lambda _ids: None)
    # Housekeeping (reaper, re-sender) every tick: the worst case, not once a second.
    loop = Dispatcher(
        sessions,
        lambda _ids: None,
        config=DispatcherConfig(housekeeping_every_s=0.0),
        before_tick=housekeeping,
    )
    for _ in range(5):  # warm up: connections, prepared plans, the first-tick expiry sweep
        loop.tick()
    per_tick, statements = [], 0
    sample: list[tuple[str, Any]] = []
    for _ in range(ticks):
        timer.reset()
        result = loop.tick()
        assert result.claimed == 0, "nothing should be due"
        per_tick.append(timer.total)
        statements += timer.count
        sample = list(timer.statements)
    close()
    engine.dispose()
    return per_tick, statements / ticks, sample


def explain(sample: list[tuple[str, Any]]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim and the next-due lookup, rolled back."""
    plans = {}
    with connect() as conn:
        conn.autocommit = False
        for statement, params in sample:
            if "UPDATE posts" in statement and "'scheduled'" in statement:
                name = "claim_due"
            elif "min(posts.due_at)" in statement:
                name = "next_due_at"
            else:
                continue
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).fetchall()
            plans[name] = "\n".join(r[0] for r in rows)
            conn.rollback()
    return plans


def run_size(size: int, args: argparse.Namespace, sandbox: Any, procs: Any) -> dict[str, Any]:
    console.rule(f"{size:,} scheduled posts")
    fresh_database()
    flush_redis()
    tenant = make_tenant(sandbox, pages=20)
    conn = connect()
    if size:
        copy_posts(
            conn,
            client_id=tenant.client_id,
            credential_id=tenant.credential_id,
            pages=tenant.pages,
            times=spread(utcnow() + timedelta(hours=1), timedelta(days=30), size),
            count=size,
            ids=IdMaker(),
            label=f"seeding {size:,} posts (COPY)",
        )
    start = time.perf_counter()
    conn.execute("VACUUM ANALYZE posts")
    console.print(f"  VACUUM ANALYZE in {time.perf_counter() - start:.1f} s")
    db_size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    conn.close()
    from offpost.settings import Settings

    env = offpost_env(sandbox, tenant)
    settings = Settings(
        **{
            k.removeprefix("OFFPOST_").lower(): v
            for k, v in env.items()
            if k.startswith("OFFPOST_")
        }
    )
    per_tick, statements, sample = measure_ticks(settings, args.ticks)
    plans = explain(sample)
    worker = procs.start(
        f"idle-worker-{size}",
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
    )
    dispatcher = procs.start(f"idle-dispatcher-{size}", [OFFPOST, "dispatcher"], env)
    wait_ready(procs, f"idle-worker-{size}", "ready")
    wait_ready(procs, f"idle-dispatcher-{size}", "dispatcher started")
    with RssSampler({"dispatcher": dispatcher.pid, "worker": worker.pid}, every_s=0.5) as rss:
        time.sleep(args.idle_s)
    procs.check_alive()
    procs.stop(f"idle-worker-{size}")
    procs.stop(f"idle-dispatcher-{size}")
    return {
        "size": size,
        "db": db_size[0] if db_size else "?",
        "mean_ms": 1000 * sum(per_tick) / len(per_tick),
        "p99_ms": 1000 * percentile(per_tick, 99),
        "statements": statements,
        "plans": plans,
        "rss": {k: (v[0], max(v), v[-1]) for k, v in rss.samples.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,1000000,10000000")
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    console.print(f"[bold]idle[/bold]: {machine_line()}")
    results = []
    with process_group() as procs:
        sandbox = start_sandbox(procs)
        for size in (int(s) for s in args.sizes.split(",")):
            results.append(run_size(size, args, sandbox, procs))
    ref = results[0]
    table = Table(title="dispatcher idle tick (housekeeping every tick) and idle RSS")
    for col in (
        "scheduled posts",
        "database",
        "statements/tick",
        "DB ms/tick mean",
        "DB ms/tick p99",
        "x smallest",
        "dispatcher RSS MB start/peak/end",
        "worker RSS MB start/peak/end",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"{r['size']:,}",
            r["db"],
            f"{r['statements']:.0f}",
            f"{r['mean_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['mean_ms'] / ref['mean_ms']:.2f}",
            "/".join(f"{x:.0f}" for x in r["rss"]["dispatcher"]),
            "/".join(f"{x:.0f}" for x in r["rss"]["worker"]),
        )
    console.print(table)
    for name, plan in results[-1]["plans"].items():
        console.print(f"[bold]{name}[/bold] at {results[-1]['size']:,} posts:")
        console.print(plan, markup=False, highlight=False)


if __name__ == "__main__":
    main()

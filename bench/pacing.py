"""Benchmark 6: a burst for one Page against a Graph that throttles, with pacing on and off.

    python -m bench.pacing                     # 10,000 posts, 2,000 calls per 30 s
    python -m bench.pacing --posts 2000 --budget 600 --window 20 --modes on   # quicker

The sandbox runs in its throttling mode: the Page may take ``--budget`` calls in
any rolling ``--window`` seconds and answers (#80001) beyond it, with usage
headers on every reply, as Graph's Business Use Case limit does. ``--posts``
posts for that Page fall due at one instant. offpost runs as shipped (Graph
batch requests, pacing on) except that its pacer is told the sandbox's window
(``OFFPOST_PACING_PAGE_WINDOW_S``); with ``--modes on,off`` it runs a second
time with ``OFFPOST_PACING=false`` (only the blocks at 95 % and the throttle
errors hold it back).

Reported: drain time (T0 -> last publish recorded), the calls the sandbox
throttled, and the drain time against the budget's theoretical minimum: a
sliding window lets ``budget`` calls through at once and ``budget`` more each
window after, so ``posts`` calls need at least ``(ceil(posts / budget) - 1) *
window`` seconds; at the pacer's ceiling (90 % of the budget) the least is
``(ceil(posts / (0.9 * budget)) - 1) * window``.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime

from rich.table import Table

from bench.burst import burst_soon, start_offpost
from bench.common import (
    connect,
    console,
    flush_redis,
    fresh_database,
    machine_line,
    make_tenant,
    process_group,
    start_sandbox,
    wait_count,
)
from offpost.settings import Settings


def run(sandbox, args: argparse.Namespace, *, pacing: bool) -> dict[str, float]:
    label = "pacing on" if pacing else "pacing off"
    console.rule(f"offpost, {label}")
    fresh_database()
    flush_redis()
    sandbox.control("POST", "/reset")
    tenant = make_tenant(sandbox, pages=1)
    page_id = tenant.pages[0]
    sandbox.control(
        "POST",
        "/settings",
        {
            "publish_latency_ms": args.latency_ms,
            "duplicate_detection": False,
            "usage_window_s": args.window,
            "app_call_budget": 1_000_000_000,
            "page_call_budget": 1_000_000_000,
            "page_call_budgets": {page_id: args.budget},
        },
    )
    sandbox.control("DELETE", "/usage")
    conn = connect()
    extra = {
        "OFFPOST_PACING": "true" if pacing else "false",
        "OFFPOST_PACING_PAGE_WINDOW_S": str(args.window),
    }
    with process_group() as procs:
        start_offpost(procs, sandbox, tenant, args, extra=extra)
        t0 = burst_soon(conn, tenant, args.posts)
        done = wait_count(
            conn,
            "SELECT count(*) FROM posts WHERE status = 'published'",
            args.posts,
            args.timeout,
            stall_s=args.window * 3,
        )
        procs.check_alive()
    first, last = conn.execute(
        "SELECT min(published_at), max(published_at) FROM posts WHERE status = 'published'"
    ).fetchone()
    twice = conn.execute(
        "SELECT count(*) FROM (SELECT post_id FROM attempts WHERE outcome = 'published' "
        "GROUP BY post_id HAVING count(*) > 1) d"
    ).fetchone()[0]
    conn.close()
    usage = sandbox.control("GET", "/usage")["pages"].get(page_id, {})
    drain = (last - t0).total_seconds() if last else float("nan")
    return {
        "published": done,
        "drain_s": drain,
        "throttled": usage.get("throttled_total", 0),
        "twice": twice,
        "first_s": (first - t0).total_seconds() if first else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=2_000, help="Page calls per window")
    parser.add_argument("--window", type=int, default=30, help="the rolling window, seconds")
    parser.add_argument("--modes", default="on", help="on, off or on,off")
    parser.add_argument("--latency-ms", type=int, default=50, help="sandbox time per publish")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800)
    defaults = Settings.model_fields
    args = parser.parse_args(argv)
    args.publish_concurrency = defaults["publish_concurrency"].default
    args.dispatch_batch = defaults["dispatch_batch"].default
    args.message_batch = defaults["message_batch"].default

    console.print(f"[bold]pacing[/bold]: {machine_line()}")
    minimum = (math.ceil(args.posts / args.budget) - 1) * args.window
    at_ceiling = (math.ceil(args.posts / (0.9 * args.budget)) - 1) * args.window
    console.print(
        f"  {args.posts:,} posts for one Page; its budget {args.budget:,} calls per rolling "
        f"{args.window} s; theoretical minimum {minimum} s (at a 90 % ceiling {at_ceiling} s)"
    )
    results = {}
    with process_group() as procs:
        sandbox = start_sandbox(procs)
        for mode in args.modes.split(","):
            results[mode] = run(sandbox, args, pacing=mode == "on")
    table = Table(title=f"pacing at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    for column in (
        "offpost",
        "published",
        "throttled calls",
        "drain s",
        "x minimum",
        "x minimum at 90 %",
        "published twice",
    ):
        table.add_column(column, justify="left" if column == "offpost" else "right")
    for mode, r in results.items():
        table.add_row(
            f"pacing {mode}",
            f"{r['published']:,}",
            f"{r['throttled']:,}",
            f"{r['drain_s']:.1f}",
            f"{r['drain_s'] / minimum:.2f}" if minimum else "-",
            f"{r['drain_s'] / at_ceiling:.2f}" if at_ceiling else "-",
            str(r["twice"]),
        )
    console.print(table)


if __name__ == "__main__":
    main()

"""Benchmark 4: ingest through the HTTP API, one post per request and in batches.

    python -m bench.ingest                         # 20 s each: /v1/posts, /v1/posts/batch
    python -m bench.ingest --seconds 5             # a quick check

``offpost api`` runs as its own process (one uvicorn process, as the CLI starts
it) on the benchmark database; the load comes from this process with asyncio
and httpx: ``--clients`` (16) concurrent clients each sending ``POST /v1/posts``
one after the other, then ``--batch-clients`` (4) sending ``POST
/v1/posts/batch`` with ``--batch-size`` (1000) posts each. The client's quotas
are raised out of the way. Reported: posts per second, request
latency p50/p99, and the batch route's ratio to the single route (the baseline
of this benchmark). Target: ≥ 10,000 posts/s batched.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
from rich.table import Table

from bench.common import (
    OFFPOST,
    connect,
    console,
    flush_redis,
    free_port,
    fresh_database,
    machine_line,
    make_tenant,
    offpost_env,
    percentile,
    process_group,
    start_sandbox,
    utcnow,
)


async def load(
    url: str,
    key: str,
    body_for: Any,
    path: str,
    clients: int,
    seconds: float,
    posts_per_request: int,
) -> tuple[int, list[float], int]:
    """``clients`` loops sending ``path`` for ``seconds``: (posts created, latencies, errors)."""
    created = 0
    errors = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    ) as http:

        async def one(n: int) -> None:
            nonlocal created, errors
            i = 0
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await http.post(path, json=body_for(n, i))
                latencies.append(time.perf_counter() - start)
                if response.status_code == 201:
                    created += posts_per_request
                else:
                    errors += 1
                    if errors <= 3:
                        console.print(f"  {response.status_code}: {response.text[:300]}")
                i += 1

        await asyncio.gather(*(one(n) for n in range(clients)))
    return created, latencies, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per route")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    console.print(f"[bold]ingest[/bold]: {machine_line()}")
    fresh_database()
    flush_redis()
    with process_group() as procs:
        sandbox = start_sandbox(procs)
        tenant = make_tenant(sandbox, pages=20)
        port = free_port()
        # The client's quotas out of the way (they are still counted on every request).
        env = offpost_env(
            sandbox,
            tenant,
            OFFPOST_RATE_LIMIT_PER_MINUTE="100000000",
            OFFPOST_QUOTA_POSTS_PER_DAY="100000000",
            OFFPOST_QUOTA_PENDING_POSTS="100000000",
        )
        procs.start("api", [OFFPOST, "api", "--port", str(port)], env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                procs.check_alive()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        publish_at = (utcnow() + timedelta(days=2)).isoformat()
        pages = tenant.pages

        def post(n: int, i: int) -> dict[str, Any]:
            return {
                "credential_id": tenant.credential_id,
                "target": pages[(n + i) % len(pages)],
                "message": f"ingest {n}-{i}",
                "publish_at": publish_at,
            }

        def batch(n: int, i: int) -> dict[str, Any]:
            return {"posts": [post(n, i * args.batch_size + j) for j in range(args.batch_size)]}

        rows = []
        for name, path, body, clients, per in (
            ("POST /v1/posts", "/v1/posts", post, args.clients, 1),
            ("POST /v1/posts/batch", "/v1/posts/batch", batch, args.batch_clients, args.batch_size),
        ):
            console.print(f"  {name}: {clients} clients, {args.seconds:g} s")
            start = time.perf_counter()
            created, latencies, errors = asyncio.run(
                load(url, tenant.api_key, body, path, clients, args.seconds, per)
            )
            elapsed = time.perf_counter() - start
            rows.append((name, clients, per, created, elapsed, latencies, errors))
        procs.check_alive()
    with connect() as conn:
        stored = conn.execute("SELECT count(*) FROM posts").fetchone()
    table = Table(title="ingest through the HTTP API (one uvicorn process)")
    for col in (
        "route",
        "clients",
        "posts/request",
        "posts",
        "s",
        "posts/s",
        "x single",
        "request p50 ms",
        "request p99 ms",
        "errors",
    ):
        table.add_column(col, justify="left" if col == "route" else "right")
    single_rate = rows[0][3] / rows[0][4]
    for name, clients, per, created, elapsed, latencies, errors in rows:
        rate = created / elapsed
        table.add_row(
            name,
            str(clients),
            str(per),
            f"{created:,}",
            f"{elapsed:.1f}",
            f"{rate:,.0f}",
            f"{rate / single_rate:.1f}",
            f"{1000 * percentile(latencies, 50):.1f}",
            f"{1000 * percentile(latencies, 99):.1f}",
            str(errors),
        )
    console.print(table)
    console.print(f"  rows in posts afterwards: {stored[0] if stored else '?':,}")
    batch_rate = rows[1][3] / rows[1][4]
    verdict = "met" if batch_rate >= 10_000 else "MISSED"
    console.print(f"target ≥ 10,000 posts/s batched: {verdict} ({batch_rate:,.0f} posts/s)")


if __name__ == "__main__":
    main()

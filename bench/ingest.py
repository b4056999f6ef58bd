"""Benchmark 4: ingest through the HTTP API, one post per request and in batches.

    python -m bench.ingest                         # 20 s each: /v1/posts, /v1/posts/batch
    python -m bench.ingest --seconds 5             # a quick check
    python -m bench.ingest --seconds 10 --routes single --rounds 3 \\
        --baseline-src /tmp/ingest-base/src        # this tree against another checkout

``offpost api`` runs as its own process (one uvicorn process, as the CLI starts
it) on the benchmark database; the load comes from this process with asyncio
and httpx: ``--clients`` (16) concurrent connections of one API client each
sending ``POST /v1/posts`` one after the other, then ``--batch-clients`` (4)
sending ``POST /v1/posts/batch`` with ``--batch-size`` (1000) posts each. The
client's quotas are raised out of the way (they are still counted on every
request). Reported: posts per second, request latency p50/p99, the API
process's CPU per request, and the batch route's ratio to the single route (the
baseline of this benchmark). Target: ≥ 10,000 posts/s batched.

``--baseline-src DIR`` runs the same load, in the same invocation, against the
``offpost api`` of another checkout's ``src`` folder (e.g. a ``git worktree``
of the commit before a change; its ``offpost`` package comes first on
``PYTHONPATH``), and prints each route's ratio to it. With ``--rounds N`` the
two alternate N times (baseline first), and the figures of every round are
shown. Every run (a checkout in a round) starts the same way: a fresh database,
a fresh API client and a fresh API process. ``--profile`` records the API
process of this tree with py-spy during the single route
(``bench/.logs/profile-api.txt``, collapsed stacks for ``python -m
bench.profile_summary``). ``--idempotency-keys`` sends an ``Idempotency-Key``
of its own with every request.

The machine is shared: ``BENCH_DB`` and ``BENCH_REDIS`` (bench/common.py) keep
a run off another benchmark's database and Redis DB.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from bench.common import (
    BIN,
    LOGS,
    OFFPOST,
    ROOT,
    Procs,
    Sandbox,
    Tenant,
    connect,
    console,
    cpu_seconds,
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

ROUTES = {
    "single": ("POST /v1/posts", "/v1/posts"),
    "batch": ("POST /v1/posts/batch", "/v1/posts/batch"),
}


async def load(
    url: str,
    key: str,
    body_for: Any,
    path: str,
    clients: int,
    seconds: float,
    posts_per_request: int,
    idempotency_keys: bool = False,
) -> tuple[int, list[float], int]:
    """``clients`` loops sending ``path`` for ``seconds``: (posts created, latencies, errors).

    With ``idempotency_keys``, each request carries an ``Idempotency-Key`` of its own."""
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
                headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotency_keys else None
                response = await http.post(path, json=body_for(n, i), headers=headers)
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


@dataclass
class Run:
    """One route's load against one checkout's API."""

    checkout: str
    round: int
    route: str
    clients: int
    per_request: int
    created: int
    elapsed: float
    latencies: list[float]
    errors: int
    api_cpu_s: float

    @property
    def rate(self) -> float:
        return self.created / self.elapsed

    @property
    def requests(self) -> int:
        return len(self.latencies)


class Profiler:
    """py-spy (``--gil``, collapsed stacks) on the API process while the single route runs."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        self.proc = subprocess.Popen(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(self.out),
                "--nonblocking",
                "--gil",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(2)
        self.proc.wait(timeout=60)
        console.print(f"  profile: {self.out}")


def start_api(procs: Procs, name: str, env: dict[str, str]) -> str:
    """``offpost api`` on a free port with ``env``; its URL once it answers."""
    port = free_port()
    procs.start(name, [OFFPOST, "api", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return url
        except httpx.HTTPError:
            procs.check_alive()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_checkout(
    procs: Procs,
    sandbox: Sandbox,
    args: argparse.Namespace,
    checkout: str,
    src: str | None,
    round_: int,
) -> list[Run]:
    """Every route of ``args.routes`` against a fresh API process of one checkout, on a
    fresh database (the same start for every run: no other run's rows, no statistics)."""
    fresh_database()
    flush_redis()
    tenant: Tenant = make_tenant(sandbox, pages=20)
    env = offpost_env(
        sandbox,
        tenant,
        # The client's quotas out of the way (they are still counted on every request).
        OFFPOST_RATE_LIMIT_PER_MINUTE="100000000",
        OFFPOST_QUOTA_POSTS_PER_DAY="100000000",
        OFFPOST_QUOTA_PENDING_POSTS="100000000",
    )
    if src is not None:
        env["PYTHONPATH"] = f"{src}:{ROOT}"
    name = f"api-{checkout}"
    url = start_api(procs, name, env)
    pid = procs.procs[name].pid
    publish_at = (utcnow() + timedelta(days=2)).isoformat()
    pages = tenant.pages

    def post(n: int, i: int) -> dict[str, Any]:
        return {
            "credential_id": tenant.credential_id,
            "target": pages[(n + i) % len(pages)],
            "message": f"ingest {checkout} {round_} {n}-{i}",
            "publish_at": publish_at,
        }

    def batch(n: int, i: int) -> dict[str, Any]:
        return {"posts": [post(n, i * args.batch_size + j) for j in range(args.batch_size)]}

    bodies: dict[str, tuple[Callable[[int, int], dict[str, Any]], int, int]] = {
        "single": (post, args.clients, 1),
        "batch": (batch, args.batch_clients, args.batch_size),
    }
    runs = []
    try:
        for route in args.routes:
            body, clients, per = bodies[route]
            label, path = ROUTES[route]
            console.print(
                f"  {checkout} round {round_}: {label}, {clients} connections, {args.seconds:g} s"
            )
            profile = args.profile and route == "single" and src is None and round_ == 1
            cpu0 = cpu_seconds(pid)
            start = time.perf_counter()
            coroutine = load(
                url, tenant.api_key, body, path, clients, args.seconds, per, args.idempotency_keys
            )
            if profile:
                with Profiler(pid, LOGS / "profile-api.txt"):
                    result = asyncio.run(coroutine)
            else:
                result = asyncio.run(coroutine)
            elapsed = time.perf_counter() - start
            created, latencies, errors = result
            cpu = cpu_seconds(pid) - cpu0
            runs.append(
                Run(checkout, round_, label, clients, per, created, elapsed, latencies, errors, cpu)
            )
        procs.check_alive()
    finally:
        procs.stop(name)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per route")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--routes",
        default="single,batch",
        type=lambda text: [r.strip() for r in text.split(",") if r.strip()],
        help="single, batch or both (default)",
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="another checkout's src folder: the same load against its offpost api, same run",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --baseline-src: alternate this many times"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the API during the single route"
    )
    parser.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="send an Idempotency-Key of its own with every request",
    )
    args = parser.parse_args(argv)
    unknown = set(args.routes) - set(ROUTES)
    if unknown or not args.routes:
        parser.error(f"--routes: single and/or batch, not {', '.join(sorted(unknown))}")
    if args.baseline_src is not None and not (Path(args.baseline_src) / "offpost").is_dir():
        parser.error(f"--baseline-src: no offpost package in {args.baseline_src}")
    console.print(f"[bold]ingest[/bold]: {machine_line()}")
    checkouts: list[tuple[str, str | None]] = [("this", None)]
    if args.baseline_src is not None:
        checkouts.insert(0, ("baseline", str(Path(args.baseline_src).resolve())))
        console.print(f"  baseline: offpost from {checkouts[0][1]}")
    runs: list[Run] = []
    with process_group() as procs:
        sandbox = start_sandbox(procs)
        for round_ in range(1, args.rounds + 1):
            for checkout, src in checkouts:
                runs += run_checkout(procs, sandbox, args, checkout, src, round_)
    with connect() as conn:
        stored = conn.execute("SELECT count(*) FROM posts").fetchone()

    table = Table(title="ingest through the HTTP API (one uvicorn process)")
    for col in (
        "checkout",
        "round",
        "route",
        "clients",
        "posts/request",
        "posts",
        "s",
        "posts/s",
        "x single",
        "request p50 ms",
        "request p99 ms",
        "API CPU ms/request",
        "errors",
    ):
        table.add_column(col, justify="left" if col in ("route", "checkout") else "right")
    for run in runs:
        single = next(
            r for r in runs if r.checkout == run.checkout and r.round == run.round
        )  # the first route of the same API process
        table.add_row(
            run.checkout,
            str(run.round),
            run.route,
            str(run.clients),
            str(run.per_request),
            f"{run.created:,}",
            f"{run.elapsed:.1f}",
            f"{run.rate:,.0f}",
            f"{run.rate / single.rate:.1f}" if single.route == ROUTES["single"][0] else "",
            f"{1000 * percentile(run.latencies, 50):.1f}",
            f"{1000 * percentile(run.latencies, 99):.1f}",
            f"{1000 * run.api_cpu_s / max(1, run.requests):.2f}",
            str(run.errors),
        )
    console.print(table)
    console.print(f"  rows in posts after the last run: {stored[0] if stored else '?':,}")
    if args.baseline_src is not None:
        for label, _ in (ROUTES[r] for r in args.routes):
            base = [r.rate for r in runs if r.checkout == "baseline" and r.route == label]
            this = [r.rate for r in runs if r.checkout == "this" and r.route == label]
            pairs = ", ".join(f"{t / b:.2f}" for b, t in zip(base, this, strict=True))
            console.print(
                f"  {label}: baseline {statistics.median(base):,.0f} posts/s, this tree "
                f"{statistics.median(this):,.0f} posts/s (medians): "
                f"[bold]{statistics.median(this) / statistics.median(base):.2f}x[/bold] "
                f"(per round: {pairs})"
            )
    if "batch" in args.routes:
        batch_rate = statistics.median(
            r.rate for r in runs if r.checkout == "this" and r.route == ROUTES["batch"][0]
        )
        verdict = "met" if batch_rate >= 10_000 else "MISSED"
        console.print(f"target ≥ 10,000 posts/s batched: {verdict} ({batch_rate:,.0f} posts/s)")


if __name__ == "__main__":
    main()

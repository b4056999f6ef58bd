"""The naive baseline most people write first: one Celery task per post, ``eta=publish_at``.

Its own Celery app (queue ``bench_naive`` on the benchmarks' Redis DB), run as::

    python -m celery -A bench.baseline_celery worker --pool threads --concurrency 64 -Q bench_naive

Each task calls the Graph sandbox with httpx (Page token and ``appsecret_proof``,
as offpost does) and writes its outcome to its own table. It has none of
offpost's guarantees (no claim, no lease, no attempt row, no reconciliation):
it is the speed to beat, not a design to copy. Page tokens come from
``BENCH_PAGE_TOKENS`` (JSON), read once per process: cheaper than offpost's
per-post credential read, which favours the baseline.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from celery import Celery

from offpost.graph.proof import appsecret_proof

QUEUE = "bench_naive"
TASK = "bench.naive.publish"
TABLE = "naive_outcomes"
#: Tries of one Graph call that got no answer at all.
TRANSPORT_ATTEMPTS = 5

app = Celery(
    "bench_naive",
    broker=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/11"),
    set_as_current=False,
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


class Publisher:
    """Per-process resources of a baseline: one HTTP client, one DB connection per thread."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.graph_url = os.environ["BENCH_GRAPH_URL"].rstrip("/") + "/v26.0"
        self.secret = os.environ["BENCH_APP_SECRET"]
        self.tokens: dict[str, str] = json.loads(os.environ["BENCH_PAGE_TOKENS"])
        self.db_url = os.environ["BENCH_DB_URL"]
        self.http = httpx.Client(
            timeout=15, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        )
        self.local = threading.local()

    def conn(self) -> psycopg.Connection[Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.db_url, autocommit=True)
            self.local.conn = conn
        return conn

    def publish(self, post_id: str, page_id: str, message: str, publish_at: str) -> None:
        token = self.tokens[page_id]
        response = None
        # A transport error on the shared client (a connection the server closed) is
        # retried, as any real deployment would; an answer of any status is final.
        for attempt in range(TRANSPORT_ATTEMPTS):
            try:
                response = self.http.post(
                    f"{self.graph_url}/{page_id}/feed",
                    data={
                        "message": message,
                        "access_token": token,
                        "appsecret_proof": appsecret_proof(self.secret, token),
                    },
                )
                break
            except httpx.TransportError:
                if attempt + 1 == TRANSPORT_ATTEMPTS:
                    break  # recorded as not ok below: never lost from the count
                time.sleep(0.2 * 2**attempt)
        ok = response is not None and response.status_code == 200
        graph_id = response.json().get("id") if ok and response is not None else None
        self.conn().execute(
            f"INSERT INTO {self.table} (post_id, publish_at, done_at, graph_id, ok) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (post_id) DO NOTHING",
            (post_id, datetime.fromisoformat(publish_at), datetime.now(UTC), graph_id, ok),
        )


_publisher: Publisher | None = None
_lock = threading.Lock()


def publisher(table: str) -> Publisher:
    global _publisher  # noqa: PLW0603 - one per process, built on first use
    with _lock:
        if _publisher is None:
            _publisher = Publisher(table)
        return _publisher


@app.task(name=TASK)
def publish(post_id: str, page_id: str, message: str, publish_at: str) -> None:
    publisher(TABLE).publish(post_id, page_id, message, publish_at)


def worker_argv() -> list[str]:
    """The naive baseline's Celery worker: 64 threads on a queue of its own."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.baseline_celery",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "64",
        "-Q",
        QUEUE,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
    ]


def create_outcome_table(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(
        f"CREATE TABLE {table} (post_id text PRIMARY KEY, publish_at timestamptz NOT NULL, "
        "done_at timestamptz NOT NULL, graph_id text, ok boolean NOT NULL)"
    )


def enqueue(posts: list[tuple[str, str, str]], eta: datetime) -> None:
    """One task per post with ``eta``: what the naive API handler does on each insert."""
    enqueue_at([(post_id, page_id, message, eta) for post_id, page_id, message in posts])


def enqueue_at(posts: list[tuple[str, str, str, datetime]]) -> None:
    for post_id, page_id, message, eta in posts:
        app.send_task(TASK, args=[post_id, page_id, message, eta.isoformat()], eta=eta, queue=QUEUE)

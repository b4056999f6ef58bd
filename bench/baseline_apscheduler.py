"""Baseline (b): APScheduler 3 with its SQLAlchemy job store on the same PostgreSQL.

One date job per post in ``apscheduler_jobs``, a thread pool of 64, run as its
own process::

    python -m bench.baseline_apscheduler

(environment: ``BENCH_DB_URL``, ``BENCH_GRAPH_URL``, ``BENCH_APP_SECRET``,
``BENCH_PAGE_TOKENS``). ``misfire_grace_time=None`` so that no late job is
dropped. The job does what the Celery baseline's task does (Graph call, outcome
row in ``aps_outcomes``). Jobs are written by :func:`copy_jobs` in exactly the
pickled form ``SQLAlchemyJobStore.add_job`` writes, but with COPY: adding a
million jobs one ``add_job`` at a time would take longer than the benchmark.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.baseline_celery import publisher

TABLE = "aps_outcomes"
JOBS_TABLE = "apscheduler_jobs"
FUNC_REF = "bench.baseline_apscheduler:publish"


def publish(post_id: str, page_id: str, message: str, publish_at: str) -> None:
    publisher(TABLE).publish(post_id, page_id, message, publish_at)


def sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def create_job_table(db_url: str) -> None:
    """The job store's own table, created the way the job store creates it."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    store = SQLAlchemyJobStore(url=sa_url(db_url), tablename=JOBS_TABLE)
    store.jobs_t.create(store.engine, True)
    store.engine.dispose()


def copy_jobs(
    conn: psycopg.Connection[Any],
    posts: Iterator[tuple[str, str, str, datetime]],
    count: int,
    progress: Any,
    label: str,
) -> None:
    """COPY one pickled date job per post (id, page, message, run time) into the job store."""
    from apscheduler.triggers.date import DateTrigger

    task = progress.add_task(label, total=count)
    done = 0
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {JOBS_TABLE} (id, next_run_time, job_state) FROM STDIN") as copy,
    ):
        for post_id, page_id, message, at in posts:
            state = {
                "version": 1,
                "id": post_id,
                "func": FUNC_REF,
                "trigger": DateTrigger(run_date=at, timezone=UTC),
                "executor": "default",
                "args": (post_id, page_id, message, at.isoformat()),
                "kwargs": {},
                "name": "publish",
                "misfire_grace_time": None,
                "coalesce": False,
                "max_instances": 1,
                "next_run_time": at,
            }
            copy.write_row((post_id, at.timestamp(), pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))
            done += 1
            if done % 20_000 == 0:
                progress.update(task, completed=done)
    progress.update(task, completed=done)


def main() -> None:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    logging.basicConfig(level=logging.WARNING)
    scheduler = BackgroundScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(
                url=sa_url(os.environ["BENCH_DB_URL"]), tablename=JOBS_TABLE
            )
        },
        executors={"default": ThreadPoolExecutor(64)},
        job_defaults={"misfire_grace_time": None, "coalesce": False},
        timezone=UTC,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    publisher(TABLE)  # connect before the first job, as a long-running service would have
    scheduler.start()
    print(f"apscheduler ready at {datetime.now(UTC).isoformat()}", flush=True)
    while not stop.is_set():
        time.sleep(0.2)
    scheduler.shutdown(wait=False)


if __name__ == "__main__":
    main()

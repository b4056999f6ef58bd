"""``offpost dispatcher``, ``offpost worker`` and ``offpost webhooks``: the long-running roles
besides the API. With ``OFFPOST_METRICS_PORT`` each serves its own ``/metrics`` there."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING

import click

from offpost.cli.common import one_line_errors, process_settings
from offpost.media.store import make_media_store
from offpost.settings import Settings

if TYPE_CHECKING:
    from offpost.workers.app import WorkerConfig

logger = logging.getLogger(__name__)


def worker_config(settings: Settings) -> WorkerConfig:
    """The plain values a worker process needs, from the settings."""
    from offpost.workers.app import WorkerConfig
    from offpost.workers.pacing import PacingConfig

    settings.require("app_id", "app_secret", "encryption_keys")
    assert settings.app_id is not None
    assert settings.app_secret is not None
    return WorkerConfig(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        encryption_keys=settings.encryption_key_list(),
        graph_url=settings.graph_url,
        graph_version=settings.graph_version,
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value(),
        appsecret_time=settings.appsecret_time,
        graph_timeout_s=settings.graph_timeout_s,
        lease_s=settings.lease_s,
        retry_base_s=settings.retry_base_s,
        retry_cap_s=settings.retry_cap_s,
        publish_concurrency=settings.publish_concurrency,
        queue=settings.queue,
        webhook_timeout_s=settings.webhook_timeout_s,
        webhook_retry_base_s=settings.webhook_retry_base_s,
        webhook_retry_cap_s=settings.webhook_retry_cap_s,
        webhook_retry_for_s=settings.webhook_retry_for_s,
        webhook_allow_private=settings.webhook_allow_private,
        metrics_dir=settings.metrics_dir,
        make_media=partial(make_media_store, settings),
        url_video_settle_s=settings.url_video_settle_s,
        graph_batch=settings.graph_batch_size if settings.graph_batch else 0,
        pacing=PacingConfig.of(settings),
        insights_after=settings.insights_after,
        insights_per_minute=settings.insights_per_minute,
    )


def _serve_metrics(settings: Settings, config: WorkerConfig) -> WorkerConfig:
    """With ``OFFPOST_METRICS_PORT``: serve this role's /metrics there, and have the
    pool's processes write their values where it reads them."""
    if settings.metrics_port is None:
        return config
    from offpost.workers.metrics import serve_role_metrics

    directory = serve_role_metrics(
        settings.metrics_port, settings.metrics_host, settings.metrics_dir
    )
    return dataclasses.replace(config, metrics_dir=directory)


def _check_schema(settings: Settings) -> None:
    from offpost.models import make_engine
    from offpost.models.migrate import ensure_schema_current

    engine = make_engine(settings.database_url)
    try:
        ensure_schema_current(engine)
    finally:
        engine.dispose()


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@one_line_errors
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker that publishes posts; extra arguments go to `celery worker`.

    For example: offpost worker --concurrency 4 --loglevel INFO
    """
    from offpost.workers.app import make_worker_app

    settings = process_settings()
    config = _serve_metrics(settings, worker_config(settings))
    _check_schema(settings)
    app = make_worker_app(config)
    # The publishing queue only: webhook deliveries have their own (offpost webhooks).
    argv = ["worker", "--queues", settings.queue, *celery_args]
    if not any(a.startswith(("-l", "--loglevel")) for a in celery_args):
        argv += ["--loglevel", "INFO"]
    app.worker_main(argv)


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@one_line_errors
def webhooks(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker that delivers webhook events; extra arguments go to `celery worker`.

    Deliveries have their own queue and pool (OFFPOST_WEBHOOK_CONCURRENCY threads), so a
    slow receiver never holds a slot a post is waiting for. Run it beside the workers.
    """
    from offpost.workers.app import make_worker_app
    from offpost.workers.webhooks import webhook_queue

    settings = process_settings()
    config = _serve_metrics(settings, worker_config(settings))
    _check_schema(settings)
    app = make_worker_app(config)
    argv = [
        "worker",
        "--queues",
        webhook_queue(settings.queue),
        "--pool",
        "threads",
        "--concurrency",
        str(settings.webhook_concurrency),
        "--hostname",
        "webhooks@%h",
        *celery_args,
    ]
    if not any(a.startswith(("-l", "--loglevel")) for a in celery_args):
        argv += ["--loglevel", "INFO"]
    app.worker_main(argv)


@click.command()
@one_line_errors
def dispatcher() -> None:
    """Run a dispatcher: sends due posts to the workers (run as many as you like)."""
    from offpost.connections import redis_probe
    from offpost.models import make_engine, make_sessionmaker
    from offpost.scheduler.dispatcher import Dispatcher, DispatcherConfig
    from offpost.scheduler.housekeeping import build_housekeeping
    from offpost.scheduler.wake import make_waker
    from offpost.workers.app import make_celery, send_publish
    from offpost.workers.followups import send_followups
    from offpost.workers.insights import send_insights
    from offpost.workers.webhooks import send_deliveries

    settings = process_settings()
    metrics = None
    if settings.metrics_port is not None:
        from offpost.workers.metrics import role_metrics, serve_role_metrics

        metrics = role_metrics(
            serve_role_metrics(settings.metrics_port, settings.metrics_host, settings.metrics_dir)
        )
    _check_schema(settings)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    celery_app = make_celery(settings.broker_url, lease_s=settings.lease_s, queue=settings.queue)
    waker = make_waker(settings.broker_url)
    probe = redis_probe(settings.broker_url)
    housekeeping, close_housekeeping = build_housekeeping(
        settings,
        sessions,
        partial(send_deliveries, celery_app),
        partial(send_followups, celery_app),
        partial(send_insights, celery_app),
    )
    loop = Dispatcher(
        sessions,
        lambda ids: send_publish(celery_app, ids),
        config=DispatcherConfig(
            dispatch_batch=settings.dispatch_batch,
            message_batch=settings.message_batch,
            requeue_after=timedelta(seconds=settings.requeue_after_s),
            max_sleep_s=settings.dispatcher_max_sleep_s,
        ),
        waker=waker,
        # Schedules, webhook deliveries and the daily token check, before each claim.
        before_tick=housekeeping,
        check_broker=probe.ping if probe is not None else None,
        metrics=metrics,
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after this tick", signum)
        stop.set()
        waker.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        loop.run(stop)
    finally:
        waker.close()
        if probe is not None:
            probe.close()
        close_housekeeping()
        engine.dispose()

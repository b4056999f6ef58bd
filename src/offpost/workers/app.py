"""The Celery app: its settings against lost and duplicated deliveries, and the publish task.

The broker carries only "publish these posts now" (docs/design.md). Exactly-once
rests on the database, not on the broker: a message may arrive twice (the
claim drops the second) or never (the dispatcher re-sends ``queued`` rows that
sat too long). The settings below narrow both windows.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from offpost.connections import DATABASE, ConnectionWatch
from offpost.graph.client import GraphClient, make_http_client
from offpost.media.store import MediaStore
from offpost.models import PostInsight, make_engine, make_sessionmaker
from offpost.models.base import utcnow
from offpost.models.clock import DatabaseClock
from offpost.models.webhook_event import EventType
from offpost.outbox import record_post_event
from offpost.settings import parse_insight_ages
from offpost.workers import ratelimit
from offpost.workers.batch import publish_batch
from offpost.workers.broker import TRANSPORT as PATCHED_REDIS_TRANSPORT
from offpost.workers.decide import RetryPolicy
from offpost.workers.followups import (
    FollowupContext,
    FollowupOutbox,
    FollowupRuntime,
    install_followup_task,
    make_followup_context,
)
from offpost.workers.insights import (
    InsightsRuntime,
    InsightsScheduler,
    install_insights_task,
    make_insights_context,
)
from offpost.workers.metrics import metrics_observer
from offpost.workers.observe import (
    NullObserver,
    Observers,
    Outcome,
    PacingObserver,
    PublishObserver,
)
from offpost.workers.pacing import PacingConfig, make_pacer
from offpost.workers.publish import PublishContext
from offpost.workers.runtime import ProcessResource
from offpost.workers.webhooks import (
    DeliveryContext,
    DeliveryPolicy,
    DeliveryRuntime,
    WebhookOutbox,
    install_webhook_task,
    make_delivery_context,
)

logger = logging.getLogger(__name__)

PUBLISH_TASK = "offpost.publish"
#: The Celery queue unless ``OFFPOST_QUEUE`` names another.
QUEUE = "offpost"


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs, as plain values (the CLI maps the settings onto it)."""

    database_url: str
    broker_url: str
    encryption_keys: list[str]
    graph_url: str
    graph_version: str
    app_id: str
    app_secret: str
    appsecret_time: bool
    graph_timeout_s: float
    lease_s: int
    retry_base_s: float
    retry_cap_s: float
    publish_concurrency: int
    #: The Celery queue this deployment sends to and consumes.
    queue: str = QUEUE
    #: Where this machine's processes share their Prometheus values (None: per process).
    metrics_dir: str | None = None
    #: Webhook delivery (docs/webhooks.md).
    webhook_timeout_s: float = 10.0
    webhook_retry_base_s: float = 30.0
    webhook_retry_cap_s: float = 3600.0
    webhook_retry_for_s: float = 86400.0
    #: Let webhooks reach private addresses over http too (development and tests).
    webhook_allow_private: bool = False
    #: Opens the media store uploads are read from (called once per worker process).
    make_media: Callable[[], MediaStore] | None = None
    #: After a video by URL whose answer was lost, the least wait before it is looked for.
    url_video_settle_s: float = 600.0
    #: Publishes per Graph batch request; below 2, each publish is a request of its own.
    graph_batch: int = 50
    #: Pacing under Graph's rate limits (docs/pacing.md).
    pacing: PacingConfig = field(default_factory=PacingConfig)
    #: When a published post's insights are fetched, and how fast (docs/insights.md).
    insights_after: str = "1h,24h,7d"
    insights_per_minute: int = 60


def make_celery(broker_url: str, *, lease_s: int = 120, queue: str = QUEUE) -> Celery:
    """A Celery app for ``broker_url`` with offpost's delivery settings."""
    app = Celery("offpost", broker=broker_url, set_as_current=False)
    app.conf.update(
        # JSON only: a broker message can never make a worker unpickle code.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # The outcome lives in the database; a result backend would only add writes.
        task_ignore_result=True,
        # Several deployments (or test runs) may share one Redis: each its own queue.
        task_default_queue=queue,
        # Ack after the task ran, not when it was received: a worker killed mid-task
        # leaves its message to be redelivered (the claim then drops it if the post
        # moved on, and the lease reaper reconciles whatever was in flight).
        task_acks_late=True,
        # ...and a pool child killed by a signal (OOM, SIGKILL) requeues its message
        # instead of acking it as failed.
        task_reject_on_worker_lost=True,
        # Hold at most one message beyond the one running: a dead worker strands
        # little, and a backlog spreads over all workers.
        worker_prefetch_multiplier=1,
        # Redis redelivers an unacked message after the visibility timeout. Longer
        # than any task may run (its time limit), so a slow task is not duplicated
        # needlessly; duplicates are harmless anyway (guarded claim).
        broker_transport_options={"visibility_timeout": lease_s + 300},
        # A task never outlives its posts' leases by much: past the hard limit the
        # child is killed, and the reaper takes the posts back after their leases.
        task_soft_time_limit=lease_s,
        task_time_limit=lease_s + 60,
        # Flower and `celery events` see the workers (the operators' view).
        worker_send_task_events=True,
        task_send_sent_event=True,
        # A broker that restarts or stays away costs reconnect attempts (Celery logs
        # "Connection to broker lost", then "Connected to ..."), never the
        # worker: without a limit, it retries until Redis is back.
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # A task running when the connection drops runs to its end; its message
        # comes back and the claim drops the duplicate. (Celery 6 flips the default.)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
    )
    if broker_url.startswith("redis://"):
        # kombu's Redis transport, but a Redis restart cannot stop a worker
        # (offpost.workers.broker says how it could).
        app.conf.broker_transport = PATCHED_REDIS_TRANSPORT
    return app


#: A message whose posts could not be claimed because the database was unreachable
#: comes back this often, this many times; past that, the dispatcher re-sends its
#: posts after ``OFFPOST_REQUEUE_AFTER_S`` as stale.
UNREACHABLE_RETRY_S = 2.0
UNREACHABLE_RETRIES = 30

#: The most connections one worker process keeps to PostgreSQL (the default pool's 5 + 10).
MAX_WORKER_CONNECTIONS = 20


def worker_pool_options(database_url: str, publish_concurrency: int) -> dict[str, Any]:
    """A connection pool that keeps what the publish threads use, instead of churning it.

    SQLAlchemy's default pool keeps 5 connections and closes each of its 10
    "overflow" connections as soon as it is returned: with more publish threads
    than 5, nearly every short transaction opened a new PostgreSQL connection (a
    backend process) and closed it again. Here the pool keeps them all, with the
    same bound on how many exist (threads beyond it wait for one, as before).
    """
    if make_url(database_url).get_backend_name() != "postgresql":
        return {}
    size = min(publish_concurrency + 4, MAX_WORKER_CONNECTIONS)
    return {"pool_size": size, "max_overflow": 0}


def build_context(config: WorkerConfig, observer: PublishObserver | None = None) -> PublishContext:
    """A worker process's resources: engine, one Graph client, the shared limiter."""
    engine = make_engine(
        config.database_url,
        encryption_keys=config.encryption_keys,
        **worker_pool_options(config.database_url, config.publish_concurrency),
    )
    sessions = make_sessionmaker(engine)
    # Every time this worker writes (attempts, retries) or signs (a timed
    # appsecret_proof) is on the database's clock, not on this machine's.
    clock = DatabaseClock(sessions)
    graph = GraphClient(
        # One pool per publish thread (see PerThreadTransport), one connection each.
        make_http_client(config.graph_timeout_s, per_thread=True),
        graph_url=config.graph_url,
        version=config.graph_version,
        app_id=config.app_id,
        app_secret=config.app_secret,
        appsecret_time=config.appsecret_time,
        clock=clock.timestamp,
    )
    blocks = ratelimit.block_store(config.broker_url)
    observer = observer or NullObserver()
    pacer = make_pacer(
        config.broker_url,
        config.pacing,
        clock=clock.timestamp,
        observer=observer if isinstance(observer, PacingObserver) else None,
    )
    return PublishContext(
        sessions=sessions,
        clock=clock,
        graph=graph,
        blocks=blocks,
        app_id=config.app_id,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        lease=timedelta(seconds=config.lease_s),
        retry=RetryPolicy(config.retry_base_s, config.retry_cap_s),
        timeout_settle_s=config.graph_timeout_s,
        # GraphClient's deadline: a reply ends within about two read timeouts of
        # being sent (a connect timeout means nothing was sent).
        call_bound_s=2 * config.graph_timeout_s,
        pool=ThreadPoolExecutor(config.publish_concurrency, thread_name_prefix="publish"),
        observer=observer,
        pacer=pacer,
        media=config.make_media() if config.make_media is not None else None,
        url_video_settle_s=config.url_video_settle_s,
        graph_batch=config.graph_batch,
    )


class PublishRuntime(ProcessResource[PublishContext]):
    """The per-process :class:`PublishContext`, built after fork and on first use."""

    def stop(self) -> None:
        """Hand back posts not yet started (warm shutdown)."""
        context = self.peek()
        if context is not None:
            context.stopping.set()

    def close(self) -> None:
        context = self.take()
        if context is not None:
            context.stopping.set()
            context.pool.shutdown(wait=True)


def install_publish_task(app: Celery, runtime: PublishRuntime) -> Any:
    """Register ``offpost.publish`` on ``app``, served by ``runtime``'s context."""
    # Which servers this process lost: logged once per outage, not once per task.
    connections = ConnectionWatch()

    @app.task(name=PUBLISH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def publish(task: Any, post_ids: list[str]) -> dict[str, int]:
        try:
            counted = publish_batch(runtime.get(), list(post_ids)).outcomes
            outcomes = {outcome.value: n for outcome, n in counted.items()}
        except Exception as exc:
            if not connections.failed(exc):
                raise
            # When the claim failed, the posts are still queued: ask again soon
            # instead of leaving them to the dispatcher's stale re-send. Posts
            # claimed before the failure are dropped by the claim this time, and
            # reconciled once their leases run out.
            raise task.retry(
                countdown=UNREACHABLE_RETRY_S, max_retries=UNREACHABLE_RETRIES, exc=exc
            ) from None
        if Outcome.CRASHED not in outcomes:
            connections.succeeded(DATABASE)
        return outcomes

    def _after_fork(**_: Any) -> None:
        runtime.reset()

    def _shutting_down(**_: Any) -> None:
        runtime.stop()

    def _process_shutdown(**_: Any) -> None:
        runtime.close()

    # weak=False: the closures live only in these connections.
    worker_process_init.connect(_after_fork, weak=False)
    worker_shutting_down.connect(_shutting_down, weak=False)
    worker_process_shutdown.connect(_process_shutdown, weak=False)
    return publish


def worker_observers(config: WorkerConfig) -> PublishObserver:
    """Everything a worker process tells about outcomes: metrics first."""
    return Observers(
        [
            metrics_observer(config.metrics_dir),
            WebhookOutbox(),
            FollowupOutbox(),
            InsightsScheduler(parse_insight_ages(config.insights_after)),
        ]
    )


def install_worker_tasks(app: Celery, config: WorkerConfig) -> PublishRuntime:
    """Register what a worker serves on ``app``: publishing and webhook deliveries.

    Returns the publish runtime, whose ``close`` an embedding process calls at exit.
    """
    runtime = PublishRuntime(lambda: build_context(config, observer=worker_observers(config)))
    install_publish_task(app, runtime)
    install_webhook_task(
        app, DeliveryRuntime(lambda: webhook_context(config)), metrics_dir=config.metrics_dir
    )
    install_followup_task(app, FollowupRuntime(lambda: followup_context(config)))
    install_insights_task(
        app,
        InsightsRuntime(
            lambda: make_insights_context(
                database_url=config.database_url,
                encryption_keys=config.encryption_keys,
                broker_url=config.broker_url,
                graph_url=config.graph_url,
                graph_version=config.graph_version,
                app_id=config.app_id,
                app_secret=config.app_secret,
                appsecret_time=config.appsecret_time,
                graph_timeout_s=config.graph_timeout_s,
                per_minute=config.insights_per_minute,
            )
        ),
        on_fetched=record_insights_event,
    )
    return runtime


def record_insights_event(session: Session, row: PostInsight) -> None:
    """``post.insights`` for a fetch done, in its transaction."""
    record_post_event(session, row.post_id, EventType.POST_INSIGHTS, utcnow())


def make_worker_app(config: WorkerConfig) -> Celery:
    """The Celery app a worker runs: offpost's delivery settings and its tasks."""
    app = make_celery(config.broker_url, lease_s=config.lease_s, queue=config.queue)
    install_worker_tasks(app, config)
    return app


def followup_context(config: WorkerConfig) -> FollowupContext:
    """A process's resources for follow-ups (docs/after-publishing.md)."""
    return make_followup_context(
        database_url=config.database_url,
        encryption_keys=config.encryption_keys,
        graph_url=config.graph_url,
        graph_version=config.graph_version,
        app_id=config.app_id,
        app_secret=config.app_secret,
        appsecret_time=config.appsecret_time,
        graph_timeout_s=config.graph_timeout_s,
        lease_s=config.lease_s,
        retry=RetryPolicy(config.retry_base_s, config.retry_cap_s),
        blocks=ratelimit.block_store(config.broker_url),
    )


def webhook_context(config: WorkerConfig) -> DeliveryContext:
    """A worker process's webhook delivery resources."""
    return make_delivery_context(
        config.database_url,
        config.encryption_keys,
        timeout_s=config.webhook_timeout_s,
        allow_private=config.webhook_allow_private,
        policy=DeliveryPolicy(
            config.webhook_retry_base_s, config.webhook_retry_cap_s, config.webhook_retry_for_s
        ),
    )


def send_publish(app: Celery, post_ids: list[str]) -> None:
    """Ask a worker to publish these posts now (after their claim committed)."""
    app.send_task(PUBLISH_TASK, args=[post_ids], queue=app.conf.task_default_queue)

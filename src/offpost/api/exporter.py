"""``/metrics``: the Prometheus text the API serves, gathered at scrape time.

Three sources, one page:

- **the workers' counters and histograms** (``offpost.workers.metrics``): with
  ``OFFPOST_METRICS_DIR`` set, summed from the files every process of this
  machine writes there (prometheus_client's multiprocess mode); without it,
  this process's own registry;
- **the database**, read at scrape time (so every replica, on any machine,
  reports the same, correct numbers; aggregate them across replicas with
  ``max``, not ``sum``): posts by status, due-but-not-dispatched and the age
  of the oldest such post, credentials by status;
- **the broker**: the depth of the Celery queue (Redis ``LLEN``; for the
  in-memory broker of ``offpost up``, the queue this process holds; omitted for
  other brokers or when Redis does not answer).

Database numbers are cached for :data:`DB_CACHE_S` seconds per process, so
that many scrapers (or a scrape storm) cost one set of queries.

=============================================  =====  ==================================
metric                                         type   labels
=============================================  =====  ==================================
``offpost_posts``                              gauge  ``status`` (all seven)
``offpost_posts_due_not_dispatched``           gauge  scheduled posts already due
``offpost_posts_due_oldest_age_seconds``       gauge  how long the oldest of them waits
``offpost_credentials``                        gauge  ``status``
``offpost_queue_depth_messages``               gauge  messages waiting in the broker
=============================================  =====  ==================================
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import redis
from kombu.connection import Connection
from kombu.exceptions import ChannelError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from offpost.models import CredentialStatus, PostStatus
from offpost.models.base import utcnow
from offpost.posts.stats import count_credentials, count_posts, due_not_dispatched
from offpost.redact import scrub
from offpost.workers.app import QUEUE
from offpost.workers.metrics import process_registry

logger = logging.getLogger(__name__)

#: How long database numbers are reused between scrapes, per process.
DB_CACHE_S = 5.0
#: kombu's Redis transport keeps a queue's priorities in separate lists: "<queue>",
#: then "<queue>\x06\x16<priority>" for the non-zero priority steps.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


class QueueProbe:
    """Measures the Celery queue's depth: Redis ``LLEN``; the in-process queue of the
    in-memory broker (``offpost up``); ``None`` for other brokers."""

    def __init__(self, broker_url: str, queue: str = QUEUE, timeout_s: float = 2.0) -> None:
        self._redis: redis.Redis | None = None
        self._memory_url: str | None = None
        if broker_url.startswith(("redis://", "rediss://")):
            self._redis = redis.Redis.from_url(
                broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        elif broker_url.startswith("memory://"):
            self._memory_url = broker_url
        self._queue = queue
        self._keys = [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{p}" for p in _PRIORITY_STEPS)]

    def depth(self) -> int | None:
        """Messages waiting (each carries a batch of posts); ``None`` when unknown."""
        if self._memory_url is not None:
            return in_process_depth(self._memory_url, self._queue)
        if self._redis is None:
            return None
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in self._keys:
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())
        except redis.RedisError as exc:
            logger.warning(
                "could not read the queue depth: %s",
                scrub(str(exc)),
                extra={"action": "queue_depth_failed"},
            )
            return None

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def in_process_depth(broker_url: str, queue: str) -> int | None:
    """Messages waiting in ``queue`` of kombu's in-memory broker, as this process holds it.

    That broker lives in one process: ``offpost up`` runs the API, the dispatcher
    that sends and the worker that consumes in it, so its API sees the real
    queue. Anywhere else (``offpost status`` in another process) nothing declared
    the queue here, and the depth is unknown (``None``), not 0. Asked through
    kombu (a passive declare answers the message count), not its internals.
    """
    with Connection(broker_url) as connection:  # type: ignore[no-untyped-call]
        try:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:
            return None
    return int(declared.message_count)


@dataclass(frozen=True)
class DatabaseGauges:
    """The database's numbers at one instant."""

    posts: dict[PostStatus, int]
    due_not_dispatched: int
    due_oldest_age_s: float
    credentials: dict[CredentialStatus, int]


def read_database_gauges(session: Session, now: datetime) -> DatabaseGauges:
    """Posts and credentials by status and the due backlog: three aggregate queries."""
    due, oldest = due_not_dispatched(session, now)
    return DatabaseGauges(
        posts=count_posts(session),
        due_not_dispatched=due,
        due_oldest_age_s=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        credentials=count_credentials(session),
    )


def gauge_families(gauges: DatabaseGauges, queue_depth: int | None) -> list[Metric]:
    """The scrape-time gauges as metric families (pure: no I/O)."""
    posts = GaugeMetricFamily(
        "offpost_posts", "Posts in each status, from the database.", labels=["status"]
    )
    for status, count in gauges.posts.items():
        posts.add_metric([status.value], count)
    due = GaugeMetricFamily(
        "offpost_posts_due_not_dispatched",
        "Scheduled posts already due that no dispatcher has queued yet.",
        value=gauges.due_not_dispatched,
    )
    oldest = GaugeMetricFamily(
        "offpost_posts_due_oldest_age_seconds",
        "How long the oldest due, not yet dispatched post has been due (0 when none).",
        value=gauges.due_oldest_age_s,
    )
    credentials = GaugeMetricFamily(
        "offpost_credentials", "Credentials in each status, from the database.", labels=["status"]
    )
    for cred_status, count in gauges.credentials.items():
        credentials.add_metric([cred_status.value], count)
    families: list[Metric] = [posts, due, oldest, credentials]
    if queue_depth is not None:
        families.append(
            GaugeMetricFamily(
                "offpost_queue_depth_messages",
                "Messages waiting in the broker's Celery queue (each is a batch of posts).",
                value=queue_depth,
            )
        )
    return families


class _ScrapeTimeCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        yield from self._read()


class MetricsExporter:
    """Renders ``/metrics`` for one API process (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queue: QueueProbe,
        *,
        metrics_dir: str | None = None,
        cache_s: float = DB_CACHE_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._metrics_dir = metrics_dir
        if metrics_dir:
            # The API may start before any worker has written a file.
            os.makedirs(metrics_dir, exist_ok=True)
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def _scrape_time_families(self) -> list[Metric]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._cache_s:
                return self._cached[1]
            with self._sessions() as session:
                gauges = read_database_gauges(session, self._clock())
            families = gauge_families(gauges, self._queue.depth())
            self._cached = (time.monotonic(), families)
            return families

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of every source."""
        registry = CollectorRegistry(auto_describe=False)
        if self._metrics_dir:
            MultiProcessCollector(registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
        else:
            own = process_registry()
            registry.register(_ScrapeTimeCollector(own.collect))
        registry.register(_ScrapeTimeCollector(self._scrape_time_families))
        return generate_latest(registry)

"""What workers count for Prometheus: a :class:`PublishObserver` that feeds prometheus_client.

Counters and histograms of events happen in worker processes, while
Prometheus scrapes the API's ``/metrics``. They meet through prometheus_client's
*multiprocess mode*: with ``OFFPOST_METRICS_DIR`` set, every process writes its
values to memory-mapped files in that directory (one file per process and
metric type, so forked Celery children never share one), and the API sums them
at scrape time (:class:`prometheus_client.multiprocess.MultiProcessCollector`).
Counters of a process that exited stay counted: a restart is not a reset.

That is one machine's view: the API replica on a machine reports the workers
that share its directory. State that the database knows — posts by status,
due-but-not-dispatched, credentials — is not counted here but read from the
database at scrape time (``offpost.api.exporter``), so it is right across
machines.

Without ``OFFPOST_METRICS_DIR`` each process keeps its values in its own
registry (:func:`process_metrics`): correct when the worker runs inside the
process that serves ``/metrics``, invisible otherwise.

Across machines, each role serves its own: with ``OFFPOST_METRICS_PORT`` set,
``offpost worker``, ``offpost webhooks`` and ``offpost dispatcher`` serve
``/metrics`` on that port (:func:`serve_role_metrics`). A worker's pool
children are separate processes, so the role keeps a private multiprocess
directory for its own process tree and its main process sums it at scrape time.

=====================================  =========  ==========================================
metric                                 type       labels
=====================================  =========  ==========================================
``offpost_posts_published_total``      counter    ``outcome``: published, reconciled
``offpost_posts_failed_total``         counter    ``reason``: Graph code or offpost code
``offpost_publish_outcomes_total``     counter    ``outcome``: every way a post left publishing
``offpost_publish_duration_seconds``   histogram  from the successful attempt's start to its record
``offpost_schedule_lateness_seconds``  histogram  ``kind``: one_off, recurring; published - due
``offpost_graph_errors_total``         counter    ``code``: Graph's error code or offpost's
``offpost_graph_usage_ratio``          gauge      ``scope``: app, page, business_use_case
``offpost_pacing_waits_total``         counter    ``scope``: app, page; calls the pacer held back
``offpost_pacing_wait_seconds``        histogram  ``scope``; the waits it handed out
``offpost_pacing_usage_ratio``         gauge      ``scope``; the busiest key's estimated usage
                                                  of its estimated budget (docs/pacing.md)
``offpost_webhook_deliveries_total``   counter    ``outcome``: delivered, retry, failed,
                                                  lease_lost, skipped (webhooks role; the
                                                  dispatcher counts the failed it gives up)
``offpost_dispatcher_ticks_total``     counter    (dispatcher role)
``offpost_dispatch_lateness_seconds``  histogram  a post's hand-off to a worker - its due time
=====================================  =========  ==========================================
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.graph.errors import GraphError
from offpost.graph.usage import GraphUsage
from offpost.models.attempt import Attempt
from offpost.models.transitions import ClaimedPost
from offpost.workers.decide import error_document
from offpost.workers.observe import Finished, Outcome

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Publishing one post: a Graph call plus two small transactions.
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Lateness: the dispatcher wakes within seconds; retries and outages add minutes to hours.
LATENESS_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)

PUBLISHED_OUTCOMES = (Outcome.PUBLISHED, Outcome.RECONCILED)

#: Pacing waits: one bucket width of the app window (1 min) to a whole Pages window (24 h).
PACING_WAIT_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
#: The scopes the pacer counts (offpost.workers.pacing.SCOPES).
PACING_SCOPES = ("app", "page")
#: A key's usage counts towards its scope's gauge this long after the pacer last decided on it.
PACING_LEVEL_FRESH_S = 60.0


class PublishMetrics:
    """The worker-side metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "offpost_posts_published",
            "Posts published (outcome reconciled: found on the Page after a lost reply).",
            ["outcome"],
            registry=registry,
        )
        self.failed = Counter(
            "offpost_posts_failed",
            "Posts that ended failed, by reason: Graph's error code or an offpost code.",
            ["reason"],
            registry=registry,
        )
        self.outcomes = Counter(
            "offpost_publish_outcomes",
            "Every way a post left publishing: published, reconciled, retry, failed, "
            "needs_reauth, canceled, waiting, handed_back.",
            ["outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "offpost_publish_duration_seconds",
            "From the start of the successful attempt (the Graph call) to its recorded outcome.",
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.lateness = Histogram(
            "offpost_schedule_lateness_seconds",
            "How long after its publish_at a post was published (for kind=recurring, "
            "publish_at is the schedule's occurrence time).",
            ["kind"],
            buckets=LATENESS_BUCKETS_S,
            registry=registry,
        )
        self.graph_errors = Counter(
            "offpost_graph_errors",
            "Errors of Graph calls made by workers, by Graph's error code (or offpost's, "
            "such as timeout, for a call that got no Graph answer).",
            ["code"],
            registry=registry,
        )
        self.graph_usage = Gauge(
            "offpost_graph_usage_ratio",
            "The latest usage reported by Graph's usage headers, as a fraction of the allowance "
            "(the highest of call_count, total_time, total_cputime; 1 means throttling).",
            ["scope"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.pacing_waits = Counter(
            "offpost_pacing_waits",
            "Graph calls the pacer told to wait, by the scope (app, page) of the key that "
            "held them back (docs/pacing.md).",
            ["scope"],
            registry=registry,
        )
        self.pacing_wait = Histogram(
            "offpost_pacing_wait_seconds",
            "The waits the pacer handed out, by scope.",
            ["scope"],
            buckets=PACING_WAIT_BUCKETS_S,
            registry=registry,
        )
        self.pacing_usage = Gauge(
            "offpost_pacing_usage_ratio",
            "The highest estimated usage, as a share of its estimated budget, among the keys "
            "of a scope the pacer decided on in the last minute (1 means throttling).",
            ["scope"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        # Present at 0 from the start, so a rate() has a first sample.
        for outcome in PUBLISHED_OUTCOMES:
            self.published.labels(outcome=outcome)
        for kind in ("one_off", "recurring"):
            self.lateness.labels(kind=kind)
        for scope in PACING_SCOPES:
            self.pacing_waits.labels(scope=scope)
            self.pacing_wait.labels(scope=scope)


class RoleMetrics:
    """What the webhooks and dispatcher roles count, beside the workers' :class:`PublishMetrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhook_deliveries = Counter(
            "offpost_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retry (a failed attempt with "
            "another to come), failed (given up), lease_lost, skipped (not this message's).",
            ["outcome"],
            registry=registry,
        )
        self.dispatcher_ticks = Counter(
            "offpost_dispatcher_ticks", "Dispatcher passes over due work.", registry=registry
        )
        self.dispatch_lateness = Histogram(
            "offpost_dispatch_lateness_seconds",
            "How long after its due time a post was handed to the workers.",
            buckets=LATENESS_BUCKETS_S,
            registry=registry,
        )


class MetricsObserver:
    """Counts what the publish protocol reports; never writes a row, never raises.

    A metrics failure must not roll back an outcome: every method logs and
    swallows its own errors.
    """

    def __init__(
        self, metrics: PublishMetrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self._levels = PacingLevels()

    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        try:
            for item in finished:
                self._post_finished(
                    session, item.post, item.outcome, item.values, now, item.started_at
                )
        except Exception:  # counting must never undo a recorded outcome
            logger.warning("could not count an outcome", exc_info=True, extra={"action": "metrics"})

    def _post_finished(
        self,
        session: Session,
        post: ClaimedPost,
        outcome: Outcome,
        values: Mapping[str, Any],
        now: datetime,
        started_at: datetime | None = None,
    ) -> None:
        m = self.metrics
        m.outcomes.labels(outcome=outcome).inc()
        status = str(values.get("status", ""))
        if outcome in PUBLISHED_OUTCOMES:
            m.published.labels(outcome=outcome).inc()
            kind = "recurring" if post.schedule_id else "one_off"
            m.lateness.labels(kind=kind).observe(max(0.0, (now - post.publish_at).total_seconds()))
            if outcome == "published":
                # The attempt row was committed before the Graph call; its start is
                # where this post's publishing work began. Unless the caller knows
                # it, one lookup on the unique (post_id, number) index: a query this
                # small fails only when the connection does, and then the outcome's
                # commit fails with it anyway.
                if started_at is None:
                    started_at = session.scalar(
                        select(Attempt.started_at)
                        .where(Attempt.post_id == post.id)
                        .order_by(Attempt.number.desc())
                        .limit(1)
                    )
                if started_at is not None:
                    m.duration.observe(max(0.0, (now - started_at).total_seconds()))
        elif status == "failed":
            m.failed.labels(reason=failure_reason(values)).inc()

    def graph_error(self, error: GraphError) -> None:
        try:
            self.metrics.graph_errors.labels(code=str(error_document(error)["code"])).inc()
        except Exception:
            logger.warning("could not count an error", exc_info=True, extra={"action": "metrics"})

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        try:
            for scope, pct in usage_by_scope(usage, page_id).items():
                self.metrics.graph_usage.labels(scope=scope).set(pct / 100)
        except Exception:
            logger.warning("could not record usage", exc_info=True, extra={"action": "metrics"})

    def paced(self, scope: str, wait_s: float) -> None:
        try:
            self.metrics.pacing_waits.labels(scope=scope).inc()
            self.metrics.pacing_wait.labels(scope=scope).observe(wait_s)
        except Exception:
            logger.warning("could not count a wait", exc_info=True, extra={"action": "metrics"})

    def pace_usage(self, key: str, ratio: float) -> None:
        try:
            scope, level = self._levels.update(key, ratio, self._clock())
            self.metrics.pacing_usage.labels(scope=scope).set(level)
        except Exception:
            logger.warning("could not record pacing", exc_info=True, extra={"action": "metrics"})


class PacingLevels:
    """The estimated usage of the keys the pacer decided on lately; the highest per scope.

    A key counts for :data:`PACING_LEVEL_FRESH_S` after its latest decision, so
    a Page that went quiet stops holding its scope's gauge up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, float]] = {}

    def update(self, key: str, ratio: float, now: float) -> tuple[str, float]:
        """Record ``key``'s ratio; its scope and that scope's highest fresh ratio."""
        scope = key.partition(":")[0]
        with self._lock:
            self._keys[key] = (ratio, now)
            stale = [k for k, (_, at) in self._keys.items() if now - at > PACING_LEVEL_FRESH_S]
            for k in stale:
                del self._keys[k]
            level = max(r for k, (r, _) in self._keys.items() if k.partition(":")[0] == scope)
        return scope, level


def failure_reason(values: Mapping[str, Any]) -> str:
    """Why a post failed, as a label: ``last_error.code``, else ``attempts_exhausted``.

    A post that fails because its attempts ran out writes no new ``last_error``
    (the previous attempt's stays); that is the one case without a code here.
    """
    error = values.get("last_error")
    if isinstance(error, Mapping) and error.get("code") is not None:
        return str(error["code"])
    return "attempts_exhausted"


def usage_by_scope(usage: GraphUsage, page_id: str) -> dict[str, int]:
    """The highest percentage each header reported: ``app``, ``page``, ``business_use_case``."""
    out: dict[str, int] = {}
    if usage.app is not None:
        out["app"] = usage.app.max_pct
    if usage.page is not None:
        out["page"] = usage.page.max_pct
    business = usage.for_object(page_id) or usage.business
    if business:
        out["business_use_case"] = max(b.max_pct for b in business)
    return out


# --- one set of metrics per process ----------------------------------------------------------


class _ProcessState:
    """This process's metrics (prometheus_client's value storage is per process too)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: PublishMetrics | None = None
        self.roles: RoleMetrics | None = None
        self.registry: CollectorRegistry | None = None
        self.multiprocess_dir: str | None = None


_process = _ProcessState()


def use_multiprocess_dir(directory: str) -> None:
    """Make this process's prometheus_client values live in files under ``directory``.

    prometheus_client picks its value storage when it is imported, from
    ``PROMETHEUS_MULTIPROC_DIR``; this sets the variable (for child processes too)
    and switches the storage of metrics created from now on. Call it before the
    first metric is created; calling it again does nothing (another directory
    is refused with a warning: the files already opened would be split between
    two directories, and metrics must never stop a worker).
    """
    path = os.path.abspath(directory)
    with _process.lock:
        if _process.multiprocess_dir == path:
            return
        if _process.multiprocess_dir is not None:
            logger.warning(
                "metrics of this process already go to %s; ignoring %s",
                _process.multiprocess_dir,
                path,
                extra={"action": "metrics_dir_ignored"},
            )
            return
        os.makedirs(path, exist_ok=True)
        os.environ[MULTIPROC_ENV] = path
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        _process.multiprocess_dir = path


def process_metrics(metrics_dir: str | None = None) -> PublishMetrics:
    """This process's :class:`PublishMetrics`, built on first use.

    With ``metrics_dir`` the values go to files there (see the module docstring),
    for the API to collect; without it they stay in :func:`process_registry`.
    """
    metrics: PublishMetrics = _built("metrics", PublishMetrics, metrics_dir)
    return metrics


def role_metrics(metrics_dir: str | None = None) -> RoleMetrics:
    """This process's :class:`RoleMetrics`, built on first use (as :func:`process_metrics`)."""
    metrics: RoleMetrics = _built("roles", RoleMetrics, metrics_dir)
    return metrics


def _built(name: str, build: Callable[[CollectorRegistry], object], metrics_dir: str | None) -> Any:
    """The process's ``_process.<name>``, built with ``build`` on first use."""
    if metrics_dir:
        use_multiprocess_dir(metrics_dir)
    registry = process_registry()
    with _process.lock:
        if getattr(_process, name) is None:
            setattr(_process, name, build(registry))
        return getattr(_process, name)


def serve_role_metrics(port: int, host: str, metrics_dir: str | None) -> str:
    """Serve ``/metrics`` of this process and its future children on ``host:port``.

    Call it in the role's main process before it forks and before any metric is
    created. Without ``metrics_dir`` a private directory is made for this
    process tree (and removed at exit); with it, the shared directory is served,
    which holds every process of the machine that writes there. Returns the
    directory.
    """
    directory = metrics_dir
    if not directory:
        directory = tempfile.mkdtemp(prefix="offpost-metrics-")
        atexit.register(shutil.rmtree, directory, True)
    use_multiprocess_dir(directory)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    logger.info(
        "serving /metrics on %s:%d",
        host,
        port,
        extra={"action": "metrics_served", "port": port},
    )
    return directory


def process_registry() -> CollectorRegistry:
    """The registry of this process's own metrics (the fallback without a metrics directory)."""
    with _process.lock:
        if _process.registry is None:
            _process.registry = CollectorRegistry(auto_describe=True)
        return _process.registry


def metrics_observer(metrics_dir: str | None) -> MetricsObserver:
    """The observer a worker process adds to its :class:`~offpost.workers.observe.Observers`."""
    return MetricsObserver(process_metrics(metrics_dir))

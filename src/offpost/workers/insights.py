"""Insights: fetch a published post's counts and insights at each age (docs/insights.md).

The dispatcher claims due rows of ``post_insights``
(:func:`~offpost.models.insights.claim_due_insights`) and sends one task each,
``offpost.fetch_insights(insight_id, attempts)``, on the **webhooks** queue
(:func:`send_due_insights`): insights never take a publish worker's slot.

:func:`fetch_insights` then, for one row:

1. drops the message unless the row is still pending at ``attempts`` (a duplicate
   or late message changes nothing);
2. honours the shared rate-limit blocks of the app, the Page and the user, and the
   insights' own yield block (below): the row is put off, no attempt counted;
3. is paced: a per-process token bucket lets at most ``OFFPOST_INSIGHTS_PER_MINUTE``
   fetches a minute through; past it the row is put off, no attempt counted;
4. claims attempt ``attempts + 1``, calls ``GET /{post-id}`` (reactions, comments,
   shares) then ``GET /{post-id}/insights`` (views and viewers: impressions and
   reach). One deprecated metric fails Graph's whole call: each metric is then
   asked alone, and the refused one's message is stored in ``errors``; a Page
   without insights answers nothing, stored as nulls with the reason;
5. writes ``done`` with the values in one transaction, and calls ``on_fetched``
   in it (the ``post.insights`` webhook event goes there).

A deleted post (Graph's 100/33) is ``canceled``. Throttling (4, 17, 32, 613…)
blocks the limiter for every worker and puts the row off without an attempt.
Anything else is retried with backoff, at most
:data:`~offpost.models.insights.INSIGHTS_MAX_ATTEMPTS` attempts, then ``failed``.

**Never in publishing's way.** Besides the shared blocks, an insights call whose
usage headers show the app or the Page at :data:`YIELD_PCT` % or more sets a block
only insights obey (:func:`yield_key`) for :data:`YIELD_WAIT_S`: insights stop long
before Graph's throttling could reach the posts waiting to be published.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from offpost.graph.client import GraphClient, is_invalid_metric, make_http_client
from offpost.graph.errors import GraphError, GraphRateLimitedError, GraphTransientError
from offpost.graph.usage import GraphUsage
from offpost.media.spec import spec_kind
from offpost.models import (
    Credential,
    CredentialPage,
    Post,
    PostStatus,
    make_engine,
    make_sessionmaker,
)
from offpost.models.base import utcnow
from offpost.models.insights import (
    INSIGHTS_MAX_ATTEMPTS,
    InsightStatus,
    PostInsight,
    claim_due_insights,
    schedule_insights_of,
)
from offpost.workers import ratelimit
from offpost.workers.decide import RetryPolicy
from offpost.workers.observe import Finished
from offpost.workers.runtime import ProcessResource
from offpost.workers.webhooks import webhook_queue

logger = logging.getLogger(__name__)

INSIGHTS_TASK = "offpost.fetch_insights"
#: "Impressions": the times the post was on screen. Meta replaced ``post_impressions``
#: by the views metric (Page Insights API updates, Aug 15, 2025; docs/insights.md).
IMPRESSIONS_METRIC = "post_media_view"
#: "Reach": the people who saw the post. Meta's alternative to the deprecated
#: ``post_impressions_unique`` (the deprecated-metrics page).
REACH_METRIC = "post_total_media_view_unique"
#: The insights asked for, by the column they fill.
METRICS: dict[str, str] = {"impressions": IMPRESSIONS_METRIC, "reach": REACH_METRIC}
#: Stored in ``errors`` for a metric Graph answered no value for.
NO_DATA = (
    "Graph answered no value: Page Insights data is only available on Pages with 100 or more likes"
)
#: Usage (app or Page, in percent) from which insights stop for :data:`YIELD_WAIT_S`.
YIELD_PCT = 50
YIELD_WAIT_S = 60.0
#: Characters of an error kept in ``last_error`` and ``errors``.
MAX_ERROR_LENGTH = 500
#: How long a claimed fetch is the worker's before it may be sent again.
DEFAULT_LEASE = timedelta(seconds=120)


def yield_key(app_id: str) -> str:
    """The block only insights obey, set when Graph's usage is high."""
    return f"insights:{ratelimit.app_key(app_id)}"


class TokenBucket:
    """At most ``per_minute`` takes a minute, in bursts of at most ``burst``; thread-safe.

    Per process: ``offpost webhooks`` with N processes fetches at most N times the rate.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate_s = per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, per_minute / 6)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens and return 0, or take nothing and return the seconds until
        there are enough."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate_s)
            self._at = now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            return (cost - self._tokens) / self.rate_s


def _no_op(session: Session, row: PostInsight) -> None:
    return None


#: Told of each fetch that is done, inside its transaction (the webhook event's hook).
OnFetched = Callable[[Session, PostInsight], None]


@dataclass
class InsightsContext:
    """A worker process's means to fetch insights."""

    sessions: sessionmaker[Session]
    graph: GraphClient
    blocks: ratelimit.BlockStore
    app_id: str
    bucket: TokenBucket
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(60.0, 3600.0))
    lease: timedelta = DEFAULT_LEASE
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)
    max_attempts: int = INSIGHTS_MAX_ATTEMPTS
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: The Graph client's connection pool, closed with the process.
    http: httpx.Client | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    """What one fetch needs, read before any Graph call."""

    insight_id: str
    attempts: int
    target: str
    graph_post_id: str | None
    page_token: str | None
    fb_user_id: str


@dataclass
class _Measured:
    values: dict[str, int | None]
    errors: dict[str, str]


class _Gone(Exception):
    """The post is no longer on Facebook."""


def is_gone(error: GraphError) -> bool:
    """Graph's "Object with ID … does not exist" (100/33): the post was deleted."""
    return error.code == 100 and error.subcode == 33


# -- the fetch ------------------------------------------------------------------------------


def fetch_insights(
    ctx: InsightsContext,
    insight_id: str,
    attempts: int | None = None,
    *,
    on_fetched: OnFetched = _no_op,
) -> str:
    """Fetch the row ``insight_id`` if it is still pending (at ``attempts``, when given);
    what became of it: ``done``, ``retry``, ``failed``, ``canceled``, ``waiting`` (a rate
    limit), ``paced`` (the token bucket), or ``skipped`` (not this message's to do)."""
    now = ctx.clock()
    job = _read_job(ctx, insight_id, attempts)
    if job is None:
        return "skipped"
    if job.graph_post_id is None:
        _finish(
            ctx,
            job.insight_id,
            job.attempts,
            status=InsightStatus.CANCELED,
            last_error="the post has no Facebook id",
        )
        return InsightStatus.CANCELED.value
    keys = [*ratelimit.keys_for_call(ctx.app_id, job.target, job.fb_user_id), yield_key(ctx.app_id)]
    wait_s = ratelimit.wait_s(ctx.blocks, keys)
    if wait_s > 0:
        _put_off(ctx, job, now + timedelta(seconds=wait_s))
        return "waiting"
    wait_s = ctx.bucket.take()
    if wait_s > 0:
        _put_off(ctx, job, now + timedelta(seconds=wait_s))
        return "paced"
    if not _claim(ctx, job, now):
        return "skipped"
    attempt = job.attempts + 1
    if not job.page_token:
        return _retry_or_fail(ctx, job, attempt, "no Page token for the post's Page")
    try:
        stats = ctx.graph.post_stats(job.graph_post_id, job.page_token)
        _note_usage(ctx, stats.usage, job.target)
        measured = _measure(ctx, job.graph_post_id, job.page_token, job.target)
    except _Gone as exc:
        _finish(
            ctx,
            job.insight_id,
            attempt,
            status=InsightStatus.CANCELED,
            last_error=str(exc)[:MAX_ERROR_LENGTH],
        )
        logger.info(
            "insights of %s canceled: the post is gone from Facebook",
            job.insight_id,
            extra={"action": "insights_canceled", "insight_id": job.insight_id},
        )
        return InsightStatus.CANCELED.value
    except GraphRateLimitedError as exc:
        key = ratelimit.key_for(
            exc, app_id=ctx.app_id, page_id=job.target, fb_user_id=job.fb_user_id
        )
        ctx.blocks.block(key, exc.retry_after_s)
        # A wait is not a failed attempt: the count goes back.
        _finish(
            ctx,
            job.insight_id,
            attempt,
            attempts=job.attempts,
            due_at=ctx.clock() + timedelta(seconds=exc.retry_after_s),
            last_error=exc.message[:MAX_ERROR_LENGTH],
        )
        return "waiting"
    except GraphError as exc:
        if is_gone(exc):
            _finish(
                ctx,
                job.insight_id,
                attempt,
                status=InsightStatus.CANCELED,
                last_error=exc.message[:MAX_ERROR_LENGTH],
            )
            return InsightStatus.CANCELED.value
        return _retry_or_fail(ctx, job, attempt, str(exc))
    except Exception as exc:
        logger.exception(
            "fetching insights %s failed unexpectedly",
            job.insight_id,
            extra={"action": "insights_crashed", "insight_id": job.insight_id},
        )
        return _retry_or_fail(ctx, job, attempt, type(exc).__name__)
    fetched_at = ctx.clock()
    with ctx.sessions.begin() as session:
        held = _guarded_update(
            session,
            job.insight_id,
            attempt,
            status=InsightStatus.DONE,
            fetched_at=fetched_at,
            in_flight_until=None,
            reactions=stats.reactions,
            comments=stats.comments,
            shares=stats.shares,
            impressions=measured.values.get(IMPRESSIONS_METRIC),
            reach=measured.values.get(REACH_METRIC),
            errors=measured.errors or None,
            last_error=None,
            updated_at=fetched_at,
        )
        if held:
            row = session.get(PostInsight, job.insight_id, populate_existing=True)
            if row is not None:
                on_fetched(session, row)
    if not held:
        return "skipped"
    logger.info(
        "insights %s fetched%s",
        job.insight_id,
        f" ({', '.join(sorted(measured.errors))} without a value)" if measured.errors else "",
        extra={"action": "insights_fetched", "insight_id": job.insight_id},
    )
    return InsightStatus.DONE.value


def _read_job(ctx: InsightsContext, insight_id: str, attempts: int | None) -> _Job | None:
    with ctx.sessions() as session:
        row = session.execute(
            select(
                PostInsight.id,
                PostInsight.attempts,
                PostInsight.status,
                PostInsight.target,
                Post.graph_post_id,
                Post.credential_id,
            )
            .join(Post, Post.id == PostInsight.post_id)
            .where(PostInsight.id == insight_id)
        ).one_or_none()
        if row is None or row.status is not InsightStatus.PENDING:
            return None
        if attempts is not None and row.attempts != attempts:
            return None
        page = session.get(CredentialPage, (row.credential_id, row.target))
        credential = session.get(Credential, row.credential_id)
        return _Job(
            insight_id=row.id,
            attempts=row.attempts,
            target=row.target,
            graph_post_id=row.graph_post_id,
            page_token=page.page_token if page is not None else None,
            fb_user_id=credential.fb_user_id if credential is not None else "",
        )


def _guarded_update(session: Session, insight_id: str, counted: int, **values: Any) -> bool:
    """Change the row only while it is pending with ``counted`` attempts (this worker's)."""
    result = session.execute(
        update(PostInsight)
        .where(
            PostInsight.id == insight_id,
            PostInsight.status == InsightStatus.PENDING,
            PostInsight.attempts == counted,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _claim(ctx: InsightsContext, job: _Job, now: datetime) -> bool:
    with ctx.sessions.begin() as session:
        return _guarded_update(
            session,
            job.insight_id,
            job.attempts,
            attempts=job.attempts + 1,
            in_flight_until=now + ctx.lease,
            updated_at=now,
        )


def _put_off(ctx: InsightsContext, job: _Job, until: datetime) -> None:
    """Due again at ``until``, no attempt counted (a rate limit or the pace)."""
    with ctx.sessions.begin() as session:
        _guarded_update(
            session,
            job.insight_id,
            job.attempts,
            due_at=until,
            in_flight_until=None,
            updated_at=ctx.clock(),
        )


def _finish(ctx: InsightsContext, insight_id: str, attempt: int, **values: Any) -> bool:
    values.setdefault("in_flight_until", None)
    values.setdefault("updated_at", ctx.clock())
    with ctx.sessions.begin() as session:
        return _guarded_update(session, insight_id, attempt, **values)


def _retry_or_fail(ctx: InsightsContext, job: _Job, attempt: int, error: str) -> str:
    error = error[:MAX_ERROR_LENGTH]
    now = ctx.clock()
    if attempt >= ctx.max_attempts:
        _finish(ctx, job.insight_id, attempt, status=InsightStatus.FAILED, last_error=error)
        logger.warning(
            "insights %s failed after %d attempts: %s",
            job.insight_id,
            attempt,
            error,
            extra={"action": "insights_failed", "insight_id": job.insight_id},
        )
        return InsightStatus.FAILED.value
    at = now + timedelta(seconds=ctx.retry.delay_s(attempt, ctx.rng))
    _finish(ctx, job.insight_id, attempt, due_at=at, last_error=error)
    return "retry"


def _note_usage(ctx: InsightsContext, usage: GraphUsage, page_id: str) -> None:
    """Block for everyone where Graph is nearly throttling (as publishing does), and for
    insights alone from :data:`YIELD_PCT` %."""
    for key, wait_s in ratelimit.usage_blocks(usage, app_id=ctx.app_id, page_id=page_id):
        ctx.blocks.block(key, wait_s)
    page_pct = max(
        [usage.page.max_pct if usage.page else 0]
        + [entry.max_pct for entry in usage.for_object(page_id)]
    )
    app_pct = usage.app.max_pct if usage.app is not None else 0
    if max(app_pct, page_pct) >= YIELD_PCT:
        ctx.blocks.block(yield_key(ctx.app_id), YIELD_WAIT_S)


def _measure(ctx: InsightsContext, post_id: str, token: str, page_id: str) -> _Measured:
    """The values of :data:`METRICS` and, per metric without one, why.

    Graph refuses the whole call for one deprecated metric without naming it: each
    metric is then asked alone, so the others are still stored. Raises :class:`_Gone`
    for a deleted post and lets a rate limit or a transient error through (the whole
    fetch is tried again); any other refusal is stored for the metrics it concerns.
    """
    metrics = list(METRICS.values())
    measured = _Measured(values=dict.fromkeys(metrics), errors={})
    batches = [metrics]
    while batches:
        batch = batches.pop(0)
        try:
            answer = ctx.graph.post_insights(post_id, token, metrics=batch)
        except (GraphRateLimitedError, GraphTransientError):
            raise
        except GraphError as exc:
            if is_gone(exc):
                raise _Gone(exc.message) from exc
            if is_invalid_metric(exc) and len(batch) > 1:
                batches.extend([name] for name in batch)
                continue
            for name in batch:
                measured.errors[name] = exc.message[:MAX_ERROR_LENGTH]
            continue
        _note_usage(ctx, answer.usage, page_id)
        for name in batch:
            value = answer.values.get(name)
            measured.values[name] = value
            if value is None:
                measured.errors[name] = NO_DATA
    return measured


# -- scheduling, when a post is published ---------------------------------------------------


class InsightsScheduler:
    """The publish observer that schedules a published post's fetches, in the transaction
    that records it ``published`` (so a rolled-back outcome schedules nothing)."""

    def __init__(self, ages: Sequence[tuple[str, timedelta]]) -> None:
        self.ages = list(ages)

    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        published = [
            (
                item.post.id,
                item.post.client_id,
                item.post.target,
                item.values.get("published_at") or now,
            )
            for item in finished
            if item.values.get("status") == PostStatus.PUBLISHED
            # A video's or Reel's Graph id is the video's, whose counts and insights are
            # read another way (docs/insights.md): not fetched yet.
            and spec_kind(item.post.media) not in ("video", "reel")
        ]
        schedule_insights_of(session, published, self.ages)

    def graph_error(self, error: GraphError) -> None:
        return None

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        return None


# -- the worker side ------------------------------------------------------------------------


def make_insights_context(
    *,
    database_url: str,
    encryption_keys: list[str],
    broker_url: str,
    graph_url: str,
    graph_version: str,
    app_id: str,
    app_secret: str,
    appsecret_time: bool = True,
    graph_timeout_s: float = 15.0,
    per_minute: int = 60,
) -> InsightsContext:
    """Build a process's :class:`InsightsContext` (after a worker process forked)."""
    engine = make_engine(database_url, encryption_keys=encryption_keys)
    http = make_http_client(graph_timeout_s)
    graph = GraphClient(
        http,
        graph_url=graph_url,
        version=graph_version,
        app_id=app_id,
        app_secret=app_secret,
        appsecret_time=appsecret_time,
    )
    blocks = ratelimit.block_store(broker_url)
    return InsightsContext(
        sessions=make_sessionmaker(engine),
        graph=graph,
        blocks=blocks,
        app_id=app_id,
        bucket=TokenBucket(per_minute),
        lease=timedelta(seconds=4 * graph_timeout_s + 30),
        http=http,
    )


class InsightsRuntime(ProcessResource[InsightsContext]):
    """The per-process :class:`InsightsContext`, built after fork and on first use."""

    def close(self) -> None:
        context = self.take()
        if context is not None and context.http is not None:
            context.http.close()


def install_insights_task(
    app: Celery, runtime: InsightsRuntime, *, on_fetched: OnFetched = _no_op
) -> Any:
    """Register ``offpost.fetch_insights(insight_id, attempts)`` on ``app``, served by
    ``runtime``'s context; ``on_fetched`` runs in the transaction of each fetch done."""

    @app.task(name=INSIGHTS_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def fetch(insight_id: str, attempts: int) -> str:
        return fetch_insights(runtime.get(), str(insight_id), int(attempts), on_fetched=on_fetched)

    def _after_fork(**_: Any) -> None:
        runtime.reset()

    def _process_shutdown(**_: Any) -> None:
        runtime.close()

    worker_process_init.connect(_after_fork, weak=False)
    worker_process_shutdown.connect(_process_shutdown, weak=False)
    return fetch


def send_insights(app: Celery, due: list[tuple[str, int]]) -> None:
    """One fetch task per ``(insight_id, attempts)``, on the webhooks queue (after the
    claim committed): the publish workers never run them."""
    queue = webhook_queue(app.conf.task_default_queue)
    for insight_id, attempts in due:
        app.send_task(INSIGHTS_TASK, args=[insight_id, attempts], queue=queue)


def send_due_insights(
    sessions: sessionmaker[Session],
    app: Celery | None,
    now: datetime,
    *,
    resend_after: timedelta = timedelta(seconds=300),
    batch: int = 100,
    send: Callable[[list[tuple[str, int]]], None] | None = None,
) -> int:
    """The dispatcher's side: claim up to ``batch`` due fetches and send their tasks; how
    many. One batch a tick: the workers' pace, not the dispatcher, sets the rate, and a
    backlog never makes a tick long (publishing is claimed in the same loop)."""
    with sessions.begin() as session:
        due = claim_due_insights(session, now, resend_after, batch)
    if due:
        if send is not None:
            send(due)
        elif app is not None:
            send_insights(app, due)
    return len(due)

"""Webhooks: the worker's outbox observer, signatures, and the delivery task.

Events are rows of :class:`~offpost.models.webhook_event.WebhookEvent`, recorded
by :mod:`offpost.outbox` inside the transaction that makes the change they
report; :class:`WebhookOutbox` is the :class:`~offpost.workers.observe.PublishObserver`
that does it for publish outcomes. Clients without a webhook get no rows.

Delivery is one Celery task per attempt, ``offpost.deliver_webhook(event_id,
attempts)``, sent by the dispatcher when the row is due. The task claims the
attempt (a lease, and only if the row still counts ``attempts``), POSTs the
stored body with a fresh ``Offpost-Signature``, and records the outcome: any
2xx is ``delivered``; anything else schedules the next attempt with exponential
backoff and jitter, until ``retry_for`` after the event was created, then
``failed``. Each outcome also feeds the endpoint's circuit breaker
(:mod:`offpost.models.webhook`), which the dispatcher reads before it sends.
The retry schedule lives in the row rather than in Celery countdowns: an ETA
message on Redis sits in a worker's memory and is redelivered after the
visibility timeout, while a row survives anything and is re-sent by the next
dispatcher tick. Delivery is at least once: a worker killed after the receiver
answered but before the outcome was recorded sends the event again, with the
same id, which receivers use to deduplicate.

Signature: ``Offpost-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
over the exact body bytes; see docs/webhooks.md for a verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost import __version__
from offpost.addresses import AddressRefusedError, Resolver, Vetted, resolve, vet
from offpost.graph.errors import GraphError
from offpost.graph.usage import GraphUsage
from offpost.models import PostStatus, Webhook, make_engine, make_sessionmaker
from offpost.models.base import utcnow
from offpost.models.webhook import breaker_pause, note_attempt
from offpost.models.webhook_event import (
    ClaimedEvent,
    DeliveryStatus,
    EventType,
    claim_delivery,
    finish_delivery,
)
from offpost.outbox import has_webhook, record_post_event
from offpost.workers.deadline import deadline_client, until
from offpost.workers.decide import RetryPolicy
from offpost.workers.metrics import role_metrics
from offpost.workers.observe import Finished
from offpost.workers.runtime import ProcessResource

logger = logging.getLogger(__name__)

DELIVER_TASK = "offpost.deliver_webhook"
SIGNATURE_HEADER = "Offpost-Signature"
EVENT_ID_HEADER = "Offpost-Event-Id"
USER_AGENT = f"offpost/{__version__}"
#: How much longer than the HTTP timeout an attempt's lease lasts.
LEASE_SLACK_S = 30.0
#: Characters of a receiver's error kept in ``last_error``.
MAX_ERROR_LENGTH = 300

#: Post statuses that are reported, and as what.
POST_EVENTS: dict[PostStatus, EventType] = {
    PostStatus.PUBLISHED: EventType.POST_PUBLISHED,
    PostStatus.FAILED: EventType.POST_FAILED,
    PostStatus.NEEDS_REAUTH: EventType.POST_NEEDS_REAUTH,
}


# -- signatures ---------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Offpost-Signature`` value: ``t=<unix>,v1=<hex>``."""
    return f"t={timestamp},v1={signature(secret, body, timestamp)}"


# -- events -------------------------------------------------------------------------------


class WebhookOutbox:
    """The publish observer that writes events into the outbox, inside the outcome's transaction."""

    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        wanted = [item for item in finished if item.values.get("status") is not None]
        # One lookup per client of the batch, not per post.
        with_webhook = {
            client_id
            for client_id in {item.post.client_id for item in wanted}
            if has_webhook(session, client_id)
        }
        for item in wanted:
            type_ = POST_EVENTS.get(PostStatus(item.values["status"]))
            if type_ is not None and item.post.client_id in with_webhook:
                record_post_event(session, item.post.id, type_, now)

    def graph_error(self, error: GraphError) -> None:
        return None

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        return None


# -- delivery -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """When to try again: jittered exponential backoff, within ``retry_for_s`` of creation."""

    base_s: float = 30.0
    cap_s: float = 3600.0
    retry_for_s: float = 86400.0

    def next_attempt_at(
        self, created_at: datetime, attempt: int, now: datetime, rng: random.Random | None = None
    ) -> datetime | None:
        """After failed attempt number ``attempt``: when the next one is due, or None (give up).

        The last attempt is made at the end of the window rather than skipped.
        """
        deadline = created_at + timedelta(seconds=self.retry_for_s)
        if now >= deadline:
            return None
        delay_s = RetryPolicy(self.base_s, self.cap_s).delay_s(attempt, rng)
        return min(now + timedelta(seconds=delay_s), deadline)


@dataclass
class DeliveryContext:
    """A worker process's means to deliver: database, one HTTP client, the policy."""

    sessions: sessionmaker[Session]
    http: httpx.Client
    policy: DeliveryPolicy
    lease: timedelta
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)
    #: Private addresses and http allowed (``OFFPOST_WEBHOOK_ALLOW_PRIVATE``).
    allow_private: bool = False
    #: The whole exchange, connect to last byte, ends by then (``OFFPOST_WEBHOOK_TIMEOUT_S``).
    deadline_s: float = 10.0
    resolver: Resolver = resolve


def make_delivery_context(
    database_url: str,
    encryption_keys: list[str],
    *,
    timeout_s: float,
    policy: DeliveryPolicy,
    allow_private: bool = False,
) -> DeliveryContext:
    """Build the resources of :func:`deliver_event` (after a worker process forked)."""
    engine = make_engine(database_url, encryption_keys=encryption_keys)
    http = deadline_client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,  # a redirect is not a 2xx: the receiver fixes its URL
        # Each delivery connects to the address it vetted, by IP: a kept-alive
        # connection is never shared between two host names on one address.
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    return DeliveryContext(
        sessions=make_sessionmaker(engine),
        http=http,
        policy=policy,
        # The lease outlives the delivery's deadline: one in flight is never sent again.
        lease=timedelta(seconds=timeout_s + LEASE_SLACK_S),
        allow_private=allow_private,
        deadline_s=timeout_s,
    )


def deliver_event(ctx: DeliveryContext, event_id: str, attempts: int) -> str:
    """Make delivery attempt ``attempts + 1`` of the event; returns what became of it.

    ``skipped`` when the attempt is not this message's to make (another worker,
    a duplicate message, already done).
    """
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        event = claim_delivery(session, event_id, attempts, now, ctx.lease)
        webhook = None
        if event is not None:
            webhook = session.scalars(
                select(Webhook).where(Webhook.client_id == event.client_id)
            ).one_or_none()
            target = (webhook.url, webhook.secret) if webhook is not None else None
    if event is None:
        return "skipped"
    if target is None:
        with ctx.sessions.begin() as session:
            finish_delivery(
                session,
                event,
                ctx.clock(),
                status=DeliveryStatus.FAILED,
                last_error="the client has no webhook any more",
            )
        return DeliveryStatus.FAILED.value
    url, secret = target
    try:
        # Checked again at each delivery: the name may point elsewhere by now.
        vetted = vet(url, allow_private=ctx.allow_private, resolver=ctx.resolver)
    except AddressRefusedError as exc:
        return _record(ctx, event, None, f"refused: {exc}"[:MAX_ERROR_LENGTH])
    status_code, error = _post(ctx, event, vetted, secret)
    return _record(ctx, event, status_code, error)


def _post(
    ctx: DeliveryContext, event: ClaimedEvent, vetted: Vetted, secret: str
) -> tuple[int | None, str | None]:
    body = event.payload.encode("utf-8")
    # A fresh timestamp on every attempt; same id, same body.
    timestamp = int(ctx.clock().timestamp())
    options = vetted.request_options()
    headers = {
        **options["headers"],
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature_header(secret, body, timestamp),
        EVENT_ID_HEADER: event.id,
    }
    try:
        # Streamed and never read: a receiver's reply body is not ours to download.
        # One deadline for the whole exchange: a receiver dripping bytes holds a
        # worker for deadline_s at most (offpost.workers.deadline).
        with (
            until(ctx.deadline_s),
            ctx.http.stream(
                "POST",
                vetted.request_url(),
                content=body,
                headers=headers,
                extensions=options["extensions"],
            ) as response,
        ):
            code = response.status_code
    except httpx.TimeoutException as exc:
        why = f"no complete answer within the delivery's {ctx.deadline_s:g} s ({exc})"
        return None, f"{type(exc).__name__}: {why}"[:MAX_ERROR_LENGTH]
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
    if 200 <= code < 300:
        return code, None
    return code, f"HTTP {code}"


def _record(
    ctx: DeliveryContext, event: ClaimedEvent, status_code: int | None, error: str | None
) -> str:
    now = ctx.clock()
    values: dict[str, Any] = {"last_status": status_code, "last_error": error}
    if error is None:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
        outcome = DeliveryStatus.DELIVERED.value
    else:
        at = ctx.policy.next_attempt_at(event.created_at, event.attempt, now, ctx.rng)
        if at is None:
            values.update(status=DeliveryStatus.FAILED)
            outcome = DeliveryStatus.FAILED.value
        else:
            values.update(next_attempt_at=at)
            outcome = "retry"
    with ctx.sessions.begin() as session:
        held = finish_delivery(session, event, now, **values)
        if held:
            failures = note_attempt(session, event.client_id, ok=error is None, now=now)
    if not held:
        return "lease_lost"
    if failures and breaker_pause(failures) is not None:
        logger.warning(
            "webhook of client %s: %d failed attempts in a row; paused for %s",
            event.client_id,
            failures,
            breaker_pause(failures),
            extra={"action": "webhook_paused", "client_id": event.client_id},
        )
    log = logger.info if outcome != "retry" else logger.warning
    log(
        "webhook event %s attempt %d: %s (%s)",
        event.id,
        event.attempt,
        outcome,
        status_code if status_code is not None else error,
        extra={"action": f"webhook_{outcome}", "event_id": event.id, "attempt": event.attempt},
    )
    return outcome


class DeliveryRuntime(ProcessResource[DeliveryContext]):
    """The per-process :class:`DeliveryContext`, built after fork and on first use."""

    def close(self) -> None:
        context = self.take()
        if context is not None:
            context.http.close()


def install_webhook_task(
    app: Celery, runtime: DeliveryRuntime, metrics_dir: str | None = None
) -> Any:
    """Register ``offpost.deliver_webhook`` on ``app``, served by ``runtime``'s context;
    each attempt's outcome is counted in ``offpost_webhook_deliveries_total``."""

    @app.task(name=DELIVER_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def deliver_webhook(event_id: str, attempts: int) -> str:
        outcome = deliver_event(runtime.get(), str(event_id), int(attempts))
        try:
            role_metrics(metrics_dir).webhook_deliveries.labels(outcome=outcome).inc()
        except Exception:  # counting must never fail a delivery
            logger.warning("could not count a delivery", exc_info=True, extra={"action": "metrics"})
        return outcome

    def _after_fork(**_: Any) -> None:
        runtime.reset()

    def _process_shutdown(**_: Any) -> None:
        runtime.close()

    worker_process_init.connect(_after_fork, weak=False)
    worker_process_shutdown.connect(_process_shutdown, weak=False)
    return deliver_webhook


def webhook_queue(queue: str) -> str:
    """The queue of webhook deliveries beside publishing queue ``queue``: their own, so
    that a slow receiver never holds a slot a post is waiting for."""
    return f"{queue}.webhooks"


def send_deliveries(app: Celery, due: list[tuple[str, int]]) -> None:
    """One delivery task per ``(event_id, attempts)`` (after the dispatcher's claim committed),
    on the webhook queue (``offpost webhooks`` consumes it)."""
    queue = webhook_queue(app.conf.task_default_queue)
    for event_id, attempts in due:
        app.send_task(DELIVER_TASK, args=[event_id, attempts], queue=queue)

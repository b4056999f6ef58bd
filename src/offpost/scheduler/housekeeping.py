"""What the dispatcher does before each tick, besides publishing: the per-tick jobs, composed.

- Every tick: recurring schedules materialize their next occurrences, due
  webhook deliveries and follow-ups (a published post's first comment, edits,
  deletion on Facebook) are claimed and sent to the workers (one task each); every
  few minutes the events a failing endpoint cannot deliver in their window are
  given up first.
- Once a day per deployment: expired idempotency keys are deleted, so the
  table holds a day of keys, not every key ever sent.
- Every few minutes: media retention (:mod:`offpost.media.retention`) deletes a
  bounded batch of uploads left unfinished, and of ready media no pending post
  or live schedule uses, once they are ``media_retention_h`` old.
- At most every :data:`LEFTOVERS_EVERY` per deployment, on a thread of its own:
  what canceled (and failed) media posts left on Graph — unpublished photos, a
  started video — is deleted (:mod:`offpost.workers.leftovers`).
- At most once per ``sweep_every`` per deployment: the daily token check. Several
  dispatchers share the job through a guarded row
  (:func:`~offpost.models.periodic.claim_periodic_run`), so exactly one runs
  it. It runs on a thread of its own: a sweep makes Graph calls per credential
  and must not hold up publishing.

A job that fails is logged and does not keep the others (or the dispatcher's
claim of due posts) from running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from offpost.connections import unreachable
from offpost.graph.client import GraphClient, make_http_client
from offpost.media.retention import RetentionResult, sweep_media
from offpost.media.store import MediaStore, make_media_store
from offpost.models import make_engine, make_sessionmaker
from offpost.models.clock import DatabaseClock
from offpost.models.idempotency import purge_expired_keys
from offpost.models.periodic import claim_periodic_run
from offpost.models.webhook_event import claim_due_events, give_up_behind_breaker
from offpost.scheduler.materialize import run_schedules
from offpost.settings import Settings
from offpost.tokens.expiry import ExpirySweep, SweepResult
from offpost.workers.followups import send_due_followups
from offpost.workers.insights import send_due_insights as claim_and_send_insights
from offpost.workers.leftovers import Remover, sweep_leftovers
from offpost.workers.metrics import role_metrics

logger = logging.getLogger(__name__)

#: The ``periodic_runs`` row of the sweep.
SWEEP_JOB = "expiry_sweep"
#: The ``periodic_runs`` row of the purge of expired idempotency keys, and how often.
PURGE_JOB = "idempotency_purge"
PURGE_EVERY = timedelta(days=1)
#: How often a dispatcher gives up the events that failing endpoints cannot deliver.
GIVE_UP_EVERY = timedelta(minutes=5)
#: How often one dispatcher asks whether the purge is due.
PURGE_ASK_EVERY = timedelta(minutes=10)
#: How often a dispatcher runs media retention (each run takes a bounded batch).
MEDIA_SWEEP_EVERY = timedelta(minutes=5)
#: The ``periodic_runs`` row of the removal of media left on Graph, and how often.
LEFTOVERS_JOB = "media_leftovers"
LEFTOVERS_EVERY = timedelta(seconds=30)

DeliverySender = Callable[[list[tuple[str, int]]], None]


class Housekeeping:
    """The dispatcher's ``before_tick``: call it with the tick's ``now``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        run_schedules: Callable[[datetime], object] | None = None,
        send_deliveries: DeliverySender | None = None,
        resend_after: timedelta = timedelta(seconds=120),
        per_endpoint: int = 2,
        webhook_retry_for: timedelta | None = None,
        sweep: ExpirySweep | None = None,
        sweep_every: timedelta = timedelta(days=1),
        sweep_in_thread: bool = True,
        batch: int = 500,
        media_store: MediaStore | None = None,
        media_retention: timedelta = timedelta(hours=24),
        remover: Remover | None = None,
        leftovers_every: timedelta = LEFTOVERS_EVERY,
        send_followups: DeliverySender | None = None,
        send_insights: DeliverySender | None = None,
    ) -> None:
        self.sessions = sessions
        self.run_schedules = run_schedules
        self.send_deliveries = send_deliveries
        self.resend_after = resend_after
        self.per_endpoint = per_endpoint
        self.webhook_retry_for = webhook_retry_for
        self.sweep = sweep
        self.sweep_every = sweep_every
        self.sweep_in_thread = sweep_in_thread
        self.batch = batch
        self.media_store = media_store
        self.media_retention = media_retention
        self._media_swept: datetime | None = None
        self.remover = remover
        self.send_followups = send_followups
        self.send_insights = send_insights
        self.leftovers_every = leftovers_every
        self._removing = threading.Lock()
        self._leftovers_asked: datetime | None = None
        self._sweeping = threading.Lock()
        self._purge_asked: datetime | None = None
        self._gave_up: datetime | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, now: datetime) -> None:
        if self.run_schedules is not None:
            self._guarded("schedules", self.run_schedules, now)
        if self.send_deliveries is not None:
            self._guarded("webhooks", self.send_due_webhooks, now)
        if self.send_followups is not None:
            self._guarded("follow-ups", self.send_due_followups, now)
        if self.send_insights is not None:
            self._guarded("insights", self.send_due_insights, now)
        self._guarded("idempotency purge", self.maybe_purge, now)
        if self.media_store is not None:
            self._guarded("media retention", self.maybe_sweep_media, now)
        if self.remover is not None:
            self._guarded("media leftovers", self.maybe_remove_leftovers, now)
        if self.sweep is not None:
            self._guarded("expiry sweep", self.maybe_sweep, now)

    def _guarded(self, what: str, job: Callable[[datetime], object], now: datetime) -> None:
        try:
            job(now)
        except Exception as exc:
            server = unreachable(exc)
            if server is not None:
                # The dispatcher's own tick reports the outage, once.
                logger.debug("%s skipped: %s is unreachable", what, server)
                return
            logger.exception("%s failed; next tick retries", what, extra={"action": "job_failed"})

    def send_due_webhooks(self, now: datetime) -> int:
        """Claim due deliveries and send their tasks (after the claim committed).

        Every :data:`GIVE_UP_EVERY` first, the events a failing endpoint can no
        longer deliver in their window are given up.
        """
        assert self.send_deliveries is not None
        if self.webhook_retry_for is not None and (
            self._gave_up is None or now - self._gave_up >= GIVE_UP_EVERY
        ):
            self._gave_up = now
            with self.sessions.begin() as session:
                given_up = give_up_behind_breaker(session, now, self.webhook_retry_for)
            if given_up:
                # Counted where the worker counts the events it gives up, for the alert.
                role_metrics().webhook_deliveries.labels(outcome="failed").inc(given_up)
                logger.warning(
                    "%d webhook events given up: their endpoints kept failing",
                    given_up,
                    extra={"action": "webhooks_given_up", "count": given_up},
                )
        sent = 0
        while True:
            with self.sessions.begin() as session:
                due = claim_due_events(
                    session,
                    now,
                    self.resend_after,
                    self.batch,
                    per_endpoint=self.per_endpoint,
                )
            if due:
                self.send_deliveries(due)
                sent += len(due)
            if len(due) < self.batch:
                return sent

    def send_due_followups(self, now: datetime) -> int:
        """Claim due follow-ups (first comments, edits, deletes) and send their tasks."""
        assert self.send_followups is not None
        return send_due_followups(
            self.sessions, self.send_followups, now, self.resend_after, self.batch
        )

    def send_due_insights(self, now: datetime) -> int:
        """Claim one batch of due insight fetches and send their tasks."""
        assert self.send_insights is not None
        return claim_and_send_insights(self.sessions, None, now, send=self.send_insights)

    def maybe_purge(self, now: datetime) -> int | None:
        """Delete expired idempotency keys, if no dispatcher did today; how many, or None.

        The shared row is asked at most every :data:`PURGE_ASK_EVERY`, so an idle
        tick does not pay a statement for a daily job.
        """
        if self._purge_asked is not None and now - self._purge_asked < PURGE_ASK_EVERY:
            return None
        self._purge_asked = now
        with self.sessions.begin() as session:
            if not claim_periodic_run(session, PURGE_JOB, now, PURGE_EVERY):
                return None
            purged = purge_expired_keys(session, now)
        if purged:
            logger.info(
                "deleted %d expired idempotency keys",
                purged,
                extra={"action": "idempotency_purged", "count": purged},
            )
        return purged

    def maybe_sweep_media(self, now: datetime) -> RetentionResult | None:
        """Every :data:`MEDIA_SWEEP_EVERY`: delete one batch of media past retention.

        Dispatchers may run it at once: each skips the rows another has locked.
        """
        if self.media_store is None or (
            self._media_swept is not None and now - self._media_swept < MEDIA_SWEEP_EVERY
        ):
            return None
        self._media_swept = now
        return sweep_media(self.sessions, self.media_store, now, self.media_retention, self.batch)

    def maybe_remove_leftovers(self, now: datetime) -> bool:
        """Start removing media left on Graph if no dispatcher did within ``leftovers_every``."""
        if self.remover is None or self._removing.locked():
            return False
        if self._leftovers_asked is not None and now - self._leftovers_asked < self.leftovers_every:
            return False
        self._leftovers_asked = now
        with self.sessions.begin() as session:
            if not claim_periodic_run(session, LEFTOVERS_JOB, now, self.leftovers_every):
                return False
        threading.Thread(target=self._remove_leftovers, name="media-leftovers", daemon=True).start()
        return True

    def _remove_leftovers(self) -> None:
        assert self.remover is not None
        with self._removing:
            try:
                sweep_leftovers(self.remover)
            except Exception as exc:
                if unreachable(exc) is None:
                    logger.exception(
                        "removing media left on Graph failed",
                        extra={"action": "media_leftovers_failed"},
                    )

    def maybe_sweep(self, now: datetime) -> bool:
        """Start the sweep if this deployment has not run it within ``sweep_every``."""
        if self.sweep is None or self._sweeping.locked():
            return False
        with self.sessions.begin() as session:
            if not claim_periodic_run(session, SWEEP_JOB, now, self.sweep_every):
                return False
        if not self.sweep_in_thread:
            self._sweep(now)
            return True
        self._thread = threading.Thread(
            target=self._sweep, args=(now,), name="expiry-sweep", daemon=True
        )
        self._thread.start()
        return True

    def _sweep(self, now: datetime) -> SweepResult | None:
        assert self.sweep is not None
        with self._sweeping:
            try:
                return self.sweep.run(now)
            except Exception:
                logger.exception("the token check failed", extra={"action": "expiry_sweep_failed"})
                return None

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for a sweep started on its thread (tests, shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout_s)


def build_housekeeping(
    settings: Settings,
    sessions: sessionmaker[Session],
    send_deliveries: DeliverySender,
    send_followups: DeliverySender | None = None,
    send_insights: DeliverySender | None = None,
) -> tuple[Housekeeping, Callable[[], None]]:
    """A dispatcher's housekeeping from the settings, and what closes its resources.

    The sweep reads tokens, so it gets its own engine with the keys, and a
    Graph client; without the app's id, secret and keys it is left out (logged).
    """
    closers: list[Callable[[], None]] = []
    sweep = None
    remover = None
    if settings.app_id and settings.app_secret and settings.encryption_keys:
        engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
        http = make_http_client(settings.graph_timeout_s)
        sweep_sessions = make_sessionmaker(engine)
        database_clock = DatabaseClock(sweep_sessions)
        graph = GraphClient(
            http,
            graph_url=settings.graph_url,
            version=settings.graph_version,
            app_id=settings.app_id,
            app_secret=settings.app_secret.get_secret_value(),
            appsecret_time=settings.appsecret_time,
            # Timed proofs are signed on the database's clock, like everything else here.
            clock=database_clock.timestamp,
        )
        sweep = ExpirySweep.from_settings(sweep_sessions, graph, settings)
        remover = Remover(
            sweep_sessions, graph, f"{socket.gethostname()}:{os.getpid()}", database_clock
        )
        closers += [http.close, engine.dispose]
    else:
        logger.warning(
            "token check disabled: it needs OFFPOST_APP_ID, OFFPOST_APP_SECRET and "
            "OFFPOST_ENCRYPTION_KEYS",
            extra={"action": "expiry_sweep_disabled"},
        )
    housekeeping = Housekeeping(
        sessions,
        run_schedules=partial(
            run_schedules, sessions, occurrences_per_day=settings.quota_occurrences_per_day
        ),
        send_deliveries=send_deliveries,
        resend_after=timedelta(seconds=settings.requeue_after_s),
        per_endpoint=settings.webhook_per_endpoint,
        webhook_retry_for=timedelta(seconds=settings.webhook_retry_for_s),
        sweep=sweep,
        sweep_every=timedelta(seconds=settings.expiry_sweep_every_s),
        media_store=make_media_store(settings),
        media_retention=timedelta(hours=settings.media_retention_h),
        remover=remover,
        send_followups=send_followups,
        send_insights=send_insights,
    )

    def close() -> None:
        for closer in closers:
            closer()

    return housekeeping, close

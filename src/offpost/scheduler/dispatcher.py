"""The dispatcher: turns due posts into broker messages, and keeps the pipeline honest.

Each tick (docs/design.md):

1. ``before_tick`` — recurring schedules materialize their next occurrences.
2. Reap ``publishing`` posts whose lease ran out (they owe reconciliation).
3. Re-send ``queued`` posts whose message is overdue (lost or stuck).
4. Claim due posts in bounded batches (``scheduled`` → ``queued``), commit, then
   send one message per ``message_batch`` posts.

Then it sleeps until the next due time — one index lookup — bounded by
``max_sleep_s`` and cut short by a :class:`~offpost.scheduler.wake.Waker`.
Any number of dispatchers may run: every step is a guarded claim (``SKIP LOCKED``
on PostgreSQL), so they share the work without a leader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from offpost.connections import DATABASE, REDIS, ConnectionWatch
from offpost.models.clock import DatabaseClock
from offpost.models.transitions import claim_due_timed, next_due_at, reap_expired, requeue_stale
from offpost.scheduler.wake import LocalWaker, Waker
from offpost.workers.metrics import RoleMetrics

logger = logging.getLogger(__name__)

Sender = Callable[[list[str]], None]


@dataclass(frozen=True)
class DispatcherConfig:
    dispatch_batch: int = 500
    message_batch: int = 50
    requeue_after: timedelta = timedelta(seconds=120)
    max_sleep_s: float = 2.0
    #: Reaping and re-sending cost a query each; they need not run every tick.
    housekeeping_every_s: float = 1.0


@dataclass
class TickResult:
    claimed: int = 0
    requeued: int = 0
    reaped: int = 0
    next_due_at: datetime | None = None


def chunks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def chunks_by_due(timed: list[tuple[str, datetime]], size: int) -> list[list[str]]:
    """The ids of ``timed`` (in due order) in messages of up to ``size``, posts due at the
    same instant kept in one message where they fit.

    The posts of one Graph batch request whose reply was lost are put back due at
    one instant, so that one worker looks for all of them with one read per Page.
    """
    messages: list[list[str]] = []
    current: list[str] = []
    index = 0
    while index < len(timed):
        end = index
        while end < len(timed) and timed[end][1] == timed[index][1]:
            end += 1
        run = [post_id for post_id, _ in timed[index:end]]
        if current and len(current) + len(run) > size:
            messages.append(current)
            current = []
        while len(run) > size:
            messages.append(run[:size])
            run = run[size:]
        current += run
        index = end
    if current:
        messages.append(current)
    return messages


def sleep_seconds(now: datetime, next_due: datetime | None, max_sleep_s: float) -> float:
    """How long to sleep: until the next due post, at most ``max_sleep_s``."""
    if next_due is None:
        return max_sleep_s
    return min(max_sleep_s, max(0.0, (next_due - now).total_seconds()))


class Dispatcher:
    """One dispatcher loop; run as many as you like."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        send: Sender,
        *,
        config: DispatcherConfig | None = None,
        waker: Waker | None = None,
        before_tick: Callable[[datetime], object] | None = None,
        clock: Callable[[], datetime] | None = None,
        check_broker: Callable[[], object] | None = None,
        metrics: RoleMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        #: Ticks and hand-off lateness, for Prometheus (the dispatcher role's /metrics).
        self.metrics = metrics
        self.send = send
        #: Asks the broker whether it is back (a Redis ping), while it is down:
        #: an idle dispatcher sends nothing, so no send would tell.
        self.check_broker = check_broker
        self.config = config or DispatcherConfig()
        self.waker = waker or LocalWaker()
        self.before_tick = before_tick
        #: The database's clock unless told otherwise: every dispatcher, on any
        #: machine, claims, re-sends and stamps by the same time.
        self.clock = clock or DatabaseClock(sessions)
        self.connections = ConnectionWatch()
        self._last_housekeeping: datetime | None = None

    def tick(self) -> TickResult:
        """One pass; returns what it did and when the next post is due."""
        cfg = self.config
        result = TickResult()
        now = self.clock()
        if self.metrics is not None:
            self.metrics.dispatcher_ticks.inc()
        if self.before_tick is not None:
            self.before_tick(now)
        if self._housekeeping_due(now):
            with self._database() as session:
                result.reaped = len(reap_expired(session, now, cfg.dispatch_batch))
            with self._database() as session:
                stale = requeue_stale(session, now, cfg.requeue_after, cfg.dispatch_batch)
            self._send(stale)
            result.requeued = len(stale)
            if result.reaped or result.requeued:
                logger.warning(
                    "reaped %d expired leases, re-sent %d stale queued posts",
                    result.reaped,
                    result.requeued,
                    extra={"action": "dispatcher_housekeeping"},
                )
        while True:
            now = self.clock()
            with self._database() as session:
                timed = claim_due_timed(session, now, cfg.dispatch_batch)
            claimed = [post_id for post_id, _ in timed]
            # Sent only after the claim committed: a crash in between leaves
            # queued rows, which requeue_stale re-sends.
            self._send_messages(chunks_by_due(timed, cfg.message_batch))
            if self.metrics is not None:
                for _, due_at in timed:
                    self.metrics.dispatch_lateness.observe(max(0.0, (now - due_at).total_seconds()))
            result.claimed += len(claimed)
            if len(claimed) < cfg.dispatch_batch:
                break
        with self._database() as session:
            result.next_due_at = next_due_at(session)
        if result.claimed:
            logger.info(
                "dispatched %d posts",
                result.claimed,
                extra={"action": "posts_dispatched", "count": result.claimed},
            )
        return result

    def _housekeeping_due(self, now: datetime) -> bool:
        last = self._last_housekeeping
        if last is None or (now - last).total_seconds() >= self.config.housekeeping_every_s:
            self._last_housekeeping = now
            return True
        return False

    @contextmanager
    def _database(self) -> Iterator[Session]:
        """A transaction; once it has committed, the database is known to be reachable."""
        with self.sessions.begin() as session:
            yield session
        self.connections.succeeded(DATABASE)

    def _send(self, ids: list[str]) -> None:
        self._send_messages(chunks(ids, self.config.message_batch))

    def _send_messages(self, messages: list[list[str]]) -> None:
        for message in messages:
            self.send(message)
            self.connections.succeeded(REDIS)

    def _check_broker(self) -> None:
        """While Redis is down, ask it directly whether it is back."""
        if self.check_broker is None or not self.connections.is_down(REDIS):
            return
        try:
            self.check_broker()
        except Exception as exc:
            if not self.connections.failed(exc):
                logger.exception("broker check failed", extra={"action": "broker_check_failed"})
            return
        self.connections.succeeded(REDIS)

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; database or broker errors are logged and retried.

        A server that restarts costs failed ticks until it is back, logged once
        when the connection is lost and once when it is restored. Each server's
        lines are its own: the database is restored at the first transaction
        that commits, Redis at the first message sent or, while nothing is
        sent, the first answer to ``check_broker``. Posts claimed but not sent
        meanwhile stay ``queued``, and are re-sent as stale.
        """
        logger.info("dispatcher started", extra={"action": "dispatcher_started"})
        while not stop.is_set():
            self._check_broker()
            try:
                result = self.tick()
                pause = sleep_seconds(self.clock(), result.next_due_at, self.config.max_sleep_s)
            except Exception as exc:
                if not self.connections.failed(exc):
                    logger.exception(
                        "dispatcher tick failed; retrying", extra={"action": "tick_failed"}
                    )
                pause = self.config.max_sleep_s
            if pause > 0 and not stop.is_set():
                self.waker.wait(pause)
        logger.info("dispatcher stopped", extra={"action": "dispatcher_stopped"})

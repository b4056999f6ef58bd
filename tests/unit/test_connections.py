"""Which errors mean "a server is unreachable", and the one line each way an outage costs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import psycopg
import pytest
import redis
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from sqlalchemy.orm import Session, sessionmaker

from offpost.connections import DATABASE, REDIS, ConnectionWatch, unreachable
from offpost.scheduler import dispatcher as dispatcher_module
from offpost.scheduler.dispatcher import Dispatcher
from offpost.workers.broker import Channel


def wrapped(orig: Exception, *, invalidated: bool = False) -> SQLAlchemyOperationalError:
    """What SQLAlchemy raises for ``orig`` (its driver's error)."""
    return SQLAlchemyOperationalError("SELECT 1", None, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("exc", "server"),
    [
        (wrapped(psycopg.OperationalError("connection failed: Connection refused")), DATABASE),
        (wrapped(psycopg.errors.AdminShutdown("terminating connection")), DATABASE),
        (wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), DATABASE),
        (wrapped(psycopg.errors.ConnectionFailure("connection failure")), DATABASE),
        (wrapped(psycopg.errors.DeadlockDetected("deadlock"), invalidated=True), DATABASE),
        (psycopg.OperationalError("server closed the connection unexpectedly"), DATABASE),
        (redis.ConnectionError("Error 111 connecting"), REDIS),
        (redis.TimeoutError("Timeout reading from socket"), REDIS),
        (BrokerError("Error 111 connecting to 127.0.0.1:6379"), REDIS),
    ],
)
def test_connection_failures_name_their_server(exc: Exception, server: str) -> None:
    assert unreachable(exc) == server


@pytest.mark.parametrize(
    "exc",
    [
        # The server answered: these are not outages.
        wrapped(psycopg.errors.DeadlockDetected("deadlock detected")),
        wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
        wrapped(psycopg.errors.QueryCanceled("canceling statement due to statement timeout")),
        redis.ResponseError("WRONGTYPE"),
        ValueError("a bug"),
    ],
)
def test_other_errors_are_not_outages(exc: Exception) -> None:
    assert unreachable(exc) is None


def test_a_cause_or_context_counts() -> None:
    outer = RuntimeError("sending failed")
    outer.__cause__ = redis.ConnectionError("Connection closed by server.")
    assert unreachable(outer) == REDIS
    chained = RuntimeError("while handling")
    chained.__context__ = psycopg.OperationalError("consuming input failed")
    assert unreachable(chained) == DATABASE


def test_an_outage_is_one_line_when_lost_and_one_when_restored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    watch = ConnectionWatch(clock=lambda: now[0])
    down = wrapped(psycopg.OperationalError("connection failed: Connection refused"))
    with caplog.at_level(logging.WARNING, logger="offpost.connections"):
        watch.succeeded(DATABASE)  # nothing was lost: nothing to say
        assert watch.failed(down)
        assert watch.failed(down)
        assert watch.is_down(DATABASE)
        assert not watch.failed(ValueError("a bug"))
        now[0] += 2.5
        watch.succeeded(DATABASE)
        watch.succeeded(DATABASE)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "lost the connection to the database (OperationalError: connection failed: "
        "Connection refused); retrying until it is back",
        "connection to the database restored after 2.5 s",
    ]
    assert not watch.is_down(DATABASE)


class _ClosedTransport:
    client = None


def test_a_channel_of_a_closed_broker_connection_raises_a_connection_error() -> None:
    # kombu detaches the transport before it closes the channel; restoring the
    # channel's messages then needs connection parameters it no longer has.
    channel = Channel.__new__(Channel)
    channel.connection = _ClosedTransport()
    with pytest.raises(redis.ConnectionError):
        channel._connparams()


class Outages:
    """A dispatcher's world, one step per tick: which server is down at which step.

    The step is also the clock of the dispatcher's :class:`ConnectionWatch`, so
    an outage's reported length is counted in steps.
    """

    def __init__(self, *, database_down: range, redis_down: range, due: range, steps: int) -> None:
        self.database_down, self.redis_down, self.due, self.steps = (
            database_down,
            redis_down,
            due,
            steps,
        )
        self.step = 0
        self.sent: list[list[str]] = []
        self.pings = 0
        self.stop = threading.Event()

    @contextmanager
    def begin(self) -> Iterator[object]:  # the sessions' transactions
        if self.step in self.database_down:
            raise wrapped(psycopg.OperationalError("connection failed: Connection refused"))
        yield object()

    def send(self, ids: list[str]) -> None:
        if self.step in self.redis_down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        self.sent.append(ids)

    def ping(self) -> bool:
        self.pings += 1
        if self.step in self.redis_down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        return True

    def wait(self, timeout_s: float) -> bool:  # the waker: each sleep ends a step
        self.step += 1
        if self.step >= self.steps:
            self.stop.set()
        return False

    def close(self) -> None:
        pass

    def claim_due_timed(
        self, session: object, now: datetime, batch: int
    ) -> list[tuple[str, datetime]]:
        return [(f"post-{self.step}", now)] if self.step in self.due else []

    def run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(dispatcher_module, "claim_due_timed", self.claim_due_timed)
        monkeypatch.setattr(dispatcher_module, "reap_expired", lambda *_: [])
        monkeypatch.setattr(dispatcher_module, "requeue_stale", lambda *_: [])
        monkeypatch.setattr(dispatcher_module, "next_due_at", lambda _: None)
        loop = Dispatcher(
            cast(sessionmaker[Session], self),
            self.send,
            waker=self,
            check_broker=self.ping,
        )
        loop.connections = ConnectionWatch(clock=lambda: float(self.step))
        loop.run(self.stop)


def connection_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    """(action, server, step-length of a restored outage) of each line of offpost.connections."""
    lines: list[tuple[Any, ...]] = []
    for record in caplog.records:
        if record.name == "offpost.connections":
            action, server = record.__dict__["action"], record.__dict__["server"]
            after = record.getMessage().rpartition(" after ")[2]
            lines.append(
                (action, server, after) if action == "connection_restored" else (action, server)
            )
    return lines


def test_an_idle_dispatcher_says_redis_is_restored_without_sending_anything(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # One post at step 0, whose message fails; then nothing more to send.
    world = Outages(database_down=range(0), redis_down=range(0, 3), due=range(0, 1), steps=6)
    with caplog.at_level(logging.WARNING, logger="offpost.connections"):
        world.run(monkeypatch)
    assert connection_lines(caplog) == [
        ("connection_lost", REDIS),
        ("connection_restored", REDIS, "3.0 s"),
    ]
    assert world.sent == []  # the ping said so, not a message
    assert world.pings == 3  # only while Redis was down (steps 1, 2, 3)


def test_a_redis_outage_does_not_lengthen_the_database_outage(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The database is down at steps 1-2, Redis at 1-5 (seen from step 3 on, the
    # first time a message is sent); a post is due at every step.
    world = Outages(database_down=range(1, 3), redis_down=range(1, 6), due=range(8), steps=8)
    with caplog.at_level(logging.WARNING, logger="offpost.connections"):
        world.run(monkeypatch)
    assert connection_lines(caplog) == [
        ("connection_lost", DATABASE),
        ("connection_restored", DATABASE, "2.0 s"),
        ("connection_lost", REDIS),
        ("connection_restored", REDIS, "3.0 s"),
    ]
    assert world.sent == [["post-0"], ["post-6"], ["post-7"]]

"""Which errors mean "a server is unreachable", and the one line each way an outage costs."""

from __future__ import annotations

import logging

import psycopg
import pytest
import redis
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

from offpost.connections import DATABASE, REDIS, ConnectionWatch, unreachable
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

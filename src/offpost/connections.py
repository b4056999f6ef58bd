"""Losing and regaining PostgreSQL or Redis: one line each way, not a traceback per try.

When a server restarts, every call to it fails until it is back. The
dispatcher and the workers carry on by themselves (pool pre-ping reconnects to
PostgreSQL, Celery and redis-py reconnect to Redis, and the database says what
is left to do). What an operator needs is to see when a connection was lost and
when it came back: :class:`ConnectionWatch` logs the first failure of an outage
as one line (no traceback; server messages name host and port, never a
password) and the first success after it with the outage's length.

This module imports nothing of offpost, so every layer may use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
import redis
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

logger = logging.getLogger(__name__)

DATABASE = "the database"
REDIS = "Redis"

# SQLSTATE class 08 (connection exception) and the server going away.
_SERVER_GONE = {"57P01", "57P02", "57P03"}


def unreachable(exc: BaseException) -> str | None:
    """Which server ``exc`` says is unreachable (:data:`DATABASE`, :data:`REDIS`), else None.

    A deadlock or a serialization failure is an ``OperationalError`` too, but the
    server answered: only connection failures count.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _database_unreachable(current):
            return DATABASE
        if isinstance(current, redis.ConnectionError | redis.TimeoutError | BrokerError):
            return REDIS
        current = current.__cause__ or current.__context__
    return None


def _database_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return _database_unreachable(exc.orig) if exc.orig is not None else False
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _SERVER_GONE
    return False


def redis_probe(broker_url: str) -> redis.Redis | None:
    """A client whose ``ping`` asks whether Redis is back; None when the broker is not Redis."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    return redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line[:200]}"


class ConnectionWatch:
    """One process's view of its servers: which are unreachable, since when.

    Thread-safe: a worker's publishing threads share one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._lost_at: dict[str, float] = {}

    def failed(self, exc: BaseException) -> bool:
        """True when ``exc`` says a server is unreachable; the first of an outage is logged."""
        server = unreachable(exc)
        if server is None:
            return False
        with self._lock:
            first = server not in self._lost_at
            if first:
                self._lost_at[server] = self._clock()
        if first:
            logger.warning(
                "lost the connection to %s (%s); retrying until it is back",
                server,
                _reason(exc),
                extra={"action": "connection_lost", "server": server},
            )
        return True

    def succeeded(self, server: str) -> None:
        """A call to ``server`` went through: log the end of its outage, if any."""
        with self._lock:
            lost_at = self._lost_at.pop(server, None)
        if lost_at is not None:
            logger.warning(
                "connection to %s restored after %.1f s",
                server,
                self._clock() - lost_at,
                extra={"action": "connection_restored", "server": server},
            )

    def is_down(self, server: str) -> bool:
        with self._lock:
            return server in self._lost_at

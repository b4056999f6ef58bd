"""A few PostgreSQL connections for the work the API does on its event loop.

Most routes are plain functions: FastAPI runs them in its thread pool, with a
SQLAlchemy session each. ``POST /v1/posts`` is the one route built for
request rate (docs/benchmarks.md §4): its key lookup and its post run on the
event loop, on psycopg ``AsyncConnection``\\s from this small pool, with no
thread to hand over to and back (:mod:`offpost.posts.single`).

The connections are in autocommit mode: a read is one statement and one
round trip, and a write sends its own ``BEGIN`` and ``COMMIT`` (a pipeline,
:func:`offpost.posts.pipeline.run_pipeline`). A connection that comes back
in a transaction is rolled back, one that failed is closed, and an idle one
that the server has closed (a restart) is noticed before it is handed out,
without a round trip: its socket is readable. The pool belongs to the event
loop it was opened on (the app's lifespan); :meth:`AsyncDatabase.usable`
tells a request on another loop to use the session-based way instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.engine import URL, Dialect, make_url

__all__ = ["AsyncDatabase", "Turns", "conninfo_of"]

#: Connections one API process keeps for its event loop's work, beside the thread
#: pool's (offpost.api.app.MAX_API_CONNECTIONS).
ASYNC_CONNECTIONS = 10
#: Of those, how many one API client's requests may hold at once (see :class:`Turns`).
CONNECTIONS_PER_CLIENT = 4


def conninfo_of(url: str | URL) -> str:
    """libpq's connection string for a SQLAlchemy PostgreSQL URL."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class Turns:
    """At most ``size`` holders per key at once; the others wait their turn.

    One client's new posts commit one at a time anyway (they take turns on the
    client's row lock): a few of its requests waiting at the database keep
    that line full, and more would only hold connections that other clients'
    requests need. Keys are forgotten when nobody holds or waits for them.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        slots, users = self._keys.get(key, (None, 0))
        if slots is None:
            slots = asyncio.Semaphore(self._size)
        self._keys[key] = (slots, users + 1)
        try:
            async with slots:
                yield
        finally:
            slots, users = self._keys[key]
            if users == 1:
                del self._keys[key]
            else:
                self._keys[key] = (slots, users - 1)


class AsyncDatabase:
    """At most ``size`` autocommit ``AsyncConnection``\\s, opened when first needed;
    :attr:`per_client` gives each API client its turns at them."""

    def __init__(self, url: str | URL, dialect: Dialect, size: int = ASYNC_CONNECTIONS) -> None:
        self._conninfo = conninfo_of(url)
        #: The SQLAlchemy dialect the statements are compiled for (the engine's).
        self.dialect = dialect
        self.per_client = Turns(min(size, CONNECTIONS_PER_CLIENT))
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False

    def usable(self) -> bool:
        """Whether this request runs on the loop the pool belongs to."""
        return not self._closed and asyncio.get_running_loop() is self._loop

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one request's statements, idle (no transaction) when taken."""
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            except BaseException:
                await self._give_back(conn, failed=True)
                raise
            await self._give_back(conn, failed=False)

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn = self._idle.pop()
            if _alive(conn):
                return conn
            await _close(conn)
        return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)

    async def _give_back(self, conn: psycopg.AsyncConnection[Any], *, failed: bool) -> None:
        if self._closed or conn.closed or conn.broken:
            await _close(conn)
            return
        if not _idle(conn):
            try:
                await conn.rollback()
            except psycopg.Error:
                await _close(conn)
                return
            if not _idle(conn):
                await _close(conn)
                return
        if failed and not _alive(conn):
            await _close(conn)
            return
        self._idle.append(conn)

    async def close(self) -> None:
        """Close every idle connection; connections in use are closed when given back."""
        self._closed = True
        while self._idle:
            await _close(self._idle.pop())


def _idle(conn: psycopg.AsyncConnection[Any]) -> bool:
    return conn.info.transaction_status == TransactionStatus.IDLE


def _alive(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection may still be used: open, and nothing waiting on its
    socket (an idle connection is sent nothing; data or EOF means the server left)."""
    if conn.closed or conn.broken or not _idle(conn):
        return False
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()

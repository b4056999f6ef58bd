"""One clock for the whole deployment: the database's.

Dispatchers and workers run on many machines, and their clocks disagree.
Every time that another process compares — a lease's end, an attempt's start
(where reconciliation begins its search of the Page), when a retry is due —
therefore comes from the database server, not from the machine that writes it:

- the statements that take and reap leases compute with the database's own
  time (:func:`db_now`: ``statement_timestamp()`` on PostgreSQL) inside the
  statement;
- everything else a process writes or signs (a timed ``appsecret_proof``)
  comes from a :class:`DatabaseClock`: the
  machine's clock corrected by its offset from the database's, measured with
  one ``SELECT`` and re-measured every :data:`RESYNC_S` seconds. Between
  measurements the offset drifts by the machines' rate difference (parts per
  million), so the error is about half a round trip to the database.

On SQLite (``offpost up``) everything runs in one process on one machine, so
the machine's clock is the database's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session, sessionmaker

from offpost.models.base import utcnow
from offpost.models.types import UTCDateTime

#: Seconds between two measurements of a process's offset from the database.
RESYNC_S = 30.0


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def db_now(session: Session, fallback: datetime | None = None) -> Any:
    """The database's current time as a SQL expression, for use inside a statement.

    ``statement_timestamp()`` on PostgreSQL (the start of the statement, not of
    the transaction). Elsewhere — SQLite, where the database and every process
    share one machine — ``fallback`` (or the machine's clock) as a bound value.
    """
    if is_postgresql(session):
        return func.statement_timestamp(type_=UTCDateTime())
    return literal(fallback or utcnow(), UTCDateTime())


class DatabaseClock:
    """A clock that reads the database's time; callable like :func:`utcnow`.

    ``offset`` is the database's time minus the machine's. It is measured at
    the first call and again once :data:`RESYNC_S` have passed; if the database
    cannot be reached, the last offset stands (0 before any measurement) and
    the next call tries again.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        machine: Callable[[], datetime] = utcnow,
        resync_s: float = RESYNC_S,
    ) -> None:
        self._sessions = sessions
        self._machine = machine
        self._resync_s = resync_s
        self._lock = threading.Lock()
        self.offset = timedelta(0)
        self._measured_at: float | None = None

    def __call__(self) -> datetime:
        if self._measured_at is None or time.monotonic() - self._measured_at >= self._resync_s:
            self.measure()
        return self._machine() + self.offset

    def timestamp(self) -> float:
        """The database's time as Unix seconds (a drop-in for :func:`time.time`)."""
        return self().timestamp()

    def measure(self) -> None:
        """Measure the offset now (one short read-only transaction)."""
        if not self._lock.acquire(blocking=False):
            return  # another thread is measuring; its result serves this call too
        try:
            with self._sessions() as session:
                if not is_postgresql(session):
                    self._measured_at = time.monotonic()
                    return
                before = self._machine()
                database = session.scalar(select(db_now(session)))
                after = self._machine()
            if not isinstance(database, datetime):
                raise TypeError(f"the database's time came back as {database!r}")
            # The database read its clock somewhere between the two readings of ours.
            self.offset = database - (before + (after - before) / 2)
            self._measured_at = time.monotonic()
        except Exception:  # noqa: BLE001 - an unreachable database keeps the last offset
            self._measured_at = time.monotonic() - self._resync_s + 1.0  # retry in a second
        finally:
            self._lock.release()

"""Periodic jobs that must run once per interval per deployment, however many dispatchers run.

One row per job name holds when it last started. :func:`claim_periodic_run` is
a guarded UPDATE (``… WHERE last_run_at <= now - every``): of several
dispatchers asking at once exactly one gets the row, and the answer survives
restarts, unlike a per-process timer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import String, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from offpost.models.base import Base


class PeriodicRun(Base):
    """When a periodic job last started."""

    __tablename__ = "periodic_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)

    def __repr__(self) -> str:
        return f"PeriodicRun(name={self.name!r}, last_run_at={self.last_run_at!r})"


def claim_periodic_run(session: Session, name: str, now: datetime, every: timedelta) -> bool:
    """Whether this caller runs job ``name`` now (and it is then marked as started at ``now``).

    True at most once per ``every`` across all callers sharing the database.
    The caller commits.
    """
    insert_fn = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    session.execute(
        insert_fn(PeriodicRun).values(name=name, last_run_at=None).on_conflict_do_nothing()
    )
    result = session.execute(
        update(PeriodicRun)
        .where(
            PeriodicRun.name == name,
            or_(PeriodicRun.last_run_at.is_(None), PeriodicRun.last_run_at <= now - every),
        )
        .values(last_run_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]

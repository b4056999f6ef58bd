"""Claiming due rows for a worker: the dispatcher's half of a row-driven task.

Follow-ups and insight fetches are rows with a ``due_at``, a ``status`` that is
``pending`` until done, ``attempts`` and an ``in_flight_until`` (sent to a
worker, or held by one: not sent again before it). :func:`claim_due` picks the
due ones not in flight and marks them in flight until the re-send time, in one
guarded ``UPDATE``; on PostgreSQL the candidates are locked ``FOR UPDATE SKIP
LOCKED``, so two dispatchers never send the same row.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session


def free(model: Any, now: datetime) -> Any:
    """Not sent to a worker, or its time in flight is over."""
    return or_(model.in_flight_until.is_(None), model.in_flight_until <= now)


def claim_due(
    session: Session,
    model: Any,
    pending: enum.StrEnum,
    now: datetime,
    resend_after: timedelta,
    limit: int,
    **values: Any,
) -> list[tuple[str, int]]:
    """Up to ``limit`` due ``pending`` rows of ``model``, oldest due first, marked in flight
    until ``now + resend_after`` (and set to ``values``); ``(id, attempts)`` of each."""
    due = (
        select(model.id)
        .where(model.status == pending, model.due_at <= now, free(model, now))
        .order_by(model.due_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    result = session.execute(
        update(model)
        .where(model.id.in_(ids), model.status == pending, free(model, now))
        .values(in_flight_until=now + resend_after, updated_at=now, **values)
        .returning(model.id, model.attempts)
        .execution_options(synchronize_session=False)
    )
    return [(row.id, row.attempts) for row in result]

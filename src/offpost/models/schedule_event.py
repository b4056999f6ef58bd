"""A schedule's history: what happened to it and to its occurrences.

One row per event, newest last (the integer id orders them). Occurrence
events name the occurrence (``occurrence_at``, UTC); the unique
``(schedule_id, occurrence_at, kind)`` makes recording one twice (two
dispatchers, a retried tick) a no-op instead of a duplicate line. Events about
the schedule itself (paused, resumed, updated, deleted) have no occurrence.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, check_in, utcnow
from offpost.models.ids import ID_LENGTH
from offpost.models.types import StrEnumType


class ScheduleEventKind(enum.StrEnum):
    """What happened."""

    #: A missed occurrence was dropped (misfire ``skip``, or an older one under ``catch_up_one``).
    SKIPPED = "skipped"
    #: A missed occurrence is published late (misfire ``catch_up_one``).
    CAUGHT_UP = "caught_up"
    PAUSED = "paused"
    RESUMED = "resumed"
    #: Content or rule changed; future occurrences were re-made.
    UPDATED = "updated"
    DELETED = "deleted"


class ScheduleEvent(Base):
    """One line of a schedule's history."""

    __tablename__ = "schedule_events"
    __table_args__ = (
        check_in("kind", ScheduleEventKind, "kind"),
        UniqueConstraint("schedule_id", "occurrence_at", "kind"),
        Index("ix_schedule_events_schedule_id", "schedule_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("schedules.id"))
    kind: Mapped[ScheduleEventKind] = mapped_column(StrEnumType(ScheduleEventKind))
    #: The occurrence the event is about (UTC), if any.
    occurrence_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Free-form facts: ``{"reason": "misfire", "post_id": …}``, ``{"fields": [...]}``.
    detail: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"ScheduleEvent(schedule_id={self.schedule_id!r}, kind={self.kind.value!r})"

"""Schedules: recurring posts (the OpenAPI document).

A schedule holds the content and the rule (an RFC 5545 RRULE *or* a 5-field
cron expression, never both, enforced by a CHECK), evaluated in an IANA
``timezone``. The dispatcher materialises its occurrences as ordinary posts
ahead of time: ``next_run_at`` is the next occurrence not yet materialised (the
dispatcher finds work through the partial index on active schedules),
``materialized_until`` how far ahead posts exist. The recurrence arithmetic
itself lives in the scheduler layer; this module only stores its state.

A deleted schedule keeps its row (its posts refer to it) with status
``deleted``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, Timestamps, check_in, where_status
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import NullableJSONDocument, StrEnumType


class ScheduleStatus(enum.StrEnum):
    """Whether a schedule creates posts."""

    ACTIVE = "active"
    PAUSED = "paused"
    DELETED = "deleted"


class Misfire(enum.StrEnum):
    """What happens to occurrences missed while offpost was down."""

    #: Drop them (and record that).
    SKIP = "skip"
    #: Publish the latest missed one.
    CATCH_UP_ONE = "catch_up_one"


class Schedule(Timestamps, Base):
    """A recurring post: content, a rule, a time zone, and how far it has run."""

    __tablename__ = "schedules"
    __table_args__ = (
        check_in("status", ScheduleStatus, "status"),
        check_in("misfire", Misfire, "misfire"),
        CheckConstraint("(rrule IS NULL) <> (cron IS NULL)", name="one_rule"),
        CheckConstraint(
            "message IS NOT NULL OR link IS NOT NULL OR photo_url IS NOT NULL OR media IS NOT NULL",
            name="content",
        ),
        CheckConstraint("occurrences_created >= 0", name="occurrences_created"),
        Index("ix_schedules_next_run", "next_run_at", **where_status(ScheduleStatus.ACTIVE)),
        Index("ix_schedules_client_created", "client_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.SCHEDULE)
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    credential_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("credentials.id"))
    #: The Page id to publish on.
    target: Mapped[str] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text, default=None)
    link: Mapped[str | None] = mapped_column(Text, default=None)
    photo_url: Mapped[str | None] = mapped_column(Text, default=None)
    #: Photos, a video or a Reel: ``{"photos": [...]}``, ``{"video": {...}}`` or
    #: ``{"reel": {...}}``, each source a ``url`` or an uploaded ``media_id``
    #: (offpost.posts.media).
    media: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONDocument, default=None)
    #: Each occurrence's first comment (``{date}`` and ``{time}`` filled in as in ``message``).
    first_comment: Mapped[str | None] = mapped_column(Text, default=None)
    #: An RFC 5545 RRULE, with ``start_at`` as DTSTART in ``timezone``.
    rrule: Mapped[str | None] = mapped_column(Text, default=None)
    #: A 5-field cron expression, evaluated in ``timezone``.
    cron: Mapped[str | None] = mapped_column(String(255), default=None)
    #: An IANA time zone name, e.g. ``Europe/Berlin``.
    timezone: Mapped[str] = mapped_column(String(64))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime | None] = mapped_column(default=None)
    misfire: Mapped[Misfire] = mapped_column(StrEnumType(Misfire), default=Misfire.SKIP)
    status: Mapped[ScheduleStatus] = mapped_column(
        StrEnumType(ScheduleStatus), default=ScheduleStatus.ACTIVE
    )
    #: The next occurrence without a post yet; ``None`` once the rule has ended.
    next_run_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Posts exist for every occurrence up to here.
    materialized_until: Mapped[datetime | None] = mapped_column(default=None)
    occurrences_created: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        rule = f"rrule={self.rrule!r}" if self.rrule is not None else f"cron={self.cron!r}"
        return f"Schedule(id={self.id!r}, {rule}, timezone={self.timezone!r})"

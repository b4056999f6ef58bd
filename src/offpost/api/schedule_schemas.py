"""Request and response bodies of ``/v1/schedules`` (the OpenAPI document).

Field types are shared with the posts' bodies (:mod:`.schemas`): messages go
out as sent, URLs are http(s), times need an offset. The rule itself is
checked by :func:`offpost.recurrence.parse_rule`, which names the
bad field (``rrule``, ``cron``, ``timezone``, ``start_at``, ``end_at``).
Occurrence times (``upcoming``, preview) carry the schedule's zone offset,
e.g. ``2026-12-01T09:00:00+01:00``; every other time is UTC with ``Z``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from offpost.models import Misfire, Schedule, ScheduleEvent
from offpost.posts.input import (
    HttpURL,
    Message,
    PhotoList,
    ReelIn,
    RequestModel,
    RFC3339Time,
    ShortId,
    VideoIn,
)
from offpost.recurrence import MAX_PREVIEW
from offpost.views import MediaSourceOut, ReelOut, UTCTime, VideoOut, media_fields

#: Occurrences shown in ``upcoming``.
UPCOMING_COUNT = 5
#: History events shown by ``GET /v1/schedules/{id}``, newest first.
HISTORY_COUNT = 50

_RRULE = Field(
    default=None,
    min_length=1,
    max_length=1000,
    description="An RFC 5545 RRULE value; start_at is its DTSTART, in timezone.",
    examples=["FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0"],
)
_CRON = Field(
    default=None,
    min_length=1,
    max_length=255,
    description="A 5-field cron expression, evaluated in timezone.",
    examples=["0 9 * * 1,3"],
)
_TIMEZONE = Field(min_length=1, max_length=64, examples=["Europe/Berlin"])


class ScheduleRule(RequestModel):
    """The rule alone: what ``POST /v1/schedules/preview`` takes."""

    rrule: str | None = _RRULE
    cron: str | None = _CRON
    timezone: str = _TIMEZONE
    start_at: RFC3339Time | None = Field(
        default=None, description="DTSTART of an rrule (required with it); cron: default now."
    )
    end_at: RFC3339Time | None = Field(default=None, description="No occurrence after this.")


class SchedulePreview(ScheduleRule):
    after: RFC3339Time | None = Field(
        default=None, description="Only occurrences later than this (default: from start_at)."
    )
    limit: int = Field(default=10, ge=1, le=MAX_PREVIEW)


class PreviewOut(BaseModel):
    occurrences: list[str]


class ScheduleCreate(ScheduleRule):
    credential_id: ShortId
    target: ShortId
    message: Message | None = Field(
        default=None, description="{date} and {time} become the occurrence's local date and time."
    )
    link: HttpURL | None = None
    photo_url: HttpURL | None = None
    photos: PhotoList | None = None
    video: VideoIn | None = None
    reel: ReelIn | None = None
    first_comment: Message | None = Field(
        default=None,
        description="Each occurrence's first comment; {date} and {time} as in message.",
    )
    misfire: Misfire = Misfire.SKIP


class ScheduleUpdate(RequestModel):
    """Every field optional; ``null`` clears ``message``, ``link``, ``photo_url``, ``photos``,
    ``video``, ``reel`` or ``end_at``; giving one of ``photos``, ``video``, ``reel`` replaces
    the schedule's media.

    Giving ``rrule`` or ``cron`` replaces the rule (the other one is cleared).
    """

    status: Literal["active", "paused"] | None = None
    credential_id: ShortId | None = None
    target: ShortId | None = None
    message: Message | None = None
    link: HttpURL | None = None
    photo_url: HttpURL | None = None
    photos: PhotoList | None = None
    video: VideoIn | None = None
    reel: ReelIn | None = None
    first_comment: Message | None = None
    rrule: str | None = _RRULE
    cron: str | None = _CRON
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    start_at: RFC3339Time | None = None
    end_at: RFC3339Time | None = None
    misfire: Misfire | None = None


class ScheduleEventOut(BaseModel):
    kind: str
    occurrence_at: UTCTime | None
    detail: dict[str, Any] | None
    created_at: UTCTime

    @classmethod
    def of(cls, event: ScheduleEvent) -> ScheduleEventOut:
        return cls(
            kind=event.kind.value,
            occurrence_at=event.occurrence_at,
            detail=event.detail,
            created_at=event.created_at,
        )


class ScheduleOut(BaseModel):
    id: str
    status: str
    credential_id: str
    target: str
    message: str | None
    link: str | None
    photo_url: str | None
    photos: list[MediaSourceOut] | None = None
    video: VideoOut | None = None
    reel: ReelOut | None = None
    first_comment: str | None = None
    rrule: str | None
    cron: str | None
    timezone: str
    start_at: UTCTime
    end_at: UTCTime | None
    misfire: str
    #: The next occurrence from now; null when paused, deleted or ended.
    next_run_at: UTCTime | None
    #: The next occurrences from now, with the zone's offset.
    upcoming: list[str]
    #: Posts made for occurrences so far.
    occurrences_created: int
    created_at: UTCTime
    updated_at: UTCTime

    @classmethod
    def fields_of(cls, schedule: Schedule) -> dict[str, Any]:
        return {
            "id": schedule.id,
            "status": schedule.status.value,
            "credential_id": schedule.credential_id,
            "target": schedule.target,
            "message": schedule.message,
            "link": schedule.link,
            "photo_url": schedule.photo_url,
            **media_fields(schedule.media),
            "first_comment": schedule.first_comment,
            "rrule": schedule.rrule,
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "start_at": schedule.start_at,
            "end_at": schedule.end_at,
            "misfire": schedule.misfire.value,
            "occurrences_created": schedule.occurrences_created,
            "created_at": schedule.created_at,
            "updated_at": schedule.updated_at,
        }


class ScheduleDetail(ScheduleOut):
    #: Recent events, newest first (skipped and caught-up occurrences, pauses, changes).
    history: list[ScheduleEventOut]


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    next_cursor: str | None

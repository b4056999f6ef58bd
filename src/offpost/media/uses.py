"""Which posts and schedules publish a media, and whether a media may be used.

The posts code calls :func:`media_for_post` when a post or a schedule names
media, and :func:`record_uses` once it is inserted; retention and
``DELETE /v1/media/{id}`` ask :func:`media_in_use` before removing bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import SQLColumnExpression, exists, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from offpost.errors import OffpostError
from offpost.models.media import Media, MediaStatus, MediaUse
from offpost.models.post import PENDING_POST_STATUSES, Post
from offpost.models.schedule import Schedule, ScheduleStatus

#: Schedules that still create posts (or may again).
LIVE_SCHEDULE_STATUSES = (ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED)


class MediaNotUsableError(OffpostError):
    """A post names a media it cannot use: unknown (or another client's), not ready, deleted."""

    def __init__(self, media_id: str, reason: str) -> None:
        super().__init__(f"media {media_id}: {reason}")
        self.media_id = media_id
        self.reason = reason


def media_for_post(session: Session, client_id: str, media_ids: Sequence[str]) -> dict[str, Media]:
    """The client's ready media by id, loaded with one query (and share-locked, so that
    retention cannot remove them before the post's uses are committed).

    Raises :class:`MediaNotUsableError` for the first id that is unknown or
    another client's (both say "no such media": nothing leaks), still uploading,
    or deleted.
    """
    wanted = sorted(set(media_ids))
    rows = session.scalars(
        select(Media)
        .where(Media.id.in_(wanted), Media.client_id == client_id)
        .order_by(Media.id)
        .with_for_update(read=True)
    ).all()
    found = {row.id: row for row in rows}
    for media_id in media_ids:
        row = found.get(media_id)
        if row is None:
            raise MediaNotUsableError(media_id, "no such media")
        if row.status == MediaStatus.DELETED:
            raise MediaNotUsableError(media_id, "the media was deleted")
        if row.status != MediaStatus.READY:
            raise MediaNotUsableError(media_id, "its upload is not complete")
    return {media_id: found[media_id] for media_id in media_ids}


def record_uses(
    session: Session,
    media_ids: Sequence[str],
    *,
    post_id: str | None = None,
    schedule_id: str | None = None,
) -> None:
    """Record that the post (or the schedule) publishes each of ``media_ids`` (once each)."""
    if (post_id is None) == (schedule_id is None):
        raise ValueError("give exactly one of post_id and schedule_id")
    session.add_all(
        MediaUse(media_id=media_id, post_id=post_id, schedule_id=schedule_id)
        for media_id in dict.fromkeys(media_ids)
    )
    session.flush()


def in_use(media_id: SQLColumnExpression[str] | str) -> ColumnElement[bool]:
    """SQL: a pending post or a live (active or paused) schedule uses the media."""
    by_post = (
        select(MediaUse.id)
        .join(Post, Post.id == MediaUse.post_id)
        .where(MediaUse.media_id == media_id, Post.status.in_(PENDING_POST_STATUSES))
    )
    by_schedule = (
        select(MediaUse.id)
        .join(Schedule, Schedule.id == MediaUse.schedule_id)
        .where(MediaUse.media_id == media_id, Schedule.status.in_(LIVE_SCHEDULE_STATUSES))
    )
    return exists(by_post) | exists(by_schedule)


def media_in_use(session: Session, media_id: str) -> bool:
    """Whether a pending post or an active or paused schedule uses the media."""
    return bool(session.scalar(select(in_use(media_id))))

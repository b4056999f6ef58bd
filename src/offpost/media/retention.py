"""Removing media nobody needs: unfinished uploads, and ready media no pending post uses.

After ``media_retention_h``, a media still ``uploading`` is abandoned, and a
``ready`` media that no pending post and no active or paused schedule uses is
no longer needed (a post that wants it later uploads it again). Each run
takes a bounded batch: the rows are marked ``deleted`` (locked, skipping rows
another dispatcher holds) and committed first, then their bytes are removed
from the store, so a row never says ``ready`` for bytes that are gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost.media.store import MediaStore
from offpost.media.uses import in_use
from offpost.models.media import Media, MediaStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    """How many media one run removed, and how many of their stores' deletes failed."""

    abandoned: int
    unused: int
    failed: int


def sweep_media(
    sessions: sessionmaker[Session],
    store: MediaStore,
    now: datetime,
    retention: timedelta,
    batch: int = 500,
) -> RetentionResult:
    """Delete at most ``batch`` abandoned uploads and ``batch`` unused ready media."""
    cutoff = now - retention
    with sessions.begin() as session:
        abandoned = session.scalars(
            select(Media)
            .where(Media.status == MediaStatus.UPLOADING, Media.created_at < cutoff)
            .order_by(Media.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        unused = session.scalars(
            select(Media)
            .where(
                Media.status == MediaStatus.READY,
                Media.created_at < cutoff,
                ~in_use(Media.id),
            )
            .order_by(Media.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        keys = []
        for media in [*abandoned, *unused]:
            media.status = MediaStatus.DELETED
            media.deleted_at = now
            keys.append((media.id, media.storage_key))
    failed = 0
    for media_id, key in keys:
        try:
            store.delete(key)
        except Exception:
            failed += 1
            logger.warning(
                "could not remove a media's bytes from the store",
                exc_info=True,
                extra={"action": "media_delete_failed", "media_id": media_id},
            )
    result = RetentionResult(len(abandoned), len(unused), failed)
    if keys:
        logger.info(
            "media retention: %d abandoned uploads and %d unused media deleted (%d store "
            "deletes failed)",
            result.abandoned,
            result.unused,
            result.failed,
            extra={
                "action": "media_retention",
                "abandoned": result.abandoned,
                "unused": result.unused,
                "failed": result.failed,
            },
        )
    return result

"""Media a client uploaded to offpost, and the steps of a post's multi-step publish.

``media`` rows describe files in the media store (``offpost.media``): a local
folder on embedded defaults, an S3-compatible bucket when distributed. The
bytes live in the store under ``storage_key``; the row holds what was checked
at upload (type, size, dimensions, duration) and the SHA-256 the worker
verifies before it sends the bytes to Graph.

``media_uses`` ties a media to the posts and schedules that publish it, so
that retention can tell when no pending post needs it any more.

``post_steps`` records every Graph call of a post with several of them
(photos uploaded unpublished then attached, a video's resumable upload, a
Reel's start, upload and finish). A step's row is committed **before** its
call; ``outcome`` is ``NULL`` while it is in flight. A step left in flight (a
lost reply, a crashed worker) is settled at that step by the next worker,
never by doing it blindly again (docs/media.md).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from offpost.models.base import Base, Timestamps, check_in, utcnow, where_status
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import StrEnumType


class MediaKind(enum.StrEnum):
    """What a media file is."""

    IMAGE = "image"
    VIDEO = "video"


class MediaStatus(enum.StrEnum):
    """Where an upload stands."""

    #: A resumable upload that has not received all its bytes yet.
    UPLOADING = "uploading"
    #: Every byte is stored and checked: posts may use it.
    READY = "ready"
    #: Its bytes were removed from the store (retention, or the client deleted it).
    DELETED = "deleted"


class Media(Timestamps, Base):
    """One file a client uploaded (``POST /v1/media``)."""

    __tablename__ = "media"
    __table_args__ = (
        check_in("kind", MediaKind, "kind"),
        check_in("status", MediaStatus, "status"),
        CheckConstraint("size_bytes >= 0 AND received_bytes >= 0", name="sizes"),
        Index("ix_media_client_created", "client_id", "created_at", "id"),
        Index("ix_media_ready_created", "created_at", **where_status(MediaStatus.READY)),
        Index("ix_media_uploading_created", "created_at", **where_status(MediaStatus.UPLOADING)),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.MEDIA)
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    kind: Mapped[MediaKind] = mapped_column(StrEnumType(MediaKind))
    status: Mapped[MediaStatus] = mapped_column(
        StrEnumType(MediaStatus), default=MediaStatus.UPLOADING
    )
    #: The type found in the bytes (``image/jpeg``, ``video/mp4``...), not the one claimed.
    content_type: Mapped[str] = mapped_column(String(64))
    #: The client's file name, for people (never used as a path).
    filename: Mapped[str | None] = mapped_column(String(255), default=None)
    #: The whole file's size (announced at the start of a resumable upload).
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: Bytes stored so far (``size_bytes`` once ready).
    received_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: SHA-256 (hex) of the whole file, set when it is complete.
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    #: Where the store keeps the bytes.
    storage_key: Mapped[str] = mapped_column(String(255))
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    #: A video's duration, in milliseconds.
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: A video's frames per second (its video track's mean), when the file says.
    fps: Mapped[float | None] = mapped_column(Float, default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    def __repr__(self) -> str:
        return f"Media(id={self.id!r}, kind={self.kind!r}, status={self.status!r})"


class MediaUse(Base):
    """A post or a schedule that publishes a media (exactly one of the two is set)."""

    __tablename__ = "media_uses"
    __table_args__ = (
        CheckConstraint("(post_id IS NULL) <> (schedule_id IS NULL)", name="owner"),
        Index("ix_media_uses_media", "media_id"),
        Index("ix_media_uses_post", "post_id"),
        Index("ix_media_uses_schedule", "schedule_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    media_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("media.id"))
    post_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("posts.id", ondelete="CASCADE"), default=None
    )
    schedule_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("schedules.id", ondelete="CASCADE"), default=None
    )


class StepKind(enum.StrEnum):
    """One Graph call of a multi-step publish."""

    #: ``POST /{page}/photos published=false``: one photo of several (``item`` is its index).
    PHOTO = "photo"
    #: ``POST /{page}/videos upload_phase=start``.
    VIDEO_START = "video_start"
    #: ``POST /{page}/videos upload_phase=transfer``: one chunk (``detail.start_offset``).
    VIDEO_TRANSFER = "video_transfer"
    #: ``POST /{page}/video_reels upload_phase=start``.
    REEL_START = "reel_start"
    #: The Reel's bytes (or its hosted URL) sent to the upload host.
    REEL_UPLOAD = "reel_upload"
    #: ``DELETE /{id}`` of media a failed or canceled post leaves behind.
    REMOVE = "remove"


class StepOutcome(enum.StrEnum):
    """How a step ended."""

    DONE = "done"
    FAILED = "failed"
    #: The reply was lost; the next worker settles it at this step.
    UNKNOWN = "unknown"
    #: An unknown step settled: what it made was found.
    FOUND = "found"
    #: An unknown step settled: it made nothing (or nothing that can be used).
    NOT_FOUND = "not_found"


class PostStep(Base):
    """One Graph call before a media post's final one, recorded before it is made."""

    __tablename__ = "post_steps"
    __table_args__ = (
        check_in("kind", StepKind, "kind"),
        check_in("outcome", StepOutcome, "outcome"),
        Index("ix_post_steps_post", "post_id", "started_at"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.STEP)
    )
    post_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("posts.id", ondelete="CASCADE")
    )
    kind: Mapped[StepKind] = mapped_column(StrEnumType(StepKind, length=16))
    #: Which photo of several; 0 otherwise.
    item: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    #: ``None`` while the call is in flight.
    outcome: Mapped[StepOutcome | None] = mapped_column(
        StrEnumType(StepOutcome, length=16), default=None
    )
    #: What the step made or acted on: a photo id, a video id.
    graph_id: Mapped[str | None] = mapped_column(String(128), default=None)
    #: The step's particulars: an upload session, offsets, a checksum.
    detail: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)

    def __repr__(self) -> str:
        return f"PostStep(post_id={self.post_id!r}, kind={self.kind!r}, item={self.item!r})"

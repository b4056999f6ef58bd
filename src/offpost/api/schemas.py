"""Request and response bodies of the HTTP API (the OpenAPI document), as pydantic models.

Requests forbid unknown fields (a typo is a 422, not a silently ignored field);
times go out as RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    Field,
)

from offpost.models import Attempt, Followup, PostStep
from offpost.posts.input import (
    MAX_TOKEN_LENGTH,
    HttpURL,
    Message,
    PhotoList,
    PostCreate,
    ReelIn,
    RequestModel,
    RFC3339Time,
    VideoIn,
)
from offpost.posts.quotas import ClientQuotas, Quotas
from offpost.posts.rules import (
    MAX_BATCH_POSTS,
)
from offpost.settings import QUOTA_MAX
from offpost.views import CredentialOut, ErrorOut, PostOut, UTCTime


class CredentialCreate(RequestModel):
    access_token: str = Field(
        min_length=1, max_length=MAX_TOKEN_LENGTH, description="A short-lived Facebook user token."
    )


class ClientCodeCreate(RequestModel):
    redirect_uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="The redirect URI configured in Facebook Login > Settings.",
    )


class CredentialList(BaseModel):
    credentials: list[CredentialOut]


class ClientCodeOut(BaseModel):
    code: str


# --- posts ------------------------------------------------------------------------------------


class PostBatchCreate(RequestModel):
    posts: list[PostCreate] = Field(min_length=1, max_length=MAX_BATCH_POSTS)


class PostUpdate(RequestModel):
    """Fields to change; an omitted field is kept, ``null`` clears a content field."""

    message: Message | None = None
    link: HttpURL | None = None
    photo_url: HttpURL | None = None
    photos: PhotoList | None = Field(
        default=None, description="Refused: a post's media cannot be changed (422)."
    )
    video: VideoIn | None = Field(default=None, description="Refused, as photos.")
    reel: ReelIn | None = Field(default=None, description="Refused, as photos.")
    first_comment: Message | None = Field(
        default=None, description="Until the post is published; null removes it."
    )
    publish_at: RFC3339Time | None = None


class PostList(BaseModel):
    posts: list[PostOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class PostBatchOut(BaseModel):
    posts: list[PostOut]


class AttemptOut(BaseModel):
    number: int
    started_at: UTCTime
    finished_at: UTCTime | None
    outcome: str | None = Field(
        description="published, retry, failed, needs_reauth or reconciled; null while in flight."
    )
    error: ErrorOut | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        error = None
        if attempt.error_code is not None or attempt.error_message is not None:
            raw = attempt.error_code
            # Graph's codes are numbers (as in a post's last_error); offpost's are words.
            code: int | str | None = int(raw) if raw is not None and raw.isdigit() else raw
            error = ErrorOut(
                code=code,
                subcode=attempt.error_subcode,
                message=attempt.error_message or "",
                fbtrace_id=attempt.fbtrace_id,
            )
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            outcome=attempt.outcome.value if attempt.outcome else None,
            error=error,
        )


class AttemptList(BaseModel):
    attempts: list[AttemptOut]


class StepOut(BaseModel):
    """One Graph call of a media post before its final one (docs/media.md)."""

    kind: str = Field(
        description="photo, video_start, video_transfer, reel_start, reel_upload or remove."
    )
    item: int = Field(description="Which photo (from 0); 0 otherwise.")
    started_at: UTCTime
    finished_at: UTCTime | None
    outcome: str | None = Field(
        description="done, failed, unknown (reply lost), found or not_found (a lost reply "
        "settled); null while in flight."
    )
    graph_id: str | None = Field(description="The photo or video the step made or removed.")
    bytes: list[int] | None = Field(
        default=None, description="A chunk's byte range [start, end) of the file."
    )
    error: str | None

    @classmethod
    def of(cls, step: PostStep) -> StepOut:
        detail = step.detail or {}
        span = None
        if "start_offset" in detail and "end_offset" in detail:
            span = [int(detail["start_offset"]), int(detail["end_offset"])]
        return cls(
            kind=step.kind.value,
            item=step.item,
            started_at=step.started_at,
            finished_at=step.finished_at,
            outcome=step.outcome.value if step.outcome else None,
            graph_id=step.graph_id,
            bytes=span,
            error=step.error,
        )


class StepList(BaseModel):
    steps: list[StepOut]


class FollowupOut(BaseModel):
    """What offpost does with a published post on Facebook (docs/after-publishing.md)."""

    id: str
    post_id: str
    kind: str = Field(description="comment, edit or delete.")
    status: str = Field(description="pending, done, failed or canceled.")
    message: str | None = Field(description="The comment's or the edit's text.")
    attempts: int
    graph_id: str | None = Field(description="The comment's id on Facebook.")
    last_error: ErrorOut | None
    created_at: UTCTime
    finished_at: UTCTime | None

    @classmethod
    def of(cls, followup: Followup) -> FollowupOut:
        return cls(
            id=followup.id,
            post_id=followup.post_id,
            kind=followup.kind.value,
            status=followup.status.value,
            message=followup.message,
            attempts=followup.attempts,
            graph_id=followup.graph_id,
            last_error=ErrorOut.of(followup.last_error),
            created_at=followup.created_at,
            finished_at=followup.finished_at,
        )


class FollowupList(BaseModel):
    followups: list[FollowupOut]


class QuotaUsage(BaseModel):
    """A client's use of the quotas that count something now."""

    posts_per_day: int = Field(description="Posts created through the API in the last 24 hours.")
    pending_posts: int = Field(description="Posts scheduled, queued, publishing or needs_reauth.")
    active_schedules: int


class QuotasOut(BaseModel):
    """``GET /v1/quotas``: the calling client's quotas and use."""

    quotas: Quotas = Field(
        description="The client's quotas: its own where set, else the deployment's defaults."
    )
    own: list[str] = Field(
        description="The quotas set for this client; the others are the deployment's defaults."
    )
    usage: QuotaUsage

    @classmethod
    def of(cls, row: ClientQuotas) -> QuotasOut:
        return cls(**cls.fields_of(row))

    @staticmethod
    def fields_of(row: ClientQuotas) -> dict[str, Any]:
        return {
            "quotas": row.quotas,
            "own": sorted(q.value for q in row.overridden),
            "usage": QuotaUsage(
                posts_per_day=row.usage.posts_last_day,
                pending_posts=row.usage.pending_posts,
                active_schedules=row.usage.active_schedules,
            ),
        }


class AdminClientOut(QuotasOut):
    """A client as an operator sees it (never its key)."""

    id: str
    name: str
    is_admin: bool
    revoked: bool

    @classmethod
    def of(cls, row: ClientQuotas) -> AdminClientOut:
        return cls(
            id=row.id,
            name=row.name,
            is_admin=row.is_admin,
            revoked=row.revoked,
            **QuotasOut.fields_of(row),
        )


class AdminClientList(BaseModel):
    clients: list[AdminClientOut]


def _quota_field(quota: str) -> Any:
    return Field(
        default=None,
        ge=1,
        le=QUOTA_MAX[quota],
        description=f"The client's own {quota} quota; null returns it to the deployment's default.",
    )


class QuotaOverrides(RequestModel):
    """``PATCH /v1/admin/clients/{client}``: only the quotas given change."""

    requests_per_minute: int | None = _quota_field("requests_per_minute")
    posts_per_day: int | None = _quota_field("posts_per_day")
    pending_posts: int | None = _quota_field("pending_posts")
    active_schedules: int | None = _quota_field("active_schedules")
    occurrences_per_day: int | None = _quota_field("occurrences_per_day")

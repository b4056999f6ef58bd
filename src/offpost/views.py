"""The public JSON views of posts and credentials, shared by every layer that shows them.

The HTTP API answers with these, and webhook events carry the very same shape,
so a client parses one object whichever way it arrives. None of them has a
token field: a view can never leak one. Times go out as RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainSerializer

from offpost.models import Credential, CredentialPage, CredentialStatus, PostInsight, PostStatus


def utc_z(value: datetime) -> str:
    """``value`` as RFC 3339 UTC with ``Z``, to the second: how offpost writes times."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


UTCTime = Annotated[datetime, PlainSerializer(utc_z, return_type=str)]


class PageOut(BaseModel):
    id: str
    name: str
    #: ``valid`` or ``dead`` (Graph rejected it and it could not be derived again).
    token: str
    #: The user's tasks on the Page as Graph listed them; null if not known yet.
    tasks: list[str] | None
    #: Whether posts can be published on this Page now.
    can_post: bool
    checked_at: UTCTime | None

    @classmethod
    def of(cls, page: CredentialPage) -> PageOut:
        return cls(
            id=page.page_id,
            name=page.name,
            token=page.token_status.value,
            tasks=list(page.tasks) if page.tasks is not None else None,
            can_post=page.postable,
            checked_at=page.checked_at,
        )


#: What each credential status means for posts and what the user should do (docs/tokens.md).
ADVICE = {
    CredentialStatus.ACTIVE: "All tokens work; nothing to do.",
    CredentialStatus.EXPIRING: (
        "The user token ends at expires_at. Posts keep publishing after that on the Page "
        "tokens, but offpost can then no longer derive a Page token again or see new Pages. "
        "To keep everything working, have the user log in again and submit the new token "
        "before then."
    ),
    CredentialStatus.USER_TOKEN_EXPIRED: (
        "The user token no longer works. Posts keep publishing on the Page tokens, but a Page "
        "token that dies cannot be derived again and new Pages are not seen. Have the user "
        "log in again and submit the new token."
    ),
    CredentialStatus.NEEDS_REAUTH: (
        "The token of the Pages marked dead no longer works: their posts wait (needs_reauth). "
        "The other Pages keep publishing. Have the user log in again (with their role on "
        "those Pages) and submit the new token: the waiting posts then resume."
    ),
    CredentialStatus.DELETED: "The tokens were deleted; submit a fresh token to use it again.",
}


class CredentialOut(BaseModel):
    id: str
    fb_user_id: str
    status: str
    #: What the status means for posts and what to do (one sentence or three).
    advice: str
    #: When the long-lived user token ends (null: it does not).
    expires_at: UTCTime | None
    #: Since when Graph no longer accepts the user token (null while it does).
    user_token_expired_at: UTCTime | None
    data_access_expires_at: UTCTime | None
    last_checked_at: UTCTime | None
    scopes: list[str]
    pages: list[PageOut]
    created_at: UTCTime
    updated_at: UTCTime

    @classmethod
    def of(cls, credential: Credential) -> CredentialOut:
        """The public view of a credential, its health included: never a token."""
        return cls(
            id=credential.id,
            fb_user_id=credential.fb_user_id,
            status=credential.status.value,
            advice=ADVICE[credential.status],
            expires_at=credential.expires_at,
            user_token_expired_at=credential.user_token_dead_at,
            data_access_expires_at=credential.data_access_expires_at,
            last_checked_at=credential.last_checked_at,
            scopes=list(credential.scopes),
            pages=[PageOut.of(p) for p in credential.pages],
            created_at=credential.created_at,
            updated_at=credential.updated_at,
        )


class ErrorOut(BaseModel):
    """What went wrong: Graph's error, or an offpost code such as ``timeout``."""

    code: int | str | None
    subcode: int | None
    message: str
    fbtrace_id: str | None

    @classmethod
    def of(cls, document: Mapping[str, Any] | None) -> ErrorOut | None:
        if not document:
            return None
        return cls(
            code=document.get("code"),
            subcode=document.get("subcode"),
            message=str(document.get("message") or ""),
            fbtrace_id=document.get("fbtrace_id"),
        )


class MediaSourceOut(BaseModel):
    """Where a file comes from: a URL, or an upload of the client (``media_id``)."""

    url: str | None = None
    media_id: str | None = None


class VideoOut(MediaSourceOut):
    title: str | None = None
    description: str | None = None


class ReelOut(MediaSourceOut):
    description: str | None = None


class FirstCommentOut(BaseModel):
    """The post's first comment: what it says, whether it is on Facebook, its id there."""

    message: str
    status: str = Field(description="pending, posted, failed, or canceled (the post was deleted).")
    graph_id: str | None


class InsightOut(BaseModel):
    """One fetch of a post's counts and insights, at one age after publishing."""

    age: str = Field(description="How long after publishing: a label of OFFPOST_INSIGHTS_AFTER.")
    due_at: UTCTime
    fetched_at: UTCTime | None
    status: str = Field(description="pending, done, failed or canceled (the post is gone).")
    reactions: int | None
    comments: int | None
    shares: int | None
    impressions: int | None = Field(
        description="post_media_view: the times the post was on screen; null without insights."
    )
    reach: int | None = Field(
        description="post_total_media_view_unique: the people who saw it; null without insights."
    )
    errors: dict[str, str] | None = Field(
        description="Per Graph metric without a value, why: Graph's message (a deprecated "
        "metric) or that Graph answered no value (a Page without insights)."
    )

    @classmethod
    def of(cls, row: PostInsight) -> InsightOut:
        return cls(
            age=row.age,
            due_at=row.due_at,
            fetched_at=row.fetched_at,
            status=row.status.value,
            reactions=row.reactions,
            comments=row.comments,
            shares=row.shares,
            impressions=row.impressions,
            reach=row.reach,
            errors={str(k): str(v) for k, v in row.errors.items()} if row.errors else None,
        )


class PostOut(BaseModel):
    id: str
    status: PostStatus
    credential_id: str
    target: str
    message: str | None
    link: str | None
    photo_url: str | None
    photos: list[MediaSourceOut] | None = None
    video: VideoOut | None = None
    reel: ReelOut | None = None
    first_comment: FirstCommentOut | None = None
    publish_at: UTCTime
    schedule_id: str | None
    attempts: int
    graph_post_id: str | None
    published_at: UTCTime | None
    last_error: ErrorOut | None
    created_at: UTCTime
    updated_at: UTCTime
    #: The latest fetch of its counts and insights (one post's answer only; null in lists).
    insights: InsightOut | None = None

    @classmethod
    def of(cls, post: Any) -> PostOut:
        """The public view of a post: a :class:`~offpost.models.Post` or a row mapping."""
        get = post.get if isinstance(post, Mapping) else post.__getattribute__
        return cls(
            id=get("id"),
            status=get("status"),
            credential_id=get("credential_id"),
            target=get("target"),
            message=get("message"),
            link=get("link"),
            photo_url=get("photo_url"),
            **media_fields(get("media")),
            first_comment=first_comment_of(post),
            publish_at=get("publish_at"),
            schedule_id=get("schedule_id"),
            attempts=get("attempts"),
            graph_post_id=get("graph_post_id"),
            published_at=get("published_at"),
            last_error=ErrorOut.of(get("last_error")),
            created_at=get("created_at"),
            updated_at=get("updated_at"),
        )


def media_fields(media: Mapping[str, Any] | None) -> dict[str, Any]:
    """``photos``, ``video`` or ``reel`` of a post's answer, from its media spec."""
    if not media:
        return {}
    kind, value = next(iter(media.items()))
    if kind == "photos":
        return {"photos": [MediaSourceOut(**source) for source in value]}
    if kind == "video":
        return {"video": VideoOut(**value)}
    if kind == "reel":
        return {"reel": ReelOut(**value)}
    return {}


def first_comment_of(post: Any) -> FirstCommentOut | None:
    """A post's ``first_comment`` answer from its row (a model or a mapping)."""
    get = post.get if isinstance(post, Mapping) else post.__getattribute__
    message = get("first_comment")
    if message is None:
        return None
    return FirstCommentOut(
        message=message,
        status=get("first_comment_status") or "pending",
        graph_id=get("first_comment_id"),
    )

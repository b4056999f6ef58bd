"""Request and response bodies of the HTTP API (API.md §3), as pydantic models.

Requests forbid unknown fields (a typo is a 422, not a silently ignored field);
times go out as RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from offpost.models import Attempt, Credential, PostStatus
from offpost.scheduler.post_rules import (
    MAX_BATCH_POSTS,
    MAX_MESSAGE_LENGTH,
    MAX_URL_LENGTH,
    check_message,
    check_url,
    parse_rfc3339,
)


def _utc_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


UTCTime = Annotated[datetime, PlainSerializer(_utc_z, return_type=str)]

#: Real tokens are a few hundred characters; anything far longer is not a token.
MAX_TOKEN_LENGTH = 4096


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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


class PageOut(BaseModel):
    id: str
    name: str


class CredentialOut(BaseModel):
    id: str
    fb_user_id: str
    status: str
    expires_at: UTCTime | None
    data_access_expires_at: UTCTime | None
    scopes: list[str]
    pages: list[PageOut]
    created_at: UTCTime
    updated_at: UTCTime

    @classmethod
    def of(cls, credential: Credential) -> CredentialOut:
        """The public view of a credential: never a token."""
        return cls(
            id=credential.id,
            fb_user_id=credential.fb_user_id,
            status=credential.status.value,
            expires_at=credential.expires_at,
            data_access_expires_at=credential.data_access_expires_at,
            scopes=list(credential.scopes),
            pages=[PageOut(id=p.page_id, name=p.name) for p in credential.pages],
            created_at=credential.created_at,
            updated_at=credential.updated_at,
        )


class CredentialList(BaseModel):
    credentials: list[CredentialOut]


class ClientCodeOut(BaseModel):
    code: str


# --- posts ------------------------------------------------------------------------------------

#: A post's text goes out exactly as sent: no whitespace stripping (it may be layout).
Message = Annotated[
    str,
    StringConstraints(strip_whitespace=False, min_length=1, max_length=MAX_MESSAGE_LENGTH),
    AfterValidator(check_message),
]
HttpURL = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_LENGTH),
    AfterValidator(check_url),
    Field(description="An absolute http(s) URL.", examples=["https://example.com/page"]),
]
#: RFC 3339 with an offset; a naive time, a date or a unix number is refused.
RFC3339Time = Annotated[
    datetime,
    BeforeValidator(parse_rfc3339),
    Field(description="RFC 3339 with an offset.", examples=["2026-12-01T09:00:00+01:00"]),
]
ShortId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class PostCreate(RequestModel):
    """One post to schedule. Either ``credential_id`` or ``access_token``, not both."""

    credential_id: ShortId | None = Field(default=None, examples=["cred_0vB4kq9TzLr2mWc8xYpA"])
    access_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOKEN_LENGTH,
        description="A short-lived user token, taken in as POST /v1/credentials does.",
    )
    target: ShortId = Field(description="The id of a Page of the credential's user.")
    message: Message | None = None
    link: HttpURL | None = None
    photo_url: HttpURL | None = None
    publish_at: RFC3339Time | None = Field(
        default=None, description="Omitted: as soon as possible. At most 5 minutes in the past."
    )


class PostBatchCreate(RequestModel):
    posts: list[PostCreate] = Field(min_length=1, max_length=MAX_BATCH_POSTS)


class PostUpdate(RequestModel):
    """Fields to change; an omitted field is kept, ``null`` clears a content field."""

    message: Message | None = None
    link: HttpURL | None = None
    photo_url: HttpURL | None = None
    publish_at: RFC3339Time | None = None


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


class PostOut(BaseModel):
    id: str
    status: PostStatus
    credential_id: str
    target: str
    message: str | None
    link: str | None
    photo_url: str | None
    publish_at: UTCTime
    schedule_id: str | None
    attempts: int
    graph_post_id: str | None
    published_at: UTCTime | None
    last_error: ErrorOut | None
    created_at: UTCTime
    updated_at: UTCTime

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
            publish_at=get("publish_at"),
            schedule_id=get("schedule_id"),
            attempts=get("attempts"),
            graph_post_id=get("graph_post_id"),
            published_at=get("published_at"),
            last_error=ErrorOut.of(get("last_error")),
            created_at=get("created_at"),
            updated_at=get("updated_at"),
        )


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

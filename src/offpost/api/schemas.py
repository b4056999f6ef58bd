"""Request and response bodies of the HTTP API (the OpenAPI document), as pydantic models.

Requests forbid unknown fields (a typo is a 422, not a silently ignored field);
times go out as RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
)

from offpost.models import Attempt
from offpost.posts.input import (
    MAX_TOKEN_LENGTH,
    HttpURL,
    Message,
    PostCreate,
    RequestModel,
    RFC3339Time,
)
from offpost.posts.rules import (
    MAX_BATCH_POSTS,
)
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

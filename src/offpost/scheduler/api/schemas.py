"""Request and response bodies of the HTTP API (API.md §3), as pydantic models.

Requests forbid unknown fields (a typo is a 422, not a silently ignored field);
times go out as RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from offpost.models import Attempt
from offpost.scheduler.post_rules import (
    MAX_BATCH_POSTS,
    MAX_MESSAGE_LENGTH,
    MAX_URL_LENGTH,
    check_message,
    check_url,
    parse_rfc3339,
)
from offpost.views import CredentialOut, ErrorOut, PostOut, UTCTime

#: Real tokens are a few hundred characters; anything far longer is not a token.
MAX_TOKEN_LENGTH = 4096


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """PostgreSQL text cannot hold NUL: refuse it here, naming the field."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


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

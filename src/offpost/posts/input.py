"""What a client sends for a post, checked by pydantic: the API's request bodies and
each row of a CSV import go through the same models, so both accept and refuse
exactly the same things.

Requests forbid unknown fields (a typo is a 422, not a silently ignored field).
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
    model_validator,
)

from offpost.posts.rules import (
    MAX_MESSAGE_LENGTH,
    MAX_URL_LENGTH,
    check_message,
    check_url,
    parse_rfc3339,
)

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


#: Photos in one post: Graph documents no maximum for ``attached_media``; ten is
#: what Facebook's own composer shows in one grid, and what schedulers allow.
MAX_PHOTOS = 10
#: A video's title (Graph documents none; Facebook shows about a line).
MAX_TITLE_LENGTH = 255

MediaId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class MediaSource(RequestModel):
    """Where a file comes from: a URL Graph fetches, or an upload (``POST /v1/media``)."""

    url: HttpURL | None = Field(default=None, description="Fetched by Facebook when published.")
    media_id: MediaId | None = Field(
        default=None, description="An upload of this client (POST /v1/media), status ready."
    )

    @model_validator(mode="after")
    def _one_source(self) -> MediaSource:
        if (self.url is None) == (self.media_id is None):
            raise ValueError("give exactly one of url and media_id")
        return self


class PhotoIn(MediaSource):
    """One photo of a post."""


class VideoIn(MediaSource):
    """A Page video (``/{page-id}/videos``)."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_LENGTH)] | None = (
        None
    )
    description: Message | None = Field(
        default=None, description="The video's text; the post's message if omitted."
    )


class ReelIn(MediaSource):
    """A Reel (``/{page-id}/video_reels``)."""

    description: Message | None = Field(
        default=None, description="The Reel's text; the post's message if omitted."
    )


PhotoList = Annotated[list[PhotoIn], Field(min_length=1, max_length=MAX_PHOTOS)]


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
    photos: PhotoList | None = Field(
        default=None, description="1 to 10 photos: one is a photo post, several one post of all."
    )
    video: VideoIn | None = None
    reel: ReelIn | None = None
    first_comment: Message | None = Field(
        default=None, description="Posted as the Page on the post right after it is published."
    )
    publish_at: RFC3339Time | None = Field(
        default=None,
        description=(
            "Omitted: as soon as possible. At most 5 minutes in the past and five years ahead."
        ),
    )

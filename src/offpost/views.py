"""The public JSON views of posts and credentials, shared by every layer that shows them.

The HTTP API answers with these, and webhook events carry the very same shape,
so a client parses one object whichever way it arrives. None of them has a
token field: a view can never leak one. Times go out as RFC 3339 UTC with ``Z``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer

from offpost.models import Credential, PostStatus


def utc_z(value: datetime) -> str:
    """``value`` as RFC 3339 UTC with ``Z``, to the second: how offpost writes times."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


UTCTime = Annotated[datetime, PlainSerializer(utc_z, return_type=str)]


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

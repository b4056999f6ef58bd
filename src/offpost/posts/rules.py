"""The rules a post must meet, as pure functions: no I/O, ``now`` passed in.

What the API checks before anything is stored — the shape of a time and of a
URL, content, how far ``publish_at`` may lie in the past, whether a credential
may carry a new post — and the codec of the opaque list cursor with the condition it
stands for (:func:`older_than`, an expression: still no I/O). The problems are
:class:`FieldProblem` values, collected into one :class:`PostInputError`, so a
batch can report every bad field at once (``posts[17].publish_at``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from offpost.errors import OffpostError
from offpost.models import (
    CREATE_CONTENT,
    CredentialStatus,
    IdPrefix,
    PageTokenStatus,
    PostStatus,
    is_id,
)

T = TypeVar("T")

#: Facebook's limit on a post's text, in characters.
MAX_MESSAGE_LENGTH = 63_206
#: Longer URLs are refused: browsers and crawlers stop around 2 KB anyway.
MAX_URL_LENGTH = 2048
#: Posts in one ``POST /v1/posts/batch``.
MAX_BATCH_POSTS = 1000
#: Distinct inline ``access_token`` values in one batch: each costs three Graph calls.
MAX_BATCH_TOKENS = 10
#: How far in the past ``publish_at`` may be (clock skew, a slow client).
PUBLISH_AT_GRACE = timedelta(minutes=5)
#: How far ahead ``publish_at`` may be: a post for 9999 would keep its credential's
#: tokens (and the daily token check) alive for nothing.
PUBLISH_AT_HORIZON = timedelta(days=5 * 366)
#: The content fields; a post needs at least one of them.
CONTENT_FIELDS = ("message", "link", "photo_url")

NO_SUCH_CREDENTIAL = "no such credential"
#: The permission a first comment needs: commenting as the Page (Graph's comments guide).
COMMENT_SCOPE = "pages_manage_engagement"


# --- errors --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with one field; ``code`` is the API's problem code for it."""

    field: str
    message: str
    code: str = "invalid_request"


class PostInputError(OffpostError):
    """The request cannot be accepted as it is; ``problems`` says every reason found."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems[:5]))

    @property
    def code(self) -> str:
        """``invalid_request`` over ``invalid_token`` over ``missing_permissions`` over
        ``page_not_postable`` over ``conflict``: the worst wins."""
        codes = {p.code for p in self.problems}
        ranked = ("invalid_request", "invalid_token", "missing_permissions", "page_not_postable")
        for code in (*ranked, "conflict"):
            if code in codes:
                return code
        return "invalid_request"


class PostNotFoundError(OffpostError):
    """No such post for this client (another client's post included)."""


class PostStateError(OffpostError):
    """The post is not in a state that allows the change."""

    def __init__(self, post_id: str, status: PostStatus, action: str) -> None:
        super().__init__(f"post {post_id} is {status.value}: it cannot be {action}")
        self.status = status


class PostOutcomeUnknownError(PostStateError):
    """An earlier attempt may have published the post: it cannot change until offpost knows.

    The post's last Graph call ended without an answer (a lost reply, a timeout,
    a worker that died mid-call), so the post may already be on the Page with
    the content it had then. Until a worker has read the Page
    (reconciliation), an edit could publish a second post and a cancel could
    answer ``canceled`` for a live one. ``known_at`` is when that read is due
    (``None`` when it waits on something else, such as a fresh token).
    """

    def __init__(
        self, post_id: str, status: PostStatus, action: str, known_at: datetime | None
    ) -> None:
        OffpostError.__init__(
            self,
            f"post {post_id} cannot be {action} yet: its last attempt may have published it "
            "(Graph's answer never arrived), and offpost will know only after reading the "
            "Page"
            + (
                f", on the next attempt at {known_at.isoformat()}"
                if known_at is not None
                else (
                    " once the post is retried (POST /v1/posts/{id}/retry)"
                    if status is PostStatus.FAILED
                    else " once its credential has a valid token again"
                )
            )
            + "; ask again then",
        )
        self.status = status
        self.known_at = known_at


class CursorError(OffpostError):
    """A pagination cursor that offpost did not make."""


# --- pure checks ---------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 time *with* an offset as an aware UTC datetime; ``ValueError`` otherwise.

    Stricter than pydantic's parser on purpose: a naive time is ambiguous (whose
    09:00?), and a bare number or a date is almost always a client bug.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a time needs an offset, e.g. 2026-12-01T09:00:00+01:00")
        return value.astimezone(UTC)
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2026-12-01T09:00:00+01:00")
    text = value.upper().replace(" ", "T")
    if (fraction := re.search(r"\.([0-9]+)", text)) and len(fraction.group(1)) > 6:
        # datetime keeps microseconds; nanoseconds are dropped rather than refused.
        text = text[: fraction.start(1) + 6] + text[fraction.end(1) :]
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a valid time") from None


def check_url(value: str) -> str:
    """``value`` unchanged if it is an absolute http(s) URL with a sane host; ``ValueError``."""
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        # A password in a link would be published on the Page for everyone to read.
        raise ValueError("must not contain a user name or password")
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host")
    if parts.netloc.startswith("["):
        return value  # an IPv6 literal; urlsplit has checked the brackets
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("has an invalid host name") from None
    labels = ascii_host.removesuffix(".").split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("has an invalid host name")
    return value


def publish_at_problem(publish_at: datetime | None, now: datetime) -> str | None:
    """Why ``publish_at`` cannot be accepted at ``now``, or ``None``."""
    if publish_at is not None and publish_at < now - PUBLISH_AT_GRACE:
        minutes = int(PUBLISH_AT_GRACE.total_seconds() // 60)
        return f"is more than {minutes} minutes in the past"
    if publish_at is not None and publish_at > now + PUBLISH_AT_HORIZON:
        return "is more than five years ahead"
    return None


def content_problem(
    message: str | None, link: str | None, photo_url: str | None, media: object = None
) -> str | None:
    """Why a post with this content cannot be published, or ``None``."""
    if message is None and link is None and photo_url is None and media is None:
        return "give at least one of message, link, photo_url, photos, video or reel"
    return None


def check_message(value: str) -> str:
    """``value`` unchanged (whitespace may be layout) unless it is blank; ``ValueError``."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class PageView(Protocol):
    """What :func:`initial_status` reads of a Page (a ``CredentialPage`` has it)."""

    @property
    def token_status(self) -> PageTokenStatus: ...
    @property
    def can_create_content(self) -> bool: ...


class CredentialView(Protocol):
    """What :func:`initial_status` reads of a credential: a ``Credential``, or the
    token-free facts :func:`offpost.posts.store.load_credential_facts` reads."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> CredentialStatus: ...
    def page(self, page_id: str) -> PageView | None: ...


def initial_status(credential: CredentialView | None, target: str) -> PostStatus | FieldProblem:
    """The status a new post of ``credential`` on ``target`` starts in, or what forbids it.

    ``credential`` is ``None`` when the client has no such credential (another
    client's id included: the answer must not tell the two apart).
    """
    if credential is None:
        return FieldProblem("credential_id", NO_SUCH_CREDENTIAL)
    if credential.status is CredentialStatus.DELETED:
        return FieldProblem(
            "credential_id",
            f"credential {credential.id} is deleted: submit a fresh token",
            code="conflict",
        )
    page = credential.page(target)
    if page is None:
        return FieldProblem("target", f"is not a Page of credential {credential.id}")
    if not page.can_create_content:
        return FieldProblem(
            "target",
            f"the user of credential {credential.id} may not publish on Page {target} "
            f"(their role lacks the {CREATE_CONTENT} task)",
            code="page_not_postable",
        )
    if page.token_status is PageTokenStatus.DEAD:
        # Accepted, not refused: it resumes by itself when the client sends a fresh token.
        return PostStatus.NEEDS_REAUTH
    return PostStatus.SCHEDULED


# --- the list cursor -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a newest-first list: the last object shown (a post, a schedule)."""

    created_at: datetime
    object_id: str


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe text for ``cursor``."""
    payload = f"{cursor.created_at.astimezone(UTC).isoformat()}|{cursor.object_id}"
    check = hashlib.sha256(payload.encode()).hexdigest()[:8]
    return base64.urlsafe_b64encode(f"{payload}|{check}".encode()).decode().rstrip("=")


def older_than(created_at: Any, object_id: Any, after: Cursor) -> ColumnElement[bool]:
    """The rows that come after ``after`` in a newest-first ``(created_at, id)`` list.

    Spelled as a range plus a tie-break rather than a row comparison: the range
    bounds the index scan on both databases.
    """
    return and_(
        created_at <= after.created_at,
        or_(created_at < after.created_at, object_id < after.object_id),
    )


def split_page(
    rows: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, str]]
) -> tuple[list[T], Cursor | None]:
    """A page of ``rows``, read ``limit + 1`` at a time, and the cursor of the next page
    (``None`` on the last): ``key`` gives a row's ``(created_at, id)``."""
    if len(rows) <= limit:
        return list(rows), None
    page = list(rows[:limit])
    return page, Cursor(*key(page[-1]))


def decode_cursor(text: str, prefix: IdPrefix = IdPrefix.POST) -> Cursor:
    """The position :func:`encode_cursor` made ``text`` from, in a list of ``prefix`` ids.

    Raises :class:`CursorError` for anything else.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        stamp, object_id, check = raw.split("|")
        payload = f"{stamp}|{object_id}"
        if check != hashlib.sha256(payload.encode()).hexdigest()[:8] or not is_id(
            object_id, prefix
        ):
            raise ValueError("checksum")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive")
        created_at = created_at.astimezone(UTC)  # overflows at the ends of the calendar
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise CursorError("is not a cursor this API returned") from None
    return Cursor(created_at, object_id)

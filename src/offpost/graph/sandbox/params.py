"""One Graph call as the handlers see it, and the parameter conventions Graph uses.

Parameters come from the query string and, for POST, from a form
(urlencoded or multipart) or JSON body; the body wins on a clash. Multipart
files are :class:`Upload` s, known by size and SHA-256 (their bytes stay in a
spooled file until the call ends). The access token may also come as
``Authorization: OAuth <token>`` or ``Bearer <token>``. ``fields`` may nest
(``attachments{media_type,target}``): only the top-level names count.
Lists page with cursors (base64 of the item id, like Graph's ``MTM1…``) and a
``paging.next`` URL that repeats the call's query — access token included, as
Graph's own ``next`` URLs do.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, TypeVar
from urllib.parse import urlencode

from offpost.graph.sandbox import errors
from offpost.graph.sandbox.calls import CallContext

T = TypeVar("T")
DEFAULT_LIMIT = 25
MAX_LIMIT = 100


#: How much of an upload is read at a time.
READ_BYTES = 1024 * 1024


@dataclass(eq=False)
class Upload:
    """One multipart file: its size and SHA-256, and the spooled file to read it again."""

    filename: str
    size: int
    sha256: str
    file: IO[bytes] = field(repr=False)

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(READ_BYTES):
            yield chunk


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@dataclass(eq=False)
class GraphRequest:
    method: str
    segments: tuple[str, ...]
    params: dict[str, str]
    query: dict[str, str]
    base_url: str
    version: str | None
    ctx: CallContext
    header_token: str | None = None
    uploads: dict[str, Upload] = field(default_factory=dict)
    #: Request headers, lower-cased names (rupload reads ``offset``, ``file_size``…).
    headers: dict[str, str] = field(default_factory=dict)
    #: The raw body, unread, for bodies that are neither a form nor JSON (rupload).
    body: Callable[[], AsyncIterator[bytes]] = _no_body

    @property
    def token_value(self) -> str | None:
        return self.params.get("access_token") or self.header_token

    def fields(self, default: Sequence[str]) -> list[str]:
        """The requested ``fields`` (top-level names of a comma-separated list), or ``default``."""
        wanted = top_level_fields(self.params.get("fields", ""))
        return wanted or list(default)

    def url_with(self, **changes: str | None) -> str:
        """This call's URL with query parameters changed (``None`` removes one)."""
        query = dict(self.query)
        for key, value in changes.items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        prefix = f"/{self.version}" if self.version else ""
        return f"{self.base_url}{prefix}/{'/'.join(self.segments)}?{urlencode(query)}"


def top_level_fields(raw: str) -> list[str]:
    """``id,attachments{media_type,target{id}},message`` -> ``[id, attachments, message]``."""
    return list(field_expansions(raw))


def field_expansions(raw: str) -> dict[str, str]:
    """Each top-level field with its modifiers: ``id,comments.summary(true).limit(0)`` ->
    ``{"id": "", "comments": ".summary(true).limit(0)"}``; ``{…}`` sub-fields are dropped."""
    items: list[str] = []
    braces = parens = 0
    current = ""
    for char in raw:
        if char == "{":
            braces += 1
        elif char == "}":
            braces = max(0, braces - 1)
        elif braces:
            continue
        elif char == "," and not parens:
            items.append(current)
            current = ""
        else:
            parens += (char == "(") - (char == ")")
            parens = max(0, parens)
            current += char
    items.append(current)
    expansions: dict[str, str] = {}
    for item in items:
        name, dot, rest = item.strip().partition(".")
        if name.strip():
            expansions[name.strip()] = dot + rest
    return expansions


def parse_bool(value: str | None, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("false", "0", "no")


def parse_int(req: GraphRequest, name: str) -> int | None:
    raw = req.params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.invalid_param(f"Param {name} must be an integer") from None


def parse_time(value: str) -> int | None:
    """Unix seconds or an ISO-8601 time; ``None`` when neither (strtotime strings unsupported)."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(parsed.timestamp()) if parsed.tzinfo is not None else None


def select(obj: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Only the requested fields that exist, ``id`` always included."""
    chosen = {name: obj[name] for name in fields if name in obj}
    if "id" in obj:
        chosen["id"] = obj["id"]
    return chosen


def encode_cursor(item_id: str) -> str:
    return base64.b64encode(item_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str | None:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def paginate(
    req: GraphRequest, items: Sequence[T], key: Callable[[T], str]
) -> tuple[list[T], dict[str, Any]]:
    """One page of ``items`` after ``after`` / before ``before``, and Graph's ``paging`` object."""
    limit = parse_int(req, "limit") or DEFAULT_LIMIT
    limit = max(1, min(limit, MAX_LIMIT))
    ids = [key(item) for item in items]
    start = 0
    if after := req.params.get("after"):
        target = _decode_cursor(after)
        start = ids.index(target) + 1 if target in ids else len(ids)
    elif before := req.params.get("before"):
        target = _decode_cursor(before)
        end = ids.index(target) if target in ids else 0
        start = max(0, end - limit)
        limit = min(limit, end - start)
    chunk = list(items[start : start + limit])
    paging: dict[str, Any] = {}
    if chunk:
        first, last = encode_cursor(key(chunk[0])), encode_cursor(key(chunk[-1]))
        paging["cursors"] = {"before": first, "after": last}
        if start > 0:
            paging["previous"] = req.url_with(before=first, after=None)
        if start + len(chunk) < len(items):
            paging["next"] = req.url_with(after=last, before=None)
    return chunk, paging

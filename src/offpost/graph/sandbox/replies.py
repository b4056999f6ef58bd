"""A call's answer before it is sent: an HTTP response, or an element of a batch's reply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from offpost.graph.sandbox import errors


@dataclass(eq=False)
class Reply:
    status: int
    body: bytes
    media_type: str = "application/json"
    #: Headers of the answer itself (``www-authenticate``); usage headers are the context's.
    headers: dict[str, str] = field(default_factory=dict)
    #: No answer at all: the connection is lost (in a batch, the element is ``null``).
    dropped: bool = False


def render_json(content: Any) -> bytes:
    """JSON as Starlette's ``JSONResponse`` renders it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def error_reply(error: errors.GraphError) -> Reply:
    """Graph's error envelope, with the ``WWW-Authenticate`` Graph adds to OAuth errors."""
    headers = {}
    if error.type == "OAuthException":
        kind = "invalid_token" if error.code == 190 else "invalid_request"
        headers["www-authenticate"] = f'OAuth "Facebook Platform" "{kind}" "{error.message}"'
    return Reply(error.status, render_json(error.body()), headers=headers)

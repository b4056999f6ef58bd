"""Turn one Graph reply into a typed error, or ``None`` when it is a success.

:func:`classify_error` is pure (status, body, content type, headers in; an error
out), so docs/design.md's classification table is tested row by row without I/O.

Rules, in order (docs/graph.md, docs/design.md):

1. A JSON object with an ``error`` key is an error whatever the HTTP status —
   Graph answers 400/403/500 and, rarely, 200 with an envelope. It is classified
   on ``error.code`` (taken from a ``(#123)`` message prefix when the field is
   missing), then ``error_subcode``, then the message text, because the subcode
   is often absent even on token errors.
2. A 2xx JSON object without ``error`` is a success.
3. Anything else — empty body, an HTML page from a proxy, text, JSON that is not
   an object or is cut off — is a :class:`GraphMalformedResponseError` (outcome
   unknown), except a bare HTTP 429, which is a rate limit.

Waits are bounded: a ``Retry-After`` or ``estimated_time_to_regain_access``
beyond :data:`~offpost.graph.usage.MAX_REGAIN_ACCESS_S` (24 hours) is capped
there, so an absurd header cannot park a post for centuries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from offpost.graph.errors import (
    AuthReason,
    GraphAuthError,
    GraphDuplicateError,
    GraphError,
    GraphErrorFields,
    GraphMalformedResponseError,
    GraphPermissionError,
    GraphRateLimitedError,
    GraphRejectedError,
    GraphTransientError,
    RateLimitScope,
    RejectReason,
    scrub_secrets,
)
from offpost.graph.usage import MAX_REGAIN_ACCESS_S, GraphUsage, parse_usage

TRANSIENT_CODES = frozenset({1, 2})
AUTH_CODES = frozenset({102, 190})
AUTH_SUBCODES: Mapping[int, AuthReason] = {
    458: AuthReason.APP_NOT_INSTALLED,
    459: AuthReason.CHECKPOINTED,
    460: AuthReason.PASSWORD_CHANGED,
    463: AuthReason.EXPIRED,
    464: AuthReason.UNCONFIRMED_USER,
    466: AuthReason.SESSION_INVALIDATED,
    467: AuthReason.INVALID_TOKEN,
    492: AuthReason.ROLE_LOST,
}
# Code 3 ("API Method") is documented as a missing capability/permission.
PERMISSION_CODES = frozenset({3, 10, *range(200, 300)})
DUPLICATE_CODE = 506
POLICY_CODE = 368
BAD_PARAMETER_CODE = 100
APP_LIMIT_CODE = 341
# 368 with this subcode is "you're posting too fast": a throttle, not a verdict
# on the content (Postiz retries it, docs/graph.md).
POSTING_TOO_FAST_SUBCODE = 1390008

RATE_LIMIT_SCOPES: Mapping[int, RateLimitScope] = {
    4: RateLimitScope.APP,
    17: RateLimitScope.USER,
    32: RateLimitScope.PAGE,
    613: RateLimitScope.APP,
    **{code: RateLimitScope.PAGE for code in range(80000, 80015)},  # BUC: per business object
}

# How long to wait when Graph gives no estimate. Graph's limiters count over a
# rolling window of one hour (rate-limiting doc: app, user and, in the older
# revision, Pages) and calls made while limited extend the block, so one full
# window is the only documented safe wait; Mixpost waits 1 h for app-level limits
# too. BUC throttles normally come with estimated_time_to_regain_access, which wins.
ONE_WINDOW_S = 3600
DEFAULT_RETRY_AFTER_S: Mapping[int, int] = {
    4: ONE_WINDOW_S,  # app: 200 calls x users per rolling hour
    17: ONE_WINDOW_S,  # user: per-user rolling hour (value not disclosed)
    32: ONE_WINDOW_S,  # Page via user token: rolling hour (24 h in newer doc revisions)
    613: ONE_WINDOW_S,  # custom limit: window not documented, so the common one
    **{code: ONE_WINDOW_S for code in range(80000, 80015)},
}
#: For 368/1390008 ("posting too fast"): no documented duration.
POSTING_TOO_FAST_RETRY_AFTER_S = ONE_WINDOW_S

_CODE_PREFIX = re.compile(r"^\s*\(#(\d+)\)")
_HTML_TITLE = re.compile(rb"<title[^>]*>([^<]{1,200})</title>", re.IGNORECASE)
_DUPLICATE_MESSAGE = re.compile(r"already posted|duplicate status message|\(#506\)", re.IGNORECASE)
_PROOF_MESSAGE = re.compile(r"appsecret_proof|appsecret_time", re.IGNORECASE)
_PERMISSION_NAME = re.compile(
    r"\b(?:pages|publish|business|read|manage|ads|instagram|user|public|catalog|whatsapp)"
    r"_[a-z]+(?:_[a-z]+)*\b"
)
# Message fallbacks for 190/102 without a subcode; the first match wins, so the
# specific invalidations come before the generic "expired" and "invalid".
_AUTH_MESSAGES: tuple[tuple[re.Pattern[str], AuthReason], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (
            r"changed (?:their|the|his|her) password|changed the session for security",
            AuthReason.PASSWORD_CHANGED,
        ),
        (r"must be granted before impersonating", AuthReason.PERMISSION_MISSING),
        (
            r"has not authorized application|not installed|deauthorized",
            AuthReason.APP_NOT_INSTALLED,
        ),
        (r"checkpoint|must log in", AuthReason.CHECKPOINTED),
        (r"not a confirmed user|unconfirmed", AuthReason.UNCONFIRMED_USER),
        (r"invalidated explicitly", AuthReason.SESSION_INVALIDATED),
        (r"administrator, editor|role on (?:the|this) page|appropriate role", AuthReason.ROLE_LOST),
        (r"expired|longer than 90 days", AuthReason.EXPIRED),
        (
            r"logged out|decrypted|cannot parse|malformed|invalid oauth|signature",
            AuthReason.INVALID_TOKEN,
        ),
    )
)


def classify_error(
    http_status: int,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    *,
    call: str = "",
) -> GraphError | None:
    """The typed error one Graph reply stands for, or ``None`` when it is a success.

    ``call`` (``"POST /123/feed"``) names the call in the messages offpost makes
    up for replies that are not Graph's JSON. Never raises: whatever the body
    holds, the answer is an error object or ``None``.
    """
    usage = parse_usage(headers)
    decoded, ok = _decode_json(body)
    if ok and isinstance(decoded, dict):
        envelope = decoded.get("error")
        if envelope is not None:
            if not isinstance(envelope, dict):
                envelope = {"message": str(envelope)}
            return classify_envelope(
                envelope, http_status=http_status, usage=usage, headers=headers
            )
        if 200 <= http_status < 300:
            return None
    to = f" to {call}" if call else ""
    if http_status == 429:
        return GraphRateLimitedError(
            f"Graph answered{to} with HTTP 429 and no error body",
            retry_after_s=_retry_after_header_s(headers) or ONE_WINDOW_S,
            scope=RateLimitScope.APP,
            http_status=http_status,
            usage=usage,
        )
    return GraphMalformedResponseError(
        f"Graph answered{to} with HTTP {http_status} and "
        f"{_describe_body(body, content_type, decoded, ok)}",
        http_status=http_status,
        is_transient=True,
        usage=usage,
    )


def classify_envelope(
    envelope: Mapping[str, object],
    *,
    http_status: int,
    usage: GraphUsage,
    headers: Mapping[str, str],
) -> GraphError:
    """The typed error for Graph's ``{"error": {...}}`` object."""
    message = _as_str(envelope.get("message")) or "Graph returned an error without a message"
    code = _as_int(envelope.get("code"))
    if code is None:
        prefix = _CODE_PREFIX.match(message)
        code = int(prefix.group(1)) if prefix else None
    subcode = _as_int(envelope.get("error_subcode"))
    is_transient = envelope.get("is_transient") is True
    fields: GraphErrorFields = {
        "code": code,
        "subcode": subcode,
        "type": _as_str(envelope.get("type")),
        "fbtrace_id": _as_str(envelope.get("fbtrace_id")),
        "http_status": http_status,
        "is_transient": is_transient,
        "user_title": _as_str(envelope.get("error_user_title")),
        "user_message": _as_str(envelope.get("error_user_msg")),
        "usage": usage,
    }
    texts = f"{message}\n{fields.get('user_message') or ''}"

    if code == DUPLICATE_CODE or (code in (POLICY_CODE, None) and _DUPLICATE_MESSAGE.search(texts)):
        return GraphDuplicateError(message, **fields)
    if code is not None and code in RATE_LIMIT_SCOPES:
        return GraphRateLimitedError(
            message,
            retry_after_s=retry_after_s(code, usage, headers),
            scope=RATE_LIMIT_SCOPES[code],
            **fields,
        )
    if code == POLICY_CODE and subcode == POSTING_TOO_FAST_SUBCODE:
        return GraphRateLimitedError(
            message,
            retry_after_s=_retry_after_header_s(headers) or POSTING_TOO_FAST_RETRY_AFTER_S,
            scope=RateLimitScope.PAGE,
            **fields,
        )
    if code in AUTH_CODES or (subcode in AUTH_SUBCODES and code not in PERMISSION_CODES):
        return GraphAuthError(message, reason=auth_reason(subcode, message), **fields)
    if code in PERMISSION_CODES:
        return GraphPermissionError(
            message, missing_permissions=missing_permissions(texts), **fields
        )
    if code in TRANSIENT_CODES or is_transient:
        return GraphTransientError(message, **fields)
    if code == BAD_PARAMETER_CODE:
        reason = (
            RejectReason.PROOF if _PROOF_MESSAGE.search(message) else RejectReason.BAD_PARAMETER
        )
        return GraphRejectedError(message, reason=reason, **fields)
    if code == APP_LIMIT_CODE:
        return GraphRejectedError(message, reason=RejectReason.APP_LIMIT, **fields)
    if code == POLICY_CODE:
        return GraphRejectedError(message, reason=RejectReason.POLICY, **fields)
    if http_status >= 500:
        # An unknown code on a server error: Graph's side failed, the call may have run.
        return GraphTransientError(message, **fields)
    return GraphRejectedError(message, reason=RejectReason.OTHER, **fields)


def auth_reason(subcode: int | None, message: str) -> AuthReason:
    """Why a token failed: from the subcode when Graph gave a known one, else from the message."""
    if subcode is not None and subcode in AUTH_SUBCODES:
        return AUTH_SUBCODES[subcode]
    for pattern, reason in _AUTH_MESSAGES:
        if pattern.search(message):
            return reason
    return AuthReason.UNKNOWN


def missing_permissions(message: str) -> tuple[str, ...]:
    """The permission names a message mentions, in order, once each."""
    return tuple(dict.fromkeys(_PERMISSION_NAME.findall(message)))


def retry_after_s(code: int, usage: GraphUsage, headers: Mapping[str, str]) -> int:
    """How long to wait after rate-limit ``code``: Graph's BUC estimate, else ``Retry-After``,
    else the documented default for the code; never more than 24 hours."""
    if usage.regain_access_s > 0:
        return min(usage.regain_access_s, MAX_REGAIN_ACCESS_S)
    from_header = _retry_after_header_s(headers)
    if from_header:
        return from_header
    return DEFAULT_RETRY_AFTER_S.get(code, ONE_WINDOW_S)


def _retry_after_header_s(headers: Mapping[str, str]) -> int | None:
    for name, value in headers.items():
        text = value.strip()
        if name.lower() == "retry-after" and text.isascii() and text.isdigit():
            # An absurd value waits the longest documented window, not forever.
            return min(int(text[:12]), MAX_REGAIN_ACCESS_S) or None
    return None


def _decode_json(body: bytes) -> tuple[object, bool]:
    if not body.strip():
        return None, False
    try:
        return json.loads(body), True
    except (ValueError, RecursionError):
        return None, False


def _describe_body(body: bytes, content_type: str | None, decoded: object, ok: bool) -> str:
    kind = (content_type or "no content type").split(";", 1)[0].strip()[:60]
    if not body.strip():
        return "an empty body instead of JSON"
    if ok:
        return f"JSON that is not Graph's object ({type(decoded).__name__})"
    head = body.lstrip()[:15].lower()
    if "html" in kind or head.startswith((b"<!doctype", b"<html")):
        title = _HTML_TITLE.search(body[:4096])
        named = ""
        if title:
            text = " ".join(title.group(1).decode("utf-8", errors="replace").split())
            named = f' titled "{scrub_secrets(text)[:100]}"' if text else ""
        return f"an HTML page{named} instead of JSON ({kind}), as a proxy sends"
    if "json" in kind:
        return f"a body that is not JSON: cut off or invalid ({kind}, {len(body)} bytes)"
    return f"a body that is not JSON ({kind}, {len(body)} bytes)"


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None

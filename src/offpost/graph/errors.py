"""The errors the Graph client raises, one class per thing offpost does about them.

The tree mirrors the classification table of docs/design.md ("Graph errors and
what each one means")::

    OffpostError
    └── GraphError                      anything Graph (or the way to it) said no with
        ├── GraphTransientError         codes 1, 2, is_transient, HTTP 5xx   outcome unknown
        │   ├── GraphTimeoutError       connect/read/write/pool timeout      (unknown unless
        │   ├── GraphConnectionError    refused, reset, protocol error        the request was
        │   └── GraphMalformedResponseError  not JSON, HTML, empty, ...       never sent)
        ├── GraphRateLimitedError       4, 17, 32, 613, 80000-80014,         wait retry_after_s
        │                               368/1390008 ("going too fast")
        ├── GraphAuthError              190 (458/459/460/463/464/467/492), 102  needs_reauth
        ├── GraphPermissionError        3, 10, 200-299                       failed, names perms
        ├── GraphRejectedError          100 (incl. proof), 341, 368, rest    failed
        └── GraphDuplicateError         506, 368 "already posted"            outcome unknown

``outcome_unknown`` is what the publish worker needs: when it is true, the call
may have taken effect even though it failed (Graph answers code 2/HTTP 500 and
still publishes; a lost reply hides a created post; a duplicate is almost
always our own earlier attempt), so the worker reconciles — reads the Page's
feed — before any retry. It is false when Graph refused the call or the request
provably never left (connect failures, pool timeouts).

Every error carries Graph's ``code``, ``subcode``, ``type``, ``fbtrace_id``, the
HTTP status, ``is_transient`` (Graph's flag; also set on the errors offpost makes
up for transport failures and malformed replies) and the usage headers of the
reply. Branch on the class, not on ``is_transient``. Messages are
scrubbed of anything token-shaped: Graph does not echo tokens, but a message is
text that ends up in logs and API responses, so it is cleaned defensively.
"""

from __future__ import annotations

import enum
from typing import Any, TypedDict, Unpack

from offpost.errors import OffpostError
from offpost.graph.usage import EMPTY_USAGE, GraphUsage
from offpost.redact import scrub


def scrub_secrets(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without token-shaped strings, secret parameters and the given ``secrets``."""
    return scrub(text, secrets)


class AuthReason(enum.StrEnum):
    """Why a token stopped working (190/102 subcodes, or the message when there is none)."""

    APP_NOT_INSTALLED = "app_not_installed"  # 458: the user removed the app
    CHECKPOINTED = "checkpointed"  # 459: the user must log in at facebook.com
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - 460: password change, security reset
    EXPIRED = "expired"  # 463: the token's lifetime ran out
    UNCONFIRMED_USER = "unconfirmed_user"  # 464
    SESSION_INVALIDATED = "session_invalidated"  # 466: invalidated through the API
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - 467: logged out, or not a token at all
    ROLE_LOST = "role_lost"  # 492: the user no longer has a role on the Page
    PERMISSION_MISSING = "permission_missing"  # 190 "must be granted before impersonating"
    UNKNOWN = "unknown"

    @property
    def is_expiry(self) -> bool:
        """The token merely ran out; everything else is an invalidation."""
        return self is AuthReason.EXPIRED


class RateLimitScope(enum.StrEnum):
    """Whose allowance ran out, i.e. what the rate limiter should slow down."""

    APP = "app"  # 4, 613: every call of the app
    USER = "user"  # 17: calls with this user's tokens, across all apps
    PAGE = "page"  # 32, 80000-80014, 368/1390008: calls about this Page


class RejectReason(enum.StrEnum):
    """Why Graph refused a well-formed call for good."""

    BAD_PARAMETER = "bad_parameter"  # 100
    PROOF = "proof"  # 100 "appsecret_proof": wrong secret, token of another app, clock
    APP_LIMIT = "app_limit"  # 341
    POLICY = "policy"  # 368: blocked for policy violations
    OTHER = "other"


class GraphErrorFields(TypedDict, total=False):
    """The keyword arguments every :class:`GraphError` accepts."""

    code: int | None
    subcode: int | None
    type: str | None
    fbtrace_id: str | None
    http_status: int | None
    is_transient: bool
    user_title: str | None
    user_message: str | None
    usage: GraphUsage
    outcome_unknown: bool


class GraphError(OffpostError):
    """Graph refused a call, or its reply never arrived intact.

    ``message`` is Graph's own (scrubbed); ``outcome_unknown`` says whether the
    call may have taken effect anyway (see the module docstring).
    """

    #: The class default; an instance may narrow it (a request that never left).
    default_outcome_unknown: bool = False

    message: str
    code: int | None
    subcode: int | None
    type: str | None
    fbtrace_id: str | None
    http_status: int | None
    is_transient: bool
    user_title: str | None
    user_message: str | None
    usage: GraphUsage
    outcome_unknown: bool

    def __init__(self, message: str, **fields: Unpack[GraphErrorFields]) -> None:
        self.message = scrub_secrets(message)
        self.code = fields.get("code")
        self.subcode = fields.get("subcode")
        self.type = fields.get("type")
        self.fbtrace_id = fields.get("fbtrace_id")
        self.http_status = fields.get("http_status")
        self.is_transient = fields.get("is_transient", False)
        user_title = fields.get("user_title")
        user_message = fields.get("user_message")
        self.user_title = scrub_secrets(user_title) if user_title else None
        self.user_message = scrub_secrets(user_message) if user_message else None
        self.usage = fields.get("usage", EMPTY_USAGE)
        self.outcome_unknown = fields.get("outcome_unknown", self.default_outcome_unknown)
        super().__init__(self._describe())

    def _describe(self) -> str:
        details = [
            f"{name}={value}"
            for name, value in (
                ("code", self.code),
                ("subcode", self.subcode),
                ("http_status", self.http_status),
                ("fbtrace_id", self.fbtrace_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: rebuild from the instance dict so pickling (Celery,
        # multiprocessing) round-trips every attribute.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[GraphError], args: tuple[Any, ...], state: dict[str, Any]) -> GraphError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class GraphTransientError(GraphError):
    """Graph failed on its side (1, 2, ``is_transient``, HTTP 5xx): reconcile, then retry."""

    default_outcome_unknown = True


class GraphTimeoutError(GraphTransientError):
    """No reply in time. A connect or pool timeout means the request never left."""


class GraphConnectionError(GraphTransientError):
    """The connection failed: refused (never sent), or reset/broken mid-call (unknown)."""


class GraphMalformedResponseError(GraphTransientError):
    """A reply that is not Graph's JSON: empty, HTML from a proxy, not an object, cut off."""


class GraphRateLimitedError(GraphError):
    """An allowance ran out: wait ``retry_after_s``, slow ``scope`` down; not a failed attempt."""

    retry_after_s: int
    scope: RateLimitScope

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int = 3600,
        scope: RateLimitScope = RateLimitScope.APP,
        **fields: Unpack[GraphErrorFields],
    ) -> None:
        self.retry_after_s = retry_after_s
        self.scope = scope
        super().__init__(message, **fields)


class GraphAuthError(GraphError):
    """The token no longer works (190, 102): the credential needs re-authorisation."""

    reason: AuthReason

    def __init__(
        self,
        message: str,
        *,
        reason: AuthReason = AuthReason.UNKNOWN,
        **fields: Unpack[GraphErrorFields],
    ) -> None:
        self.reason = reason
        super().__init__(message, **fields)

    @property
    def is_expired(self) -> bool:
        """The token ran out (as opposed to being invalidated)."""
        return self.reason.is_expiry


class GraphPermissionError(GraphError):
    """A permission is missing (3, 10, 200-299); ``missing_permissions`` names it when Graph did."""

    missing_permissions: tuple[str, ...]

    def __init__(
        self,
        message: str,
        *,
        missing_permissions: tuple[str, ...] = (),
        **fields: Unpack[GraphErrorFields],
    ) -> None:
        self.missing_permissions = missing_permissions
        super().__init__(message, **fields)


class GraphRejectedError(GraphError):
    """Graph refused the call for good (bad parameter, bad proof, policy, anything else)."""

    reason: RejectReason

    def __init__(
        self,
        message: str,
        *,
        reason: RejectReason = RejectReason.OTHER,
        **fields: Unpack[GraphErrorFields],
    ) -> None:
        self.reason = reason
        super().__init__(message, **fields)


class GraphDuplicateError(GraphError):
    """Graph says this post was already made (506, 368 "already posted"): reconcile, it is
    almost always our own earlier attempt whose reply was lost."""

    default_outcome_unknown = True

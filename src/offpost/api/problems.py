"""Errors as ``application/problem+json`` (RFC 9457), the only error shape the API returns.

Handlers raise :class:`ProblemError` (or a subclass); one set of exception
handlers turns it, FastAPI's validation errors, Starlette's 404/405 and anything
unexpected into a problem document with one of the API contract's ``code`` values. No
detail ever carries a token or the app secret: every text goes through
:func:`offpost.redact.scrub` on its way out.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from offpost.api.limits import retry_after_header
from offpost.errors import OffpostError
from offpost.media.store import MediaStoreError
from offpost.models.base import utcnow
from offpost.posts.quotas import Quota, QuotaExceededError
from offpost.posts.rules import PostOutcomeUnknownError
from offpost.redact import scrub

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: What ``Retry-After`` says when the media store failed.
STORE_RETRY_AFTER_S = 5

#: the OpenAPI document: every code and its usual status.
CODES: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "conflict": (409, "Conflict"),
    # An edit or cancel while an earlier attempt may have published the post.
    "outcome_unknown": (409, "Outcome unknown"),
    "invalid_request": (422, "Invalid request"),
    "invalid_token": (422, "Invalid token"),
    # The user did not grant a permission offpost needs (``missing_permissions`` names them).
    "missing_permissions": (422, "Missing permissions"),
    # The user's role on the Page does not let it publish (no CREATE_CONTENT task).
    "page_not_postable": (422, "Page not postable"),
    "payload_too_large": (413, "Payload too large"),
    "rate_limited": (429, "Too many requests"),
    # A size quota of the client (pending posts, active schedules, a rule's posts per day).
    "quota_exceeded": (409, "Quota exceeded"),
    "graph_unavailable": (503, "Graph API unavailable"),
    # The media store (a folder, an S3 bucket) failed: the upload or read may be tried again.
    "media_store_unavailable": (503, "Media store unavailable"),
    # Not one of the API contract's codes: only a bug answers it, never bad input.
    "internal_error": (500, "Internal error"),
}


class ProblemError(OffpostError):
    """An error the API answers with a problem document."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        missing_permissions: list[str] | None = None,
        quota: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.missing_permissions = missing_permissions
        self.quota = quota
        default_status, self.title = CODES[code]
        self.code = code
        self.status = status or default_status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


def outcome_unknown(exc: PostOutcomeUnknownError) -> ProblemError:
    """409 ``outcome_unknown``, with ``Retry-After`` when offpost knows when it will know."""
    headers = {}
    if exc.known_at is not None:
        # The next attempt reads the Page first: ask again once it has had time to.
        wait_s = (exc.known_at - utcnow()).total_seconds() + OUTCOME_KNOWN_AFTER_S
        headers["Retry-After"] = str(max(OUTCOME_KNOWN_AFTER_S, math.ceil(wait_s)))
    return ProblemError("outcome_unknown", str(exc), headers=headers)


def quota_problem(exc: QuotaExceededError) -> ProblemError:
    """A quota the request would exceed: 429 with ``Retry-After`` for a rate (it frees up
    by itself), 409 for a size, 422 for a rule too frequent; ``quota`` names it."""
    quota = {"name": exc.quota.value, "limit": exc.limit, "used": exc.used}
    if exc.retry_after_s is not None:
        return ProblemError(
            "rate_limited", str(exc), headers=retry_after_header(exc.retry_after_s), quota=quota
        )
    status = 422 if exc.quota == Quota.OCCURRENCES_PER_DAY else None
    return ProblemError("quota_exceeded", str(exc), status=status, quota=quota)


#: Seconds a worker normally needs, once a post is due, to read its Page.
OUTCOME_KNOWN_AFTER_S = 5


def field_error(field: str, message: str, code: str = "invalid_request") -> ProblemError:
    """A 422 about one field of the request body."""
    return ProblemError(code, f"{field}: {message}", errors=[{"field": field, "message": message}])


def problem_response(problem: ProblemError) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://offpost.dev/problems/{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": scrub(problem.detail),
        "code": problem.code,
    }
    if problem.errors:
        body["errors"] = [
            {"field": e["field"], "message": scrub(e["message"])} for e in problem.errors
        ]
    if problem.missing_permissions is not None:
        body["missing_permissions"] = problem.missing_permissions
    if problem.quota is not None:
        body["quota"] = problem.quota
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


#: The one entry of ``errors`` for a body that cannot be parsed at all.
BODY_ERROR = {"field": "body", "message": "the body is not valid JSON"}


def _field_path(loc: tuple[Any, ...]) -> str:
    """``("body", "posts", 17, "publish_at")`` → ``posts[17].publish_at``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or (str(loc[0]) if loc else "body")


def _validation_message(error: dict[str, Any]) -> str:
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    if error.get("type") == "json_invalid":
        return "the body is not valid JSON"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error path of ``app`` answer problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            # A JSON syntax error's location is a character offset, not a field.
            BODY_ERROR
            if e.get("type") == "json_invalid"
            else {"field": _field_path(tuple(e.get("loc", ()))), "message": _validation_message(e)}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(ProblemError("invalid_request", detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (not UTF-8, nested past
            # the parser's depth): the API contract's 422, as for any other malformed body.
            detail = f"{BODY_ERROR['field']}: {BODY_ERROR['message']}"
            return problem_response(ProblemError("invalid_request", detail, errors=[BODY_ERROR]))
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "invalid_request",
            409: "conflict",
            413: "payload_too_large",
            429: "rate_limited",
        }.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error")
        detail = exc.detail if isinstance(exc.detail, str) else CODES[code][1]
        return problem_response(
            ProblemError(code, detail, status=exc.status_code, headers=dict(exc.headers or {}))
        )

    @app.exception_handler(MediaStoreError)
    async def _store(request: Request, exc: MediaStoreError) -> JSONResponse:
        logger.warning(
            "the media store failed on %s %s: %s",
            request.method,
            request.url.path,
            scrub(str(exc)),
            extra={"action": "media_store_failed"},
        )
        return problem_response(
            ProblemError(
                "media_store_unavailable",
                "the media store is unavailable; try again shortly",
                headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(
            "unhandled error on %s %s",
            request.method,
            request.url.path,
            extra={"action": "api_unhandled_error"},
        )
        return problem_response(
            ProblemError("internal_error", "an internal error occurred; it has been logged")
        )

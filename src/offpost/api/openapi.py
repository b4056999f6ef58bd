"""The OpenAPI document as the API really answers (``GET /openapi.json``).

FastAPI describes each route's success from its ``response_model`` and the
errors each route lists itself. What every route shares is added here, once,
from how the API behaves (the OpenAPI document):

- every error of ``/v1/*`` is ``application/problem+json`` (:class:`Problem`),
  and so is a 422 anywhere (query and path validation, dashboard included);
- every ``/v1/*`` route answers 401 without a valid key and 429 (with
  ``Retry-After``) when the key, or the address failing to authenticate, is
  over its limit; ``/v1/admin/*`` answers 403 to a client key;
- a redirect (the dashboard's) has a ``Location`` and no body, and a 429
  anywhere (the dashboard's sign-in too) has ``Retry-After``;
- a route that reads a body answers 413 over the body limit and 422 for a body
  that is not valid JSON or not the declared shape; a route with parameters
  answers 422 for a bad one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from offpost.api.problems import CODES, PROBLEM_JSON
from offpost.posts.quotas import Quota

Document = dict[str, Any]

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_LOCATION = {
    "Location": {"description": "Where to go.", "required": True, "schema": {"type": "string"}}
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "`Bearer`: send `Authorization: Bearer <api key>`.",
        "required": True,
        "schema": {"type": "string"},
    }
}


class FieldErrorOut(BaseModel):
    field: str = Field(description="The field, as `posts[17].publish_at`, `cursor` or `body`.")
    message: str


class QuotaOut(BaseModel):
    name: str = Field(json_schema_extra={"enum": [quota.value for quota in Quota]})
    limit: int
    used: int


class Problem(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``; ``code`` is one of the API contract's."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(json_schema_extra={"enum": [c for c in CODES if c != "internal_error"]})
    errors: list[FieldErrorOut] = Field(
        default_factory=list, description="One entry per bad field (422 only; may be absent)."
    )
    missing_permissions: list[str] | None = Field(
        default=None, description="`missing_permissions` only: the permissions not granted."
    )
    quota: QuotaOut | None = Field(
        default=None,
        description="A quota the request would exceed (`quota_exceeded`, and `rate_limited` "
        "for a client's quota): its name, its value for this client, and how much is used.",
    )


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _add(responses: dict[str, Any], status: int, description: str, **extra: Any) -> None:
    entry = responses.setdefault(str(status), {"description": description})
    entry.update(extra)


def describe_operation(
    path: str, operation: dict[str, Any], body_limit: Callable[[str], int]
) -> None:
    """Add the shared error answers to one operation of ``path``, in place."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    api = path.startswith("/v1/")
    if api:
        _add(responses, 401, "unauthorized: no API key, or not a valid one")
        responses["401"]["headers"] = _WWW_AUTHENTICATE
        _add(
            responses,
            429,
            "rate_limited: the client's requests_per_minute quota is used up (`quota` "
            "names it), or too many failed authentications from this address",
        )
        responses["429"]["headers"] = _RETRY_AFTER
        if path.startswith("/v1/admin/"):
            _add(responses, 403, "forbidden: not an admin key")
    if "requestBody" in operation:
        _add(
            responses,
            413,
            f"payload_too_large: the body is larger than {body_limit(path)} bytes",
        )
        _add(responses, 422, "invalid_request: the body is not valid JSON or not this shape")
    if operation.get("parameters"):
        _add(responses, 422, "invalid_request: a bad parameter")
    for status, response in responses.items():
        if status.startswith("3"):
            # FastAPI gives every answer of an HTML route a text/html body; a redirect has none.
            response.pop("content", None)
            response["headers"] = _LOCATION
        if (api and int(status) >= 400) or status in ("413", "422"):
            response["content"] = _problem_content()
        if status == "429" or (api and status == "503"):
            # The dashboard's sign-in says when to come back too.
            response["headers"] = _RETRY_AFTER


def describe_problems(document: Document, body_limit: Callable[[str], int]) -> Document:
    """``document`` with every operation's shared error answers, and the Problem schema."""
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            describe_operation(path, operation, body_limit)
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's own validation error shapes: the API never answers them.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for model in (Problem, FieldErrorOut):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        schemas[model.__name__] = schema
    return document


def install_openapi(app: FastAPI, body_limit: Callable[[str], int]) -> None:
    """Serve :func:`describe_problems` of FastAPI's document as ``/openapi.json``."""
    build = app.openapi

    def openapi() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = describe_problems(build(), body_limit)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""FastAPI dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

Authentication lives here: ``Authorization: Bearer <api key>``, looked up by the
key's SHA-256 hash and compared in constant time. Failed attempts are rate-limited
per peer address more strictly than successful calls are per key: once an address
has failed ``auth_failures_per_minute`` times in a minute, a key that has not
worked from it within the hour gets 429 until the minute ends (see
:func:`check_key`), so guessing is really slowed while the address's known keys
keep working. A good key then counts against its client's ``requests_per_minute``
quota (:mod:`offpost.posts.quotas`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.api.limits import RateLimiter, retry_after_header
from offpost.api.problems import ProblemError, field_error
from offpost.graph.client import GraphClient
from offpost.models import Client, IdPrefix, hash_api_key, key_matches
from offpost.models.base import utcnow
from offpost.posts.rules import Cursor, CursorError, decode_cursor
from offpost.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_graph(request: Request) -> GraphClient:
    graph: GraphClient = request.app.state.graph
    return graph


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_now() -> datetime:
    return utcnow()


SessionDep = Annotated[Session, Depends(get_session)]
GraphDep = Annotated[GraphClient, Depends(get_graph)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NowDep = Annotated[datetime, Depends(get_now)]


def _bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _too_many_failures(wait_s: float) -> ProblemError:
    return ProblemError(
        "rate_limited",
        "too many failed authentications from this address; wait before trying again",
        headers=retry_after_header(wait_s),
    )


#: How long a key that worked from an address stays "proven" there (a clock hour).
PROVEN_WINDOW_S = 3600


def check_key(request: Request, session: Session, key: str | None) -> tuple[Client | None, float]:
    """The client behind ``key`` (not revoked), counting failures per address.

    Returns ``(client, 0)`` for a good key, ``(None, 0)`` for a bad one, and
    ``(None, wait_s)`` once the address is over its budget of failures. While it
    is, a key is judged only if it already worked from this address within the
    hour: no guess is ever confirmed (a new key waits for the window to end), yet
    the people who share the address with a guesser (an office, a proxy) keep
    working. The API and the dashboard's sign-in both ask here.
    """
    limiter: RateLimiter = request.app.state.limiter
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else "unknown"
    failures = f"authfail:{peer}"
    usable = key is not None and len(key) <= 200
    key_hash = hash_api_key(key) if key is not None and usable else ""
    proven = f"authok:{peer}:{key_hash[:32]}"
    wait_s = limiter.blocked(failures, settings.auth_failures_per_minute, 60)
    if wait_s is not None and (not usable or limiter.blocked(proven, 1, PROVEN_WINDOW_S) is None):
        return None, wait_s
    client = None
    if key is not None and usable:
        client = session.scalars(select(Client).where(Client.key_hash == key_hash)).one_or_none()
        if client is not None and (client.is_revoked or not key_matches(key, client.key_hash)):
            client = None
    if client is None:
        if wait_s is not None:  # proven once, revoked since
            return None, wait_s
        return None, limiter.hit(failures, settings.auth_failures_per_minute, 60) or 0.0
    if wait_s is None:
        limiter.hit(proven, 1, PROVEN_WINDOW_S)
    return client, 0.0


def authenticate(request: Request, session: SessionDep) -> Client:
    """The API client behind the request's bearer key, or 401 (429 after too many failures)."""
    limiter: RateLimiter = request.app.state.limiter
    settings: Settings = request.app.state.settings
    client, refused_s = check_key(request, session, _bearer_key(request))
    if refused_s:
        raise _too_many_failures(refused_s)
    if client is None:
        raise ProblemError(
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    per_minute = client.max_requests_per_minute or settings.rate_limit_per_minute
    wait_s = limiter.hit(f"client:{client.id}", per_minute, 60)
    if wait_s is not None:
        raise ProblemError(
            "rate_limited",
            f"too many requests for this API key: its requests_per_minute quota is {per_minute}",
            headers=retry_after_header(wait_s),
            quota={"name": "requests_per_minute", "limit": per_minute, "used": per_minute},
        )
    return client


def require_admin(client: Annotated[Client, Depends(authenticate)]) -> Client:
    """An admin client, or 403 for a client key."""
    if not client.is_admin:
        raise ProblemError("forbidden", "this route needs an admin API key")
    return client


ClientDep = Annotated[Client, Depends(authenticate)]
AdminDep = Annotated[Client, Depends(require_admin)]


def refuse_nul_characters(request: Request) -> None:
    """422 for a NUL character in a path or query parameter (every route has this check).

    No id, filter or cursor contains one, and PostgreSQL cannot compare text
    with it: the query would fail instead of finding nothing.
    """
    params = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in params:
        if isinstance(value, str) and "\x00" in value:
            raise field_error(name, "must not contain NUL characters")


def read_cursor(cursor: str | None, prefix: IdPrefix = IdPrefix.POST) -> Cursor | None:
    """The ``cursor`` query parameter of a newest-first list, or a 422 naming it."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor, prefix)
    except CursorError as exc:
        raise field_error("cursor", str(exc)) from exc

"""FastAPI dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

Authentication lives here: ``Authorization: Bearer <api key>``, looked up by the
key's SHA-256 hash and compared in constant time. Failed attempts are rate-limited
per peer address more strictly than successful calls are per key: once an address
has failed ``auth_failures_per_minute`` times in a minute, a key that has not
worked from it within the hour gets 429 until the minute ends (see
:func:`check_key`), so guessing is really slowed while the address's known keys
keep working. A good key then counts against its client's ``requests_per_minute``
quota (:mod:`offpost.posts.quotas`). The counts of one authentication are one
limiter call (:meth:`~offpost.api.limits.RateLimiter.check_key`).
:func:`authenticate_on_loop` does the same on the event loop, for the routes
that run there.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from offpost.api.fastdb import AsyncDatabase
from offpost.api.limits import KeyCheck, KeyVerdict, RateLimiter, retry_after_header
from offpost.api.problems import ProblemError, field_error
from offpost.graph.client import GraphClient
from offpost.models import Client, IdPrefix, hash_api_key
from offpost.models.base import utcnow
from offpost.posts import single
from offpost.posts.rules import Cursor, CursorError, decode_cursor
from offpost.settings import Settings

# The dependencies that do no I/O are ``async def``: FastAPI runs them on the event
# loop, where a plain ``def`` would cost a trip to the thread pool and back each.


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request, closed after it (in the thread pool if that sends a
    ROLLBACK; a committed session's close does no I/O)."""
    session: Session = request.app.state.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_graph(request: Request) -> GraphClient:
    graph: GraphClient = request.app.state.graph
    return graph


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_now() -> datetime:
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


#: Built once: a request only binds the hash.
_CLIENT_BY_KEY_HASH = select(Client).where(Client.key_hash == bindparam("key_hash"))


def _usable_hash(key: str | None) -> str | None:
    """The hash to look ``key`` up by, or ``None`` for no key or one too long to be one."""
    if key is None or len(key) > 200:
        return None
    return hash_api_key(key)


def _may_call(client: Client | None, key_hash: str) -> Client | None:
    """``client`` if it may call with the key hashed to ``key_hash`` (not revoked)."""
    if client is None or client.is_revoked or not hmac.compare_digest(key_hash, client.key_hash):
        return None
    return client


def _key_check(
    request: Request, key_hash: str | None, client: Client | None, *, count_client: bool
) -> KeyCheck:
    """What the limiter counts for this authentication (see :class:`KeyCheck`)."""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else "unknown"
    count = client is not None and count_client
    return KeyCheck(
        failures=f"authfail:{peer}",
        failure_limit=settings.auth_failures_per_minute,
        proven=f"authok:{peer}:{key_hash[:32]}" if key_hash is not None else None,
        good=client is not None,
        client=f"client:{client.id}" if client is not None and count else None,
        client_limit=_per_minute(request, client) if client is not None and count else 0,
    )


def _per_minute(request: Request, client: Client) -> int:
    settings: Settings = request.app.state.settings
    return client.max_requests_per_minute or settings.rate_limit_per_minute


def _judge(
    request: Request, session: Session, key: str | None, *, count_client: bool
) -> tuple[Client | None, KeyVerdict, float]:
    """Look ``key``'s client up, then count the authentication (one limiter call).

    The client comes from the database on every request (by the key's hash,
    through a unique index): a revoked or deleted key is refused from the next
    request on, whichever process serves it. The counts — the address's
    failures, the key proven from the address, the client's requests per
    minute when ``count_client`` — are judged together by
    :meth:`~offpost.api.limits.RateLimiter.check_key` (one Redis round trip).
    """
    limiter: RateLimiter = request.app.state.limiter
    key_hash = _usable_hash(key)
    client = None
    if key_hash is not None:
        found = session.scalars(_CLIENT_BY_KEY_HASH, {"key_hash": key_hash}).one_or_none()
        client = _may_call(found, key_hash)
    check = _key_check(request, key_hash, client, count_client=count_client)
    verdict, wait_s = limiter.check_key(check)
    return client, verdict, wait_s


def check_key(request: Request, session: Session, key: str | None) -> tuple[Client | None, float]:
    """The client behind ``key`` (not revoked), counting failures per address.

    Returns ``(client, 0)`` for a good key, ``(None, 0)`` for a bad one, and
    ``(None, wait_s)`` once the address is over its budget of failures. While it
    is, a key is judged only if it already worked from this address within the
    hour: no guess is ever confirmed (a new key waits for the window to end), yet
    the people who share the address with a guesser (an office, a proxy) keep
    working. The dashboard's sign-in asks here; the API asks :func:`authenticate`,
    which also counts the client's requests per minute.
    """
    client, verdict, wait_s = _judge(request, session, key, count_client=False)
    if verdict is KeyVerdict.ADDRESS_SLOWED:
        return None, wait_s
    return (client if verdict is KeyVerdict.ACCEPTED else None), 0.0


def authenticate(request: Request, session: SessionDep) -> Client:
    """The API client behind the request's bearer key, or 401 (429 after too many failures)."""
    client, verdict, wait_s = _judge(request, session, _bearer_key(request), count_client=True)
    return _verdict(request, client, verdict, wait_s)


def _verdict(request: Request, client: Client | None, verdict: KeyVerdict, wait_s: float) -> Client:
    """The client, or the problem the verdict answers."""
    if verdict is KeyVerdict.ADDRESS_SLOWED:
        raise _too_many_failures(wait_s)
    if client is None or verdict is KeyVerdict.BAD_KEY:
        raise ProblemError(
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if verdict is KeyVerdict.CLIENT_OVER_LIMIT:
        per_minute = _per_minute(request, client)
        raise ProblemError(
            "rate_limited",
            f"too many requests for this API key: its requests_per_minute quota is {per_minute}",
            headers=retry_after_header(wait_s),
            quota={"name": "requests_per_minute", "limit": per_minute, "used": per_minute},
        )
    return client


def loop_database(request: Request) -> AsyncDatabase | None:
    """The app's event-loop connections, if this request may use them (PostgreSQL, and
    the loop the app's lifespan runs on); ``None``: use a session in the thread pool."""
    database: AsyncDatabase | None = getattr(request.app.state, "loop_database", None)
    if database is None or not database.usable():
        return None
    return database


async def authenticate_on_loop(request: Request) -> Client:
    """:func:`authenticate` on the event loop: the same lookup, counts and answers.

    The client is read from the database on every request as there (one
    statement on :func:`loop_database`'s connections) and the counts are one
    Redis round trip from the loop; no thread is involved. Without those
    connections, :func:`authenticate` runs in the thread pool with a session
    of its own.
    """
    database = loop_database(request)
    if database is None:
        return await run_in_threadpool(_authenticate_in_a_session, request)
    limiter: RateLimiter = request.app.state.limiter
    key_hash = _usable_hash(_bearer_key(request))
    client = None
    if key_hash is not None:
        async with database.connection() as conn:
            found = await single.find_client(conn, database.dialect, key_hash)
        client = _may_call(found, key_hash)
    check = _key_check(request, key_hash, client, count_client=True)
    verdict, wait_s = await limiter.check_key_async(check)
    return _verdict(request, client, verdict, wait_s)


def _authenticate_in_a_session(request: Request) -> Client:
    with request.app.state.sessions() as session:
        return authenticate(request, session)


def require_admin(client: Annotated[Client, Depends(authenticate)]) -> Client:
    """An admin client, or 403 for a client key."""
    if not client.is_admin:
        raise ProblemError("forbidden", "this route needs an admin API key")
    return client


ClientDep = Annotated[Client, Depends(authenticate)]
#: The same client, authenticated on the event loop (the routes that run there).
LoopClientDep = Annotated[Client, Depends(authenticate_on_loop)]
AdminDep = Annotated[Client, Depends(require_admin)]


async def refuse_nul_characters(request: Request) -> None:
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

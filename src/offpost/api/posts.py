"""``/v1/posts``: one-off posts (the OpenAPI document).

Thin handlers: parse, call :mod:`offpost.posts.store` (rules and guarded
statements) and :mod:`offpost.posts.idempotency`, answer. A client sees only
its own posts; another client's id answers 404 (or, as a ``credential_id`` in a
new post, the same 422 as an id that does not exist).

The batch route is built for throughput: it validates in memory, loads the
credentials it needs with one query, inserts with one executemany statement and
renders the answer from the inserted values without reading them back.

The single route is built for request rate: on PostgreSQL it runs on the event
loop (no thread), reads the key's client, the post's credential and Page, and
writes the post, its quota check and its idempotency key in one round trip
(:mod:`offpost.posts.single`). A post whose checks need more (an inline
``access_token``, an upload, a Reel), SQLite, or a request on another event
loop than the app's goes through the same code as the batch route, in the
thread pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from offpost.api.credentials import intake_problem
from offpost.api.deps import (
    ClientDep,
    GraphDep,
    LoopClientDep,
    NowDep,
    SessionDep,
    SettingsDep,
    loop_database,
    read_cursor,
)
from offpost.api.fastdb import AsyncDatabase
from offpost.api.insights import latest_insight
from offpost.api.problems import ProblemError, field_error, outcome_unknown, quota_problem
from offpost.api.schemas import (
    AttemptList,
    AttemptOut,
    FollowupList,
    FollowupOut,
    PostBatchCreate,
    PostBatchOut,
    PostList,
    PostUpdate,
    StepList,
    StepOut,
)
from offpost.api.wake import DispatcherWake
from offpost.graph.client import GraphClient
from offpost.models import (
    Attempt,
    Client,
    Credential,
    Followup,
    IdPrefix,
    PostStatus,
    PostStep,
    is_id,
    request_hash,
)
from offpost.posts import followups, quotas, rules, single, store
from offpost.posts.idempotency import (
    IdempotencyConflictError,
    StoredAnswer,
    check_key,
    find_answer,
    run_once,
)
from offpost.posts.input import PostCreate
from offpost.posts.media import URL_VIDEO_TEXT, needs_text
from offpost.posts.quotas import QuotaDefaults
from offpost.settings import Settings
from offpost.tokens.intake import GraphUnavailableError, take_in_token
from offpost.views import PostOut

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/posts", tags=["posts"])

IDEMPOTENCY_HEADER = "Idempotency-Key"
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        description="Optional, at most 255 characters. The same key and body within 24 h "
        "answer the first answer again; the same key with another body answers 409.",
    ),
]

_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "no or bad API key"}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such post for this client"},
    **_AUTH,
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "the credential is deleted, the Idempotency-Key names another body, "
        "or quota_exceeded: the client's pending_posts quota is reached (`quota` names it)"
    },
    413: {"description": "payload_too_large"},
    422: {"description": "invalid_request (errors[].field names each bad field) or invalid_token"},
    429: {
        "description": "rate_limited: the client's requests_per_minute or posts_per_day "
        "quota is reached (`quota` names it); Retry-After says when there is room"
    },
    503: {"description": "graph_unavailable (an inline access_token could not be checked)"},
    **_AUTH,
}


@contextlib.contextmanager
def _answers() -> Iterator[None]:
    """Turn the post rules' errors into the API's problem documents."""
    try:
        yield
    except rules.PostInputError as exc:
        raise ProblemError(
            exc.code,
            str(exc),
            errors=[{"field": p.field, "message": p.message} for p in exc.problems],
        ) from exc
    except rules.PostNotFoundError as exc:
        raise ProblemError("not_found", str(exc)) from exc
    except rules.PostOutcomeUnknownError as exc:
        raise outcome_unknown(exc) from exc
    except (rules.PostStateError, IdempotencyConflictError) as exc:
        raise ProblemError("conflict", str(exc)) from exc
    except GraphUnavailableError as exc:
        raise intake_problem(exc) from exc
    except quotas.QuotaExceededError as exc:
        raise quota_problem(exc) from exc


def _json(answer: StoredAnswer, *, replayed: bool = False) -> Response:
    content = json.dumps(answer.body, ensure_ascii=False, separators=(",", ":"))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        content.encode("utf-8"),
        status_code=answer.status,
        media_type="application/json",
        headers=headers,
    )


def _post_answer(row: dict[str, Any]) -> StoredAnswer:
    return StoredAnswer(201, PostOut.of(row).model_dump(mode="json"))


def _wake(request: Request, due_at: datetime | None) -> None:
    """Tell an in-process dispatcher that something is due at ``due_at`` (if it listens)."""
    wake = getattr(request.app.state, "wake_dispatcher", None)
    if wake is None or due_at is None:
        return
    try:
        wake(due_at)
    except Exception:  # the post is committed; a failed nudge only delays it
        logger.warning("could not wake the dispatcher", exc_info=True, extra={"action": "wake"})


def _create(
    request: Request,
    session: Session,
    graph: GraphClient,
    app_id: str,
    client: Client,
    items: list[PostCreate],
    body: PostCreate | PostBatchCreate,
    key: str | None,
    now: datetime,
    *,
    batch: bool,
) -> Response:
    """Create ``items`` in one transaction, once per ``key``; the JSON answer."""
    client_id = client.id
    settings: Settings = request.app.state.settings
    digest = _digest(key, body, batch=batch)
    if key is not None:
        with _answers():
            stored = find_answer(session, client_id, key, digest, now)
        if stored is not None:
            return _json(stored, replayed=True)

    def intake(token: str) -> Credential:
        credential, _ = take_in_token(
            session,
            graph,
            app_id=app_id,
            client_id=client_id,
            short_token=token,
            now=now,
            warn_within=settings.warn_within(),
        )
        return credential

    due_at: datetime | None = None

    def work() -> StoredAnswer:
        nonlocal due_at
        limits = QuotaDefaults.of(settings).for_client(client)
        if batch:
            # Inserted in parallel with the client's other batches; counted under its lock.
            rows = store.insert_posts(session, client_id, new_posts, now)
            quotas.check_inserted_posts(session, client_id, limits, len(new_posts), now)
        else:
            # One row: lock, then one statement that counts and writes only if it fits.
            quotas.check_request_size(limits, 1)
            quotas.lock_client(session, client_id)
            room = quotas.room_for(client_id, limits, 1, now)
            rows = store.insert_posts(session, client_id, new_posts, now, only_if=room)
            if not rows:
                raise quotas.refusal(session, client_id, limits, 1, now)
        due_at = store.earliest_due(rows)
        out = [PostOut.of(row).model_dump(mode="json") for row in rows]
        return StoredAnswer(201, {"posts": out} if batch else out[0])

    with _answers():
        new_posts = store.prepare_posts(session, client_id, items, now, intake=intake, batch=batch)
        answer, replayed = run_once(
            session, client_id=client_id, key=key, request_hash=digest, now=now, work=work
        )
    if not replayed:
        _log_created(len(new_posts), client_id)
        _wake(request, due_at)
    return _json(answer, replayed=replayed)


def _digest(key: str | None, body: PostCreate | PostBatchCreate, *, batch: bool) -> str:
    """The request's hash for its ``Idempotency-Key`` (``""`` without one); 422 for a bad key."""
    if key is None:
        return ""
    if why := check_key(key):
        raise field_error(IDEMPOTENCY_HEADER, why)
    # The parsed body, not the raw bytes: key order, spacing and an explicit
    # null versus an omitted field do not make another request.
    path = "/v1/posts/batch" if batch else "/v1/posts"
    return request_hash("POST", path, body.model_dump(mode="json", exclude_none=True))


def _log_created(count: int, client_id: str) -> None:
    logger.info(
        "%d posts created", count, extra={"action": "posts_created", "client_id": client_id}
    )


async def _create_on_loop(
    database: AsyncDatabase,
    request: Request,
    client: Client,
    body: PostCreate,
    key: str | None,
    now: datetime,
) -> Response:
    """:func:`_create` for one post on the event loop (:mod:`offpost.posts.single`): the
    same checks and answers, with three reads and one round trip for the write."""
    settings: Settings = request.app.state.settings
    digest = _digest(key, body, batch=False)
    limits = QuotaDefaults.of(settings).for_client(client)
    dialect = database.dialect
    async with database.per_client.turn(client.id), database.connection() as conn:
        with _answers():
            if key is not None:
                stored = await single.find_answer(conn, dialect, client.id, key, digest, now)
                if stored is not None:
                    return _json(stored, replayed=True)
            credentials = {}
            if body.credential_id is not None and is_id(body.credential_id, IdPrefix.CREDENTIAL):
                credentials = await single.load_credential_facts(
                    conn, dialect, client.id, body.credential_id, body.target
                )
            new_posts = store.prepare_posts(None, client.id, [body], now, credentials=credentials)
            answer, row = await single.create_post(
                conn,
                dialect,
                client.id,
                new_posts[0],
                limits,
                now,
                answer_of=_post_answer,
                key=key,
                request_hash=digest,
            )
    if row is None:
        return _json(answer, replayed=True)
    _log_created(1, client.id)
    due_at = store.earliest_due([row])
    if due_at is not None and _wake_does_something(request, due_at):
        # The nudge may publish to Redis: not on the event loop.
        await run_in_threadpool(_wake, request, due_at)
    return _json(answer)


def _wake_does_something(request: Request, due_at: datetime) -> bool:
    """False when the app's own wake-up would do nothing for ``due_at`` (the dispatchers
    look before then anyway); any other wake-up is always called."""
    wake = getattr(request.app.state, "wake_dispatcher", None)
    if wake is None:
        return False
    return not isinstance(wake, DispatcherWake) or wake.soon(due_at)


def _create_one_in_a_session(
    request: Request, client: Client, body: PostCreate, key: str | None, now: datetime
) -> Response:
    state = request.app.state
    with state.sessions() as session:
        app_id = state.settings.app_id or ""
        return _create(
            request, session, state.graph, app_id, client, [body], body, key, now, batch=False
        )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PostOut,
    summary="Schedule a post",
    responses=_CREATE_ERRORS,
)
async def create_post(
    body: PostCreate,
    request: Request,
    client: LoopClientDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    # On the event loop when it can (PostgreSQL, a post whose checks read only its
    # credential); otherwise in the thread pool with a session, as every other route.
    database = loop_database(request)
    if database is not None and single.eligible(body):
        return await _create_on_loop(database, request, client, body, idempotency_key, now)
    return await run_in_threadpool(
        _create_one_in_a_session, request, client, body, idempotency_key, now
    )


@router.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=PostBatchOut,
    summary="Schedule up to 1000 posts, all or nothing",
    description="One bad item refuses the whole batch with 422; `errors[].field` names each "
    "bad field as `posts[17].publish_at`. The answer lists the posts in input order.",
    responses=_CREATE_ERRORS,
)
def create_posts(
    body: PostBatchCreate,
    request: Request,
    client: ClientDep,
    session: SessionDep,
    graph: GraphDep,
    settings: SettingsDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    app_id = settings.app_id or ""
    key = idempotency_key
    return _create(request, session, graph, app_id, client, body.posts, body, key, now, batch=True)


@router.get(
    "",
    response_model=PostList,
    summary="This client's posts, newest first",
    responses={422: {"description": "a bad filter, limit or cursor"}, **_AUTH},
)
def list_posts(
    client: ClientDep,
    session: SessionDep,
    status: Annotated[PostStatus | None, Query()] = None,
    target: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    schedule_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> PostList:
    after = read_cursor(cursor)
    posts, next_page = store.list_posts(
        session,
        client.id,
        limit=limit,
        status=status,
        target=target,
        schedule_id=schedule_id,
        after=after,
    )
    return PostList(
        posts=[PostOut.of(p) for p in posts],
        next_cursor=rules.encode_cursor(next_page) if next_page else None,
    )


@router.get("/{post_id}", response_model=PostOut, summary="One post", responses=_NOT_FOUND)
def get_post(post_id: str, client: ClientDep, session: SessionDep) -> PostOut:
    with _answers():
        post = store.load_post(session, client.id, post_id)
    return PostOut.of(post).model_copy(update={"insights": latest_insight(session, post.id)})


@router.get(
    "/{post_id}/attempts",
    response_model=AttemptList,
    summary="The post's publishing attempts, in order",
    responses=_NOT_FOUND,
)
def list_attempts(post_id: str, client: ClientDep, session: SessionDep) -> AttemptList:
    with _answers():
        post = store.load_post(session, client.id, post_id)
    attempts = session.scalars(
        select(Attempt).where(Attempt.post_id == post.id).order_by(Attempt.number)
    )
    return AttemptList(attempts=[AttemptOut.of(a) for a in attempts])


@router.get(
    "/{post_id}/steps",
    response_model=StepList,
    summary="The Graph calls of a media post before its own, in order (its progress)",
    responses=_NOT_FOUND,
)
def list_steps(post_id: str, client: ClientDep, session: SessionDep) -> StepList:
    with _answers():
        post = store.load_post(session, client.id, post_id)
    steps = session.scalars(
        select(PostStep)
        .where(PostStep.post_id == post.id)
        .order_by(PostStep.started_at, PostStep.id)
    )
    return StepList(steps=[StepOut.of(s) for s in steps])


@router.patch(
    "/{post_id}",
    response_model=PostOut,
    summary="Change a post not yet queued, or the text of a published post on Facebook",
    responses={
        202: {
            "model": FollowupOut,
            "description": "the post is published: its new message goes to Facebook as an "
            "edit follow-up (post.edited when done; the post's message changes then)",
        },
        409: {
            "description": "conflict: the post is queued, publishing, canceled or deleted, "
            "or published and more than its message was sent; outcome_unknown: its last "
            "attempt may have published it (Graph's answer was lost) and offpost has not "
            "read the Page yet; Retry-After says when to ask again",
        },
        422: {"description": "invalid_request; errors[].field names each bad field"},
        **_NOT_FOUND,
    },
)
def update_post(
    post_id: str,
    body: PostUpdate,
    request: Request,
    client: ClientDep,
    session: SessionDep,
    now: NowDep,
) -> PostOut | Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise field_error("body", "give at least one of message, link, photo_url, publish_at")
    for name in ("photos", "video", "reel"):
        if name in changes:
            # Its media may be on Graph already (uploaded, not yet attached).
            raise field_error(
                name, "a post's media cannot be changed: cancel the post and create another"
            )
    with _answers():
        current = store.load_post(session, client.id, post_id)
    if current.status is PostStatus.PUBLISHED:
        # On Facebook now: only its text can change there, by a follow-up.
        others = sorted(set(changes) - {"message"})
        if others:
            raise ProblemError(
                "conflict",
                f"post {post_id} is published: only its message can change on Facebook, "
                f"not {', '.join(others)}",
            )
        with _answers():
            followup = followups.request_edit(session, client.id, post_id, changes["message"], now)
        return _followup_answer(followup)
    if "message" in changes and changes["message"] is None and needs_text(current.media):
        raise field_error("message", URL_VIDEO_TEXT)
    with _answers():
        post = store.update_post(session, client.id, post_id, changes, now)
    if "publish_at" in changes:
        _wake(request, store.earliest_due([post]))
    return PostOut.of(post)


@router.delete(
    "/{post_id}",
    response_model=PostOut,
    summary="Cancel a post not yet publishing, or delete a published one from Facebook",
    responses={
        202: {
            "model": FollowupOut,
            "description": "on_facebook: the delete follow-up (the post becomes deleted, and "
            "post.deleted is sent, when it is done; asked again, the same follow-up)",
        },
        409: {
            "description": "conflict: the post is publishing or published; outcome_unknown: "
            "its last attempt may have published it (Graph's answer was lost) and offpost has "
            "not read the Page yet, so it cannot say it is canceled; Retry-After says when "
            "to ask again",
        },
        **_NOT_FOUND,
    },
)
def cancel_post(
    post_id: str,
    client: ClientDep,
    session: SessionDep,
    now: NowDep,
    on_facebook: Annotated[
        bool,
        Query(
            description="Delete the published post from Facebook (202 with the follow-up); "
            "without it, DELETE cancels a post not yet publishing."
        ),
    ] = False,
) -> Response:
    with _answers():
        if on_facebook:
            followup = followups.request_delete(session, client.id, post_id, now)
            return _followup_answer(followup)
        return _model(PostOut.of(store.cancel_post(session, client.id, post_id, now)))


@router.get(
    "/{post_id}/followups",
    response_model=FollowupList,
    summary="What offpost does with the published post on Facebook: first comment, edits, delete",
    responses=_NOT_FOUND,
)
def list_post_followups(post_id: str, client: ClientDep, session: SessionDep) -> FollowupList:
    with _answers():
        rows = followups.list_followups(session, client.id, post_id)
    return FollowupList(followups=[FollowupOut.of(f) for f in rows])


def _followup_answer(followup: Followup) -> Response:
    """202: Facebook is changed by a worker; the follow-up says how it goes (``done``
    when asked again after it was)."""
    return _model(FollowupOut.of(followup), 202)


def _model(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


@router.post(
    "/{post_id}/retry",
    response_model=PostOut,
    summary="Put a failed post back to scheduled, due now",
    responses={
        409: {
            "description": "conflict: the post is not failed; quota_exceeded: the client's "
            "pending_posts quota is reached"
        },
        **_NOT_FOUND,
    },
)
def retry_post(
    post_id: str,
    request: Request,
    client: ClientDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> PostOut:
    with _answers():
        # A retried post waits to be published again: it counts against pending_posts.
        quotas.lock_client(session, client.id)
        if store.load_post(session, client.id, post_id).status == PostStatus.FAILED:
            limits = QuotaDefaults.of(settings).for_client(client)
            quotas.check_pending(session, client.id, limits, 1)
        post = store.retry_post(session, client.id, post_id, now)
    _wake(request, post.due_at)
    return PostOut.of(post)

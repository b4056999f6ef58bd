"""``/v1/admin/*``: operators' view across every client (admin keys only; 403 otherwise).

Thin handlers over the same functions the client routes use — with
``client_id=None``, which means "any client" — and over
:func:`offpost.posts.stats.collect_stats`, which ``offpost status`` shows too.
Every change an admin makes is logged with the admin client's id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.api.deps import AdminDep, NowDep, SessionDep, SettingsDep, read_cursor
from offpost.api.exporter import QueueProbe
from offpost.api.problems import ProblemError, field_error, outcome_unknown
from offpost.api.schemas import AdminClientList, AdminClientOut, CredentialList, QuotaOverrides
from offpost.models import Client, Credential, CredentialStatus, IdPrefix, PostStatus, is_id
from offpost.posts import quotas, rules, store
from offpost.posts.quotas import QuotaDefaults
from offpost.posts.stats import Stats, collect_stats
from offpost.views import CredentialOut, PostOut

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/admin", tags=["admin"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or bad API key"},
    403: {"description": "not an admin key"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such post"}, **_AUTH}


class AdminPostOut(PostOut):
    """A post as an operator sees it: the client's view plus whose post it is."""

    client_id: str

    @classmethod
    def of(cls, post: Any) -> AdminPostOut:
        return cls(**dict(PostOut.of(post)), client_id=post.client_id)


class AdminPostList(BaseModel):
    posts: list[AdminPostOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


@contextlib.contextmanager
def _answers() -> Iterator[None]:
    """The post store's errors as problem documents (as on the client routes)."""
    try:
        yield
    except rules.PostNotFoundError as exc:
        raise ProblemError("not_found", str(exc)) from exc
    except rules.PostOutcomeUnknownError as exc:
        raise outcome_unknown(exc) from exc
    except rules.PostStateError as exc:
        raise ProblemError("conflict", str(exc)) from exc


def resolve_client_id(session: Session, client: str) -> str:
    """The id of the client named (or with the id) ``client``; 422 when there is none."""
    query = select(Client.id).where(Client.name == client)
    if is_id(client, IdPrefix.CLIENT):
        query = select(Client.id).where(Client.id == client)
    found = session.scalar(query)
    if found is None:
        raise field_error("client", f"no client named {client!r} or with that id")
    return found


@router.get(
    "/posts",
    response_model=AdminPostList,
    summary="Posts of every client, newest first",
    description="Filters combine. `client` is a client's name or id (`cli_…`); `since` keeps "
    "the posts created at or after that RFC 3339 time. Each post names its `client_id`.",
    responses={422: {"description": "a bad filter, limit or cursor; an unknown client"}, **_AUTH},
)
def admin_posts(
    _: AdminDep,
    session: SessionDep,
    status: Annotated[PostStatus | None, Query()] = None,
    client: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    target: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=64, examples=["2026-12-01T00:00:00Z"])] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> AdminPostList:
    after = read_cursor(cursor)
    created_since = None
    if since is not None:
        try:
            created_since = rules.parse_rfc3339(since)
        except ValueError as exc:
            raise field_error("since", str(exc)) from exc
    client_id = resolve_client_id(session, client) if client is not None else None
    posts, next_page = store.list_posts(
        session,
        client_id,
        limit=limit,
        status=status,
        target=target,
        since=created_since,
        after=after,
    )
    return AdminPostList(
        posts=[AdminPostOut.of(p) for p in posts],
        next_cursor=rules.encode_cursor(next_page) if next_page else None,
    )


@router.get(
    "/stats",
    response_model=Stats,
    summary="Counts by status, the last hour, top errors, credentials, queue depth",
    description="`last_hour.lateness_seconds` are percentiles of `published_at - publish_at` "
    "over the posts published in the last hour (null without any). `top_errors` counts the "
    "attempts that ended with an error in the last 24 hours, by Graph code (or offpost's, "
    "such as `timeout`). `queue_depth` counts broker messages (each a batch of posts); null "
    "when the broker is neither Redis nor the in-process one of `offpost up`, or did not "
    "answer. `due_not_dispatched` counts scheduled posts already due that no dispatcher "
    "has queued yet.",
    responses=_AUTH,
)
def admin_stats(_: AdminDep, request: Request, session: SessionDep, now: NowDep) -> Stats:
    queue: QueueProbe = request.app.state.queue
    return collect_stats(session, now, queue_depth=queue.depth())


@router.post(
    "/posts/{post_id}/retry",
    response_model=AdminPostOut,
    summary="Put any client's failed post back to scheduled, due now",
    responses={409: {"description": "the post is not failed"}, **_NOT_FOUND},
)
def admin_retry_post(
    post_id: str, admin: AdminDep, request: Request, session: SessionDep, now: NowDep
) -> AdminPostOut:
    with _answers():
        post = store.retry_post(session, None, post_id, now)
    logger.info(
        "admin %s retried %s",
        admin.id,
        post.id,
        extra={"action": "admin_post_retried", "post_id": post.id, "admin_id": admin.id},
    )
    wake = getattr(request.app.state, "wake_dispatcher", None)
    if wake is not None:
        try:
            wake(post.due_at)
        except Exception:  # committed; a failed nudge only delays it
            logger.warning("could not wake the dispatcher", exc_info=True, extra={"action": "wake"})
    return AdminPostOut.of(post)


@router.post(
    "/posts/{post_id}/cancel",
    response_model=AdminPostOut,
    summary="Cancel any client's post not yet publishing",
    responses={
        409: {
            "description": "conflict: the post is publishing or published; outcome_unknown: "
            "its last attempt may have published it and offpost has not read the Page yet",
        },
        **_NOT_FOUND,
    },
)
def admin_cancel_post(
    post_id: str, admin: AdminDep, session: SessionDep, now: NowDep
) -> AdminPostOut:
    with _answers():
        post = store.cancel_post(session, None, post_id, now)
    logger.info(
        "admin %s canceled %s",
        admin.id,
        post.id,
        extra={"action": "admin_post_canceled", "post_id": post.id, "admin_id": admin.id},
    )
    return AdminPostOut.of(post)


@router.get(
    "/credentials",
    response_model=CredentialList,
    summary="Credentials of every client, by status or nearing expiry",
    responses=_AUTH,
)
def admin_credentials(
    _: AdminDep,
    session: SessionDep,
    now: NowDep,
    status: Annotated[CredentialStatus | None, Query()] = None,
    expiring_within_hours: Annotated[int | None, Query(ge=0, le=24 * 366)] = None,
) -> CredentialList:
    query = select(Credential).order_by(Credential.expires_at, Credential.id)
    if status is not None:
        query = query.where(Credential.status == status)
    if expiring_within_hours is not None:
        query = query.where(
            Credential.expires_at.is_not(None),
            Credential.expires_at <= now + timedelta(hours=expiring_within_hours),
        )
    return CredentialList(credentials=[CredentialOut.of(c) for c in session.scalars(query)])


@router.get(
    "/clients",
    response_model=AdminClientList,
    summary="Every client with its quotas and its use of them",
    description="`own` names the quotas set for the client; the others are the deployment's "
    "defaults (`OFFPOST_RATE_LIMIT_PER_MINUTE`, `OFFPOST_QUOTA_*`). Never a key.",
    responses=_AUTH,
)
def admin_clients(
    _: AdminDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> AdminClientList:
    rows = quotas.client_quotas(session, now, QuotaDefaults.of(settings))
    return AdminClientList(clients=[AdminClientOut.of(row) for row in rows])


@router.patch(
    "/clients/{client}",
    response_model=AdminClientOut,
    summary="Set or reset a client's own quotas",
    description="`client` is a name or an id (`cli_…`). Each quota given is set for this "
    "client only; `null` returns it to the deployment's default; quotas not given keep "
    "their value. A lower quota refuses new work from then on and never touches what "
    "the client already has.",
    responses={
        404: {"description": "no such client"},
        422: {"description": "a quota below 1 or above its maximum; an unknown field"},
        **_AUTH,
    },
)
def admin_update_client(
    client: str,
    body: QuotaOverrides,
    admin: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
) -> AdminClientOut:
    query = select(Client).where(
        Client.id == client if is_id(client, IdPrefix.CLIENT) else Client.name == client
    )
    found = session.scalars(query.with_for_update()).one_or_none()
    if found is None:
        raise ProblemError("not_found", f"no client named {client!r} or with that id")
    changes = body.model_dump(exclude_unset=True)
    for name, value in changes.items():
        setattr(found, quotas.Quota(name).column, value)
    session.commit()
    logger.info(
        "admin %s set quotas of client %s: %s",
        admin.id,
        found.id,
        ", ".join(f"{k}={v}" for k, v in sorted(changes.items())) or "nothing",
        extra={"action": "admin_client_quotas", "client_id": found.id, "admin_id": admin.id},
    )
    use = quotas.usage(session, found.id, now)
    return AdminClientOut.of(quotas.ClientQuotas.of(found, QuotaDefaults.of(settings), use))

"""The ``/_sandbox/`` control routes (docs/sandbox.md): not Graph, but how tests steer the sandbox.

From docs/sandbox.md: ``POST /apps``, ``POST /users``, ``POST /clock``,
``POST /users/{id}/invalidate``, ``POST|DELETE /faults``,
``GET /pages/{id}/posts``, ``GET /calls``. Added here: ``GET /clock``,
``GET /pages/{id}/photos`` and ``GET /pages/{id}/videos`` (media as uploaded),
``GET /faults``, ``DELETE /calls``, ``GET|POST /settings``, ``POST /reset``,
``GET|DELETE /usage`` (the rate-limit meter, per app and per Page),
``POST /users/{id}/tokens`` (a fresh short-lived token, as if the user
logged in again) and the Page roles: ``PUT|DELETE /users/{id}/pages/{page_id}``
(give or take away the user's role on a Page) and
``PUT /users/{id}/pages/{page_id}/tasks`` (change the user's tasks there);
after publishing: ``GET|POST /posts/{id}/comments`` (a person's comment) and
``GET|PUT /pages/{id}/insights`` (insights availability, deprecated metrics).
Errors of these routes are FastAPI's ``{"detail": …}``, not Graph envelopes.
Nothing here ever returns an app secret.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from offpost.graph.sandbox.engagement import (
    KNOWN_POST_METRICS,
    add_comment,
    comment_target,
    comment_view,
    insights_state,
)
from offpost.graph.sandbox.media import video_status
from offpost.graph.sandbox.pages import graph_time, post_view
from offpost.graph.sandbox.settings import SandboxSettings
from offpost.graph.sandbox.state import (
    DEFAULT_PAGE_TASKS,
    DEFAULT_SCOPES,
    INVALIDATION_SUBCODES,
    PAGE_TASK_NAMES,
    ROLE_LOST_SUBCODE,
    SHORT_LIVED_S,
    MediaBytes,
    Page,
    Photo,
    Post,
    Video,
    World,
)
from offpost.graph.sandbox.usage import UsageMeter

CONTROL_PREFIX = "/_sandbox"
#: A fault's ``body`` (a proxy's error page, say) stays well below a megabyte.
MAX_FAULT_BODY_CHARS = 1_000_000
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

router = APIRouter(prefix=CONTROL_PREFIX)


def _world(request: Request) -> World:
    world: World = request.app.state.world
    return world


WorldDep = Annotated[World, Depends(_world)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppIn(_Body):
    app_id: str = Field(pattern=r"^\d{1,20}$")
    app_secret: str = Field(min_length=1)
    name: str | None = None
    redirect_uris: list[str] | None = None


def _known_tasks(tasks: list[str]) -> list[str]:
    unknown = sorted(set(tasks) - set(PAGE_TASK_NAMES))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; known: {', '.join(PAGE_TASK_NAMES)}")
    return tasks


#: A role has at least one task: a person with none has no role (``DELETE`` it instead).
TaskList = Annotated[list[str], Field(min_length=1), AfterValidator(_known_tasks)]


def _tasks(tasks: list[str] | None) -> tuple[str, ...]:
    """The tasks in Graph's order, once each; the default (full control) for ``None``."""
    if tasks is None:
        return DEFAULT_PAGE_TASKS
    return tuple(name for name in PAGE_TASK_NAMES if name in tasks)


class UserIn(_Body):
    name: str | None = None
    pages: int = Field(default=1, ge=0, le=1000)
    scopes: list[str] | None = None
    app_id: str | None = None
    page_tasks: TaskList | None = None


class TasksIn(_Body):
    tasks: TaskList


class RoleIn(_Body):
    tasks: TaskList | None = None


class InvalidateIn(_Body):
    reason: Literal["password_changed", "deauthorized", "logged_out"]


class ClockIn(_Body):
    advance_seconds: float = Field(ge=0)


class PersonPostIn(_Body):
    message: str | None = Field(default=None, max_length=63_206)
    link: str | None = None


class PersonCommentIn(_Body):
    message: str = Field(min_length=1, max_length=63_206)
    name: str = Field(default="Sandbox Person", min_length=1, max_length=200)
    #: The person's (app-scoped) id; a fresh one when absent.
    person_id: str | None = Field(default=None, pattern=r"^\d{1,20}$")


class InsightsIn(_Body):
    #: ``false`` plays a Page under 100 likes: ``/insights`` answers ``{"data": []}``.
    available: bool | None = None
    #: The post metrics Graph refuses for this Page (replaces the list; ``[]`` for none).
    deprecated_metrics: list[str] | None = None


class FaultIn(_Body):
    path: str
    method: str | None = None
    times: int = Field(default=1, ge=1)
    status: int | None = Field(default=None, ge=100, le=599)
    error: dict[str, Any] | None = None
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    drop_response: bool = False
    after_effect: bool = False
    headers: dict[str, str] | None = None
    probability: float = Field(default=1.0, gt=0.0, le=1.0)
    body: str | None = Field(default=None, max_length=MAX_FAULT_BODY_CHARS)
    content_type: str | None = Field(default=None, pattern=r"^[!-~][ -~]*$", max_length=200)
    reset_connection: bool = False
    truncate_bytes: int | None = Field(default=None, ge=0)
    drip_bytes: int = Field(default=1, ge=1)
    drip_ms: int = Field(default=0, ge=0, le=60_000)
    params: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _sendable(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # What HTTP/1.1 can carry: a token for a name, latin-1 text without CR/LF for a value.
        for name, text in (value or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"not a header name: {name[:40]!r}")
            if "\r" in text or "\n" in text or not _latin1(text):
                raise ValueError(f"header {name} has a value HTTP cannot carry")
        return value

    @field_validator("path")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@router.post("/apps", status_code=201)
def register_app(body: AppIn, world: WorldDep) -> dict[str, Any]:
    """Register (or re-register, e.g. after a secret reset) an app."""
    uris = frozenset(body.redirect_uris) if body.redirect_uris is not None else None
    app = world.register_app(body.app_id, body.app_secret, name=body.name, redirect_uris=uris)
    return {"app_id": app.app_id, "name": app.name}


@router.post("/users", status_code=201)
def create_user(body: UserIn, world: WorldDep) -> dict[str, Any]:
    """A user with Pages and a short-lived user token.

    Body (all optional): ``name``; ``pages``, how many new Pages the user gets a
    role on (default 1); ``scopes`` the user granted the app (default
    :data:`~.state.DEFAULT_SCOPES`); ``app_id`` (default the sandbox's own app);
    ``page_tasks``, the user's tasks on **every** one of those Pages, e.g.
    ``["ANALYZE", "MODERATE"]`` for someone who may not post (default full
    control: ``ANALYZE, ADVERTISE, MODERATE, CREATE_CONTENT, MANAGE``). Give one
    Page other tasks afterwards with ``PUT /users/{id}/pages/{page_id}/tasks``.
    """
    app_id = body.app_id or world.default_app_id
    if app_id not in world.apps:
        raise HTTPException(404, f"no app {app_id} is registered")
    scopes = tuple(body.scopes) if body.scopes is not None else DEFAULT_SCOPES
    with world.lock:
        user, token = world.create_user(
            name=body.name,
            pages=body.pages,
            scopes=scopes,
            app_id=app_id,
            page_tasks=_tasks(body.page_tasks),
        )
        pages = [
            {"id": pid, "name": world.pages[pid].name, "tasks": list(user.tasks_on(pid))}
            for pid in user.page_ids
        ]
    return {
        "user_id": user.user_id,
        "name": user.name,
        "app_id": app_id,
        "access_token": token.value,
        "expires_in": SHORT_LIVED_S,
        "pages": pages,
    }


def _known_user(world: World, user_id: str) -> None:
    if user_id not in world.users:
        raise HTTPException(404, f"no user {user_id}")


@router.post("/users/{user_id}/tokens", status_code=201)
def login_again(user_id: str, world: WorldDep) -> dict[str, Any]:
    """A new short-lived user token for an existing user (a fresh Facebook Login)."""
    _known_user(world, user_id)
    token = world.login(user_id)
    return {"access_token": token.value, "expires_in": SHORT_LIVED_S}


@router.post("/users/{user_id}/invalidate")
def invalidate_user(user_id: str, body: InvalidateIn, world: WorldDep) -> dict[str, Any]:
    """Every token of the user, and every Page token derived from them, starts failing with 190."""
    _known_user(world, user_id)
    subcode = INVALIDATION_SUBCODES[body.reason]
    count = world.invalidate_user(user_id, subcode)
    return {
        "user_id": user_id,
        "reason": body.reason,
        "subcode": subcode,
        "invalidated_tokens": count,
    }


def _known_page(world: World, page_id: str) -> None:
    if page_id not in world.pages:
        raise HTTPException(404, f"no page {page_id}")


@router.put("/users/{user_id}/pages/{page_id}")
def grant_role(
    user_id: str, page_id: str, world: WorldDep, body: RoleIn | None = None
) -> dict[str, Any]:
    """Give the user a role on an existing Page, back after a ``DELETE`` or for the first time.

    Body (optional): ``{"tasks": [...]}``, default full control. The Page joins the
    end of the user's ``/me/accounts``; the next ``/me/accounts`` (or
    ``/{page}?fields=access_token``) derives a **new** Page token, which works. The
    tokens the removal killed stay dead, as after a real re-login. On a Page the
    user already has a role on, it only replaces the tasks (with the default when
    none are given).
    """
    tasks = _tasks(body.tasks if body is not None else None)
    with world.lock:
        _known_user(world, user_id)
        _known_page(world, page_id)
        world.grant_role(user_id, page_id, tasks)
    return {"user_id": user_id, "page_id": page_id, "tasks": list(tasks)}


@router.delete("/users/{user_id}/pages/{page_id}")
def remove_role(user_id: str, page_id: str, world: WorldDep) -> dict[str, Any]:
    """Take the user's role on the Page away (someone removed them from the Page).

    The Page leaves the user's ``/me/accounts`` and their user token can no longer
    derive its token. Every Page token of that Page derived from the user's
    tokens fails from now on with 190/492 and the message Graph sends for a
    token impersonating a Page its person cannot manage ("The user must be an
    administrator, editor, or moderator of the page…"); ``debug_token`` reports it
    ``is_valid: false`` with that error. 492 rather than 460/458/467: the user's
    session is intact (their user token and other Pages keep working), only this
    Page is lost, and docs/graph.md lists 492 as "the user no longer has a role on
    the Page". 409 when the user has no role on the Page.
    """
    with world.lock:
        _known_user(world, user_id)
        _known_page(world, page_id)
        if page_id not in world.users[user_id].page_ids:
            raise HTTPException(409, f"user {user_id} has no role on page {page_id}")
        count = world.remove_role(user_id, page_id)
    return {
        "user_id": user_id,
        "page_id": page_id,
        "subcode": ROLE_LOST_SUBCODE,
        "invalidated_tokens": count,
    }


@router.put("/users/{user_id}/pages/{page_id}/tasks")
def set_tasks(user_id: str, page_id: str, body: TasksIn, world: WorldDep) -> dict[str, Any]:
    """Change the user's tasks on a Page they have a role on: ``{"tasks": [...]}``.

    ``/me/accounts`` lists the new tasks at once, and the user's Page tokens for
    the Page keep working, but publishing with them needs ``CREATE_CONTENT``. At
    least one task (remove the role with ``DELETE /users/{id}/pages/{page_id}``);
    409 when the user has no role on the Page (give one with ``PUT`` on that path).
    """
    tasks = _tasks(body.tasks)
    with world.lock:
        _known_user(world, user_id)
        _known_page(world, page_id)
        if page_id not in world.users[user_id].page_ids:
            raise HTTPException(409, f"user {user_id} has no role on page {page_id}")
        world.grant_role(user_id, page_id, tasks)
    return {"user_id": user_id, "page_id": page_id, "tasks": list(tasks)}


@router.get("/clock")
def read_clock(world: WorldDep) -> dict[str, Any]:
    return {"now": int(world.now())}


@router.post("/clock")
def advance_clock(body: ClockIn, world: WorldDep) -> dict[str, Any]:
    return {"now": int(world.advance_clock(body.advance_seconds))}


@router.post("/faults", status_code=201)
def add_fault(body: FaultIn, world: WorldDep) -> dict[str, Any]:
    with world.lock:
        fault = world.faults.add(**body.model_dump())
        return fault.describe()


@router.get("/faults")
def list_faults(world: WorldDep) -> dict[str, Any]:
    with world.lock:
        return {"data": world.faults.describe()}


@router.delete("/faults")
def clear_faults(world: WorldDep) -> dict[str, Any]:
    with world.lock:
        return {"cleared": world.faults.clear()}


@router.get("/pages/{page_id}/posts")
def page_posts(page_id: str, world: WorldDep) -> dict[str, Any]:
    """Every post created on the Page, oldest first, published or not."""
    with world.lock:
        page = world.pages.get(page_id)
        if page is None:
            raise HTTPException(404, f"no page {page_id}")
        return {
            "data": [
                {**post_view(post), "page_id": page_id, "deleted": post.deleted}
                for post in page.posts
            ]
        }


@router.post("/pages/{page_id}/posts", status_code=201)
def person_posts(page_id: str, body: PersonPostIn, world: WorldDep) -> dict[str, Any]:
    """A post a person made on the Page in Facebook's own interface: no app made it.

    It appears in the Page's ``/feed`` like any other, without ``application``.
    """
    if body.message is None and body.link is None:
        raise HTTPException(422, "give a message or a link")
    with world.lock:
        page = world.pages.get(page_id)
        if page is None:
            raise HTTPException(404, f"no page {page_id}")
        post = world.add_post(
            page,
            Post(
                post_id=f"{page_id}_{world.new_id(16)}",
                page_id=page_id,
                created_time=world.now(),
                message=body.message,
                link=body.link,
            ),
        )
        return {**post_view(post), "page_id": page_id}


def _post_or_reel(world: World, object_id: str) -> Post | Video:
    owner = world.posts.get(object_id) or world.videos.get(object_id)
    if owner is None:
        raise HTTPException(404, f"no post or video {object_id}")
    return owner


@router.post("/posts/{object_id}/comments", status_code=201)
def person_comments(object_id: str, body: PersonCommentIn, world: WorldDep) -> dict[str, Any]:
    """A comment a person wrote on a post (or a reel) in Facebook's own interface.

    ``/{post-id}/comments`` lists it beside the Page's own, ``from`` naming the
    person; the same text as the Page's comment is allowed (people repeat things).
    A deleted post takes no comments (409).
    """
    with world.lock:
        owner = _post_or_reel(world, object_id)
        if owner.deleted:
            raise HTTPException(409, f"{object_id} is deleted")
        comment = add_comment(
            world,
            comment_target(owner, world),
            message=body.message,
            from_id=body.person_id or world.new_id(),
            from_name=body.name,
            token=None,
        )
        return {**comment_view(comment), "target_id": comment.target_id}


@router.get("/posts/{object_id}/comments")
def object_comments(object_id: str, world: WorldDep) -> dict[str, Any]:
    """Every comment on a post (or reel), oldest first, deleted posts included, with
    the app that made each (``null`` for a person's)."""
    with world.lock:
        owner = _post_or_reel(world, object_id)
        comments = world.comments.get(comment_target(owner, world), [])
        return {
            "data": [
                {**comment_view(c), "app_id": c.app.app_id if c.app is not None else None}
                for c in comments
            ]
        }


@router.get("/pages/{page_id}/insights")
def page_insights(page_id: str, world: WorldDep) -> dict[str, Any]:
    """Whether the Page has insights, and which post metrics Graph refuses for it."""
    with world.lock:
        return insights_state(_page_of(world, page_id))


@router.put("/pages/{page_id}/insights")
def set_page_insights(page_id: str, body: InsightsIn, world: WorldDep) -> dict[str, Any]:
    """``{"available": false}`` plays a Page under 100 likes (Graph's insights limit);
    ``{"deprecated_metrics": [...]}`` sets the post metrics refused with ``(#100) The
    value must be a valid insights metric`` (default: those Meta deprecated). Names
    the sandbox does not know are refused (422): they are refused by Graph anyway."""
    with world.lock:
        page = _page_of(world, page_id)
        if body.available is not None:
            page.insights_available = body.available
        if body.deprecated_metrics is not None:
            unknown = sorted(set(body.deprecated_metrics) - KNOWN_POST_METRICS)
            if unknown:
                raise HTTPException(422, f"unknown metrics {unknown}")
            page.deprecated_metrics = frozenset(body.deprecated_metrics)
        return insights_state(page)


def _page_of(world: World, page_id: str) -> Page:
    page = world.pages.get(page_id)
    if page is None:
        raise HTTPException(404, f"no page {page_id}")
    return page


def _bytes(content: MediaBytes | None) -> dict[str, Any]:
    return {
        "size": content.size if content is not None else None,
        "sha256": content.sha256 if content is not None else None,
    }


def _photo_state(photo: Photo) -> dict[str, Any]:
    return {
        "id": photo.photo_id,
        "page_id": photo.page_id,
        "created_time": graph_time(photo.created_time),
        "caption": photo.caption,
        "origin": photo.origin,
        "url": photo.url,
        "filename": photo.filename,
        **_bytes(photo.content),
        "published": photo.published,
        "temporary": photo.temporary,
        "post_id": photo.post_id,
        "attached_to": photo.attached_to,
        "deleted": photo.deleted,
    }


def _video_state(video: Video) -> dict[str, Any]:
    return {
        "id": video.video_id,
        "page_id": video.page_id,
        "kind": video.kind,
        "created_time": graph_time(video.created_time),
        "origin": video.origin,
        "title": video.title,
        "description": video.description,
        "file_url": video.file_url,
        "file_size": video.file_size,
        "bytes_received": video.received,
        "sha256": video.sha256,
        "upload_session_id": video.upload_session_id,
        "status": video_status(video),
        "publish_status": video.publish_status,
        "published": video.publish_status == "published",
        "post_id": video.post_id,
        "deleted": video.deleted,
    }


@router.get("/pages/{page_id}/photos")
def page_photos(page_id: str, world: WorldDep) -> dict[str, Any]:
    """Every photo uploaded to the Page, oldest first: unpublished, attached and deleted ones
    too, with the size and SHA-256 of what arrived (``null`` for a placeholder URL)."""
    with world.lock:
        _page_of(world, page_id)
        photos = [p for p in world.photos.values() if p.page_id == page_id]
        return {"data": [_photo_state(photo) for photo in photos]}


@router.get("/pages/{page_id}/videos")
def page_videos(page_id: str, world: WorldDep) -> dict[str, Any]:
    """Every video and reel of the Page, oldest first, at whatever phase: bytes received,
    SHA-256 once complete, Graph's ``status`` object, published, deleted."""
    with world.lock:
        _page_of(world, page_id)
        videos = [v for v in world.videos.values() if v.page_id == page_id]
        return {"data": [_video_state(video) for video in videos]}


@router.get("/calls")
def list_calls(world: WorldDep) -> dict[str, Any]:
    """The Graph calls received, oldest first, tokens masked."""
    with world.lock:
        return {"data": world.calls.entries(), "now": graph_time(world.now())}


@router.delete("/calls")
def clear_calls(world: WorldDep) -> dict[str, Any]:
    with world.lock:
        return {"cleared": world.calls.clear()}


@router.get("/usage")
def read_usage(world: WorldDep) -> dict[str, Any]:
    """The rate-limit meter: for every app and Page metered since the last reset, the
    calls in the window, the budget, the percentage used, the calls throttled because
    of the budget so far (``throttled_total``) and ``estimated_time_to_regain_access``
    (minutes until the next call is allowed; 0 while it is)."""
    with world.lock:
        return world.usage.report(world.now(), world.settings)


@router.delete("/usage")
def clear_usage(world: WorldDep) -> dict[str, Any]:
    """Forget every counted and throttled call (the budgets and the clock stay)."""
    with world.lock:
        world.usage = UsageMeter()
        return {"cleared": True}


@router.get("/settings")
def read_settings(world: WorldDep) -> dict[str, Any]:
    return world.settings.model_dump()


@router.post("/settings")
def change_settings(world: WorldDep, changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Change some switches; the others keep their values. Unknown keys are refused (422)."""
    with world.lock:
        try:
            world.settings = SandboxSettings.model_validate(
                {**world.settings.model_dump(), **changes}
            )
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
        return world.settings.model_dump()


@router.post("/reset")
def reset(world: WorldDep) -> dict[str, Any]:
    """Forget every user, Page, token, post, fault and call; settings and clock back to start."""
    world.reset()
    return {"reset": True, "now": int(world.now())}

"""Users, Pages and posts: ``/me``, ``/{id}``, ``/{user}/accounts``, ``/{page}/feed|posts|photos``.

- ``/{user}/accounts`` (``/me/accounts``) lists the Pages the user has a role on,
  with the user's tasks there and their Page tokens, cursor-paged; it needs
  ``pages_show_list`` (docs/graph.md).
- ``/{page}?fields=access_token`` with the user token of someone with a role on
  the Page gives the Page token.
- ``POST /{page}/feed`` (with ``attached_media``: unpublished photos of the Page, each
  attached once) and ``/photos`` (:mod:`.media`) need that Page's token with
  ``pages_manage_posts``, of a person with the ``CREATE_CONTENT`` task there; a
  user token, or a person without the task, gets ``(#200)`` with HTTP 403 (F9). The
  ``scheduled_publish_time`` window and an added publish latency come from the
  settings; duplicate detection (``(#506)``) compares a feed post's message and
  link with the Page's previous post.
- ``GET /{page}/feed`` and ``/posts`` list published posts newest first
  (``since``/``until``, ``limit``, cursors), readable with the Page's token or an
  admin's user token holding ``pages_read_engagement``. Unpublished and
  scheduled posts are not listed, as on Graph. ``fields=…,attachments`` shows a
  post's photo (``media_type: photo``), video, or photos (``album`` with
  ``subattachments``), each naming its object as ``target.id``.

Times are the sandbox clock, formatted like Graph's ``2026-11-28T17:00:00+0000``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from offpost.graph.sandbox import errors
from offpost.graph.sandbox.params import GraphRequest, paginate, parse_bool, parse_time, select
from offpost.graph.sandbox.state import (
    PUBLISH_TASK,
    Page,
    Photo,
    Post,
    Token,
    TokenKind,
    User,
    World,
)

MAX_MESSAGE_CHARS = 63_206
_BRAND_CATEGORY = {"id": "1605186416478696", "name": "Brand"}
_POST_FIELDS = ("created_time", "message", "id")


def graph_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def post_view(post: Post) -> dict[str, Any]:
    """Every field the sandbox knows of a post (absent values left out, as Graph does)."""
    view: dict[str, Any] = {
        "id": post.post_id,
        "created_time": graph_time(post.created_time),
        "updated_time": graph_time(post.updated_time or post.created_time),
    }
    if post.message is not None:
        view["message"] = post.message
    if post.link is not None:
        view["link"] = post.link
    if post.photo_url is not None:
        view["full_picture"] = post.photo_url
    view["is_published"] = post.published
    if post.scheduled_publish_time is not None:
        view["scheduled_publish_time"] = post.scheduled_publish_time
    view["permalink_url"] = f"https://www.facebook.com/{post.post_id}"
    if post.app is not None:
        view["application"] = {"id": post.app.app_id, "name": post.app.name}
    if post.media_type is not None:
        view["attachments"] = {"data": [attachment(post)]}
    return view


def _media_target(media_type: str, media_id: str) -> dict[str, Any]:
    kind = "video_inline" if media_type == "video" else media_type
    url = f"https://www.facebook.com/{media_id}"
    return {"media_type": media_type, "type": kind, "target": {"id": media_id, "url": url}}


def attachment(post: Post) -> dict[str, Any]:
    """The post's ``attachments`` entry, shaped like Graph's StoryAttachment: a photo or
    video names it as ``target``; an album lists its photos as ``subattachments``."""
    assert post.media_type is not None
    if post.media_type != "album":
        return _media_target(post.media_type, post.media_ids[0])
    album = _media_target("album", post.post_id)
    album["subattachments"] = {"data": [_media_target("photo", pid) for pid in post.media_ids]}
    return album


def has_role(token: Token, page: Page) -> bool:
    return token.user_id is not None and token.user_id in page.admin_ids


# --- nodes ------------------------------------------------------------------------------


def user_node(req: GraphRequest, user: User) -> dict[str, Any]:
    return select({"id": user.user_id, "name": user.name}, req.fields(("name", "id")))


def page_node(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    fields = req.fields(("name", "id"))
    node: dict[str, Any] = {
        "id": page.page_id,
        "name": page.name,
        "category": page.category,
        "category_list": [_BRAND_CATEGORY],
    }
    if "access_token" in fields:
        if token.kind is TokenKind.PAGE and token.page_id == page.page_id:
            node["access_token"] = token.value
        elif token.kind is TokenKind.USER and has_role(token, page):
            node["access_token"] = world.page_token_for(token, page.page_id).value
    return select(node, fields)


# --- /accounts --------------------------------------------------------------------------


def accounts(world: World, req: GraphRequest, token: Token, user: User) -> dict[str, Any]:
    if token.kind is not TokenKind.USER:
        raise errors.nonexisting_field(
            "accounts", "Page" if token.kind is TokenKind.PAGE else "Application"
        )
    if token.user_id != user.user_id:
        raise errors.unsupported_request("GET", user.user_id)
    if "pages_show_list" not in token.scopes:
        raise errors.accounts_permission()
    fields = req.fields(("access_token", "category", "category_list", "name", "id", "tasks"))
    with world.lock:
        pages = [world.pages[page_id] for page_id in user.page_ids]
        chunk, paging = paginate(req, pages, key=lambda page: page.page_id)
        data = []
        for page in chunk:
            entry: dict[str, Any] = {
                "category": page.category,
                "category_list": [_BRAND_CATEGORY],
                "name": page.name,
                "id": page.page_id,
                "tasks": list(user.tasks_on(page.page_id)),
            }
            if "access_token" in fields:
                entry["access_token"] = world.page_token_for(token, page.page_id).value
            data.append(select(entry, fields))
    body: dict[str, Any] = {"data": data}
    if paging:
        body["paging"] = paging
    return body


# --- feed -------------------------------------------------------------------------------


def require_reader(token: Token, page: Page) -> None:
    allowed = (token.kind is TokenKind.PAGE and token.page_id == page.page_id) or (
        token.kind is TokenKind.USER and has_role(token, page)
    )
    if not allowed or "pages_read_engagement" not in token.scopes:
        raise errors.read_permission()


def require_publisher(world: World, token: Token, page: Page) -> None:
    if (
        token.kind is not TokenKind.PAGE
        or token.page_id != page.page_id
        or "pages_manage_posts" not in token.scopes
    ):
        raise errors.publish_permission()
    with world.lock:
        user = world.users.get(token.user_id or "")
        may_post = user is not None and PUBLISH_TASK in user.tasks_on(page.page_id)
    if not may_post:
        raise errors.publish_permission()


def time_bounds(req: GraphRequest) -> Callable[[float], bool]:
    """Whether a time lies within the call's ``since``/``until`` (either may be absent)."""
    bounds = {}
    for name in ("since", "until"):
        raw = req.params.get(name)
        if raw:
            parsed = parse_time(raw)
            if parsed is None:
                raise errors.invalid_param(
                    f"The parameter {name} must be a unix time or ISO-8601 time"
                )
            bounds[name] = parsed
    since, until = bounds.get("since"), bounds.get("until")
    return lambda ts: (since is None or ts >= since) and (until is None or ts <= until)


def read_feed(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    require_reader(token, page)
    within = time_bounds(req)
    with world.lock:
        posts = [
            post
            for post in reversed(page.posts)
            if post.published and not post.deleted and within(post.created_time)
        ]
    chunk, paging = paginate(req, posts, key=lambda post: post.post_id)
    fields = req.fields(_POST_FIELDS)
    body: dict[str, Any] = {"data": [select(post_view(post), fields) for post in chunk]}
    if paging:
        body["paging"] = paging
    return body


def publish_options(world: World, req: GraphRequest) -> tuple[bool, int | None]:
    published = parse_bool(req.params.get("published"), default=True)
    raw = req.params.get("scheduled_publish_time")
    if not raw:
        return published, None
    if published:
        raise errors.invalid_param(
            "You cannot specify a scheduled publish time on a published post"
        )
    when = parse_time(raw)
    settings = world.settings
    ahead_s = None if when is None else when - world.now()
    if ahead_s is None or not settings.schedule_min_s <= ahead_s <= settings.schedule_max_s:
        raise errors.invalid_param("The specified scheduled publish time is invalid.")
    return published, when


async def publish_latency(world: World, req: GraphRequest) -> None:
    """Wait ``publish_latency_ms``; in a batch only the first publish waits, as Graph runs
    a batch's calls in parallel and answers once the slowest is done."""
    batch = req.ctx.batch
    if batch is not None:
        if batch.latency_spent:
            return
        batch.latency_spent = True
    latency_ms = world.settings.publish_latency_ms
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)


def created(req: GraphRequest, post: Post, body: dict[str, Any]) -> dict[str, Any]:
    """The reply, with read-after-write ``fields`` when asked for."""
    if "fields" in req.params:
        body.update(select(post_view(post), req.fields(())))
    return body


async def publish_feed(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    require_publisher(world, token, page)
    message = req.params.get("message") or None
    link = req.params.get("link") or None
    media_fbids = attached_media(req)
    if message is None and link is None and not media_fbids:
        raise errors.invalid_param("Missing message or attachment")
    if message is not None and len(message) > MAX_MESSAGE_CHARS:
        raise errors.invalid_param(
            f"Message is too long: the maximum is {MAX_MESSAGE_CHARS} characters"
        )
    published, scheduled = publish_options(world, req)
    await publish_latency(world, req)
    with world.lock:
        photos = [
            _attachable_photo(world, page, index, fbid) for index, fbid in enumerate(media_fbids)
        ]
        if (
            world.settings.duplicate_detection
            and not photos
            and message is not None
            and page.last_content == (message, link)
        ):
            raise errors.duplicate_post()
        post = add_post(
            world,
            token,
            page,
            message=message,
            link=link,
            published=published,
            scheduled=scheduled,
            media_type=("album" if len(photos) > 1 else "photo") if photos else None,
            media_ids=tuple(photo.photo_id for photo in photos),
        )
        for photo in photos:
            photo.attached_to = post.post_id
    return created(req, post, {"id": post.post_id})


_ATTACHED_RE = re.compile(r"^attached_media\[(\d+)\]$")


def attached_media(req: GraphRequest) -> list[str]:
    """The ``media_fbid`` s of ``attached_media[0]={"media_fbid": …}``, ``attached_media[1]…``
    (by index), or of one ``attached_media=[{…}, …]`` JSON array."""
    entries: list[tuple[int, str]] = []
    for key, raw in req.params.items():
        if match := _ATTACHED_RE.match(key):
            entries.append((int(match.group(1)), raw))
    if not entries and req.params.get("attached_media"):
        try:
            array = json.loads(req.params["attached_media"])
        except ValueError:
            raise errors.invalid_param("attached_media must be a JSON array") from None
        if not isinstance(array, list):
            raise errors.invalid_param("attached_media must be a JSON array")
        entries = [(index, json.dumps(item)) for index, item in enumerate(array)]
    return [_media_fbid(index, raw) for index, raw in sorted(entries)]


def _media_fbid(index: int, raw: str) -> str:
    try:
        entry = json.loads(raw)
    except ValueError:
        entry = None
    fbid = entry.get("media_fbid") if isinstance(entry, dict) else None
    if isinstance(fbid, int) and not isinstance(fbid, bool):
        fbid = str(fbid)
    if not isinstance(fbid, str) or not fbid:
        raise errors.invalid_param(
            f'attached_media[{index}] must be a JSON object {{"media_fbid": "<photo id>"}}'
        )
    return fbid


def _attachable_photo(world: World, page: Page, index: int, fbid: str) -> Photo:
    """The Page's unpublished, unattached photo ``fbid``; the caller holds ``world.lock``."""
    photo = world.photos.get(fbid)
    if photo is None or photo.deleted or photo.page_id != page.page_id:
        raise errors.bad_attached_media(index, fbid, "is not a photo of this Page")
    if photo.published:
        raise errors.bad_attached_media(index, fbid, "is a published photo")
    if photo.attached_to is not None:
        raise errors.bad_attached_media(index, fbid, "is already attached to a post")
    return photo


def add_post(
    world: World,
    token: Token,
    page: Page,
    *,
    message: str | None,
    published: bool,
    scheduled: int | None,
    link: str | None = None,
    photo_id: str | None = None,
    photo_url: str | None = None,
    media_type: str | None = None,
    media_ids: tuple[str, ...] = (),
) -> Post:
    """A new post on ``page`` made with ``token`` (its app is the post's ``application``);
    the caller holds ``world.lock``."""
    return world.add_post(
        page,
        Post(
            post_id=f"{page.page_id}_{world.new_id(16)}",
            page_id=page.page_id,
            created_time=world.now(),
            message=message,
            link=link,
            published=published,
            scheduled_publish_time=scheduled,
            app=world.apps.get(token.app_id),
            photo_id=photo_id,
            photo_url=photo_url,
            media_type=media_type,
            media_ids=media_ids,
        ),
    )

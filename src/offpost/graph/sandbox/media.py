"""Photos, Page videos and reels: uploads, their objects and their listings.

- ``POST /{page}/photos``: ``url`` (fetched) or a multipart ``source``; ``caption``;
  ``published`` (default true; ``false`` uploads a photo without a story, for a
  later ``attached_media``); ``temporary``; ``scheduled_publish_time``. Answers
  ``{"id"}`` for an unpublished photo, ``{"id", "post_id"}`` otherwise.
- ``GET /{page}/photos?type=uploaded`` lists the photos the Page shows: published
  ones and those attached to a post. Graph documents no way to list unpublished
  uploads (the facts say they are not returned), so neither does the sandbox;
  without ``type=uploaded`` Graph lists the Page's profile pictures, which the
  sandbox's Pages do not have: the list is empty.
- ``POST /{page}/videos``: non-resumable (``file_url`` or ``source``) answers
  ``{"id"}`` and publishes at once; resumable ``upload_phase=start|transfer|finish``
  with windows of ``video_chunk_bytes`` (a setting). A chunk at another offset is
  refused with subcode 1363037 and the expected window in ``error_data``; the
  chunk last accepted at an offset, sent again with the same bytes (its reply was
  lost), is answered like the first time. ``finish`` publishes the video (a feed
  post) and is idempotent.
- ``POST /{page}/video_reels``: ``upload_phase=start`` answers ``video_id`` and an
  ``upload_url`` on this server (``/video-upload/{version}/{video-id}``);
  ``upload_phase=finish`` with ``video_state`` (``PUBLISHED``, ``DRAFT``,
  ``SCHEDULED``) publishes, at most ``reels_per_day`` (30) per Page in a moving
  24 h, as the Reels guide says; a finished reel finishes again harmlessly.
- rupload, ``POST|GET /video-upload/{version}/{video-id}``: ``Authorization: OAuth``,
  and ``appsecret_proof`` in the query like every call; ``file_url`` header, or
  ``offset`` + ``file_size`` headers and the raw bytes. ``offset`` must be the
  bytes received so far (``OffsetInvalidError``); a body shorter than the rest of
  the file keeps what arrived (``PartialRequestError``), as does a connection lost
  mid-body. ``GET`` answers ``{"id", "offset", "file_size"}``.
- ``GET /{video-id}?fields=status`` shows the phases with the Reels guide's
  names; the bytes received are given as ``bytes_transfered`` (the guide's
  spelling) and ``bytes_transferred`` (what replies are reported to carry).
- ``DELETE /{photo|video|post-id}`` with the owning Page's token.

Hosted media (``url``, ``file_url``) are downloaded with httpx and kept as size and
SHA-256 only. Placeholder hosts (``example.com``, ``.net``, ``.org`` and ``*.example``,
reserved by RFC 2606 and never real media) are not fetched: their size and hash
stay unknown. ``fetch_media: false`` (a setting) fetches nothing at all.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import ClientDisconnect

from offpost.graph.sandbox import errors
from offpost.graph.sandbox.auth import authenticate, meter
from offpost.graph.sandbox.pages import (
    add_post,
    created,
    graph_time,
    publish_latency,
    publish_options,
    require_publisher,
    require_reader,
    time_bounds,
)
from offpost.graph.sandbox.params import (
    GraphRequest,
    Upload,
    paginate,
    parse_bool,
    parse_int,
    parse_time,
    select,
)
from offpost.graph.sandbox.state import (
    MediaBytes,
    Page,
    Photo,
    Post,
    Token,
    Video,
    World,
)

#: The first path segment of rupload URLs, served at the sandbox's base URL.
RUPLOAD_SEGMENT = "video-upload"
#: The user agent Meta's crawler fetches hosted media with (Reels guide).
FETCH_USER_AGENT = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
_PLACEHOLDER_DOMAINS = ("example.com", "example.net", "example.org")
_PHOTO_FIELDS = ("created_time", "name", "id")
_VIDEO_FIELDS = ("description", "updated_time", "id")
_DAY_S = 86_400
_REEL_STATES = {"PUBLISHED": "published", "DRAFT": "draft", "SCHEDULED": "scheduled"}


# --- hosted media ---------------------------------------------------------------------


def _placeholder(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith(".example") or any(
        host == domain or host.endswith("." + domain) for domain in _PLACEHOLDER_DOMAINS
    )


async def fetch_media(world: World, url: str, failed: errors.GraphError) -> MediaBytes | None:
    """Download ``url`` as Graph would, keeping only its size and SHA-256.

    ``None`` for a placeholder host or with fetching off; ``failed`` is raised for
    anything Graph could not use: another scheme, a transport error, a status
    other than 2xx, an empty body.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise failed
    if not world.settings.fetch_media or _placeholder(parts.hostname):
        return None
    digest = hashlib.sha256()
    size = 0
    timeout = httpx.Timeout(world.settings.media_fetch_timeout_s)
    try:
        async with (
            httpx.AsyncClient(
                timeout=timeout, follow_redirects=True, headers={"User-Agent": FETCH_USER_AGENT}
            ) as client,
            client.stream("GET", url) as response,
        ):
            if not response.is_success:
                raise failed
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
                size += len(chunk)
    except httpx.HTTPError:
        raise failed from None
    if size == 0:
        raise failed
    return MediaBytes(size=size, sha256=digest.hexdigest())


def _uploaded(upload: Upload | None) -> MediaBytes | None:
    return None if upload is None else MediaBytes(size=upload.size, sha256=upload.sha256)


# --- photos ---------------------------------------------------------------------------


async def upload_photo(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    """``POST /{page}/photos``: a photo post, or an unpublished photo for ``attached_media``."""
    require_publisher(world, token, page)
    upload = req.uploads.get("source")
    url = None if upload is not None else (req.params.get("url") or req.params.get("source"))
    if upload is None and not url:
        raise errors.photo_required()
    caption = req.params.get("caption") or req.params.get("message") or None
    published, scheduled = publish_options(world, req)
    temporary = parse_bool(req.params.get("temporary"), default=False)
    if upload is not None and upload.size == 0:
        raise errors.invalid_image()
    content = (
        _uploaded(upload) if url is None else await fetch_media(world, url, errors.invalid_image())
    )
    await publish_latency(world, req)
    with world.lock:
        photo = Photo(
            photo_id=world.new_id(16),
            page_id=page.page_id,
            created_time=world.now(),
            caption=caption,
            published=published,
            app=world.apps.get(token.app_id),
            origin="url" if url is not None else "source",
            url=url,
            filename=upload.filename if upload is not None else None,
            content=content,
            temporary=temporary,
        )
        world.photos[photo.photo_id] = photo
        if not published and scheduled is None:
            return {"id": photo.photo_id}
        post = add_post(
            world,
            token,
            page,
            message=caption,
            published=published,
            scheduled=scheduled,
            photo_id=photo.photo_id,
            photo_url=url,
            media_type="photo",
            media_ids=(photo.photo_id,),
        )
        photo.post_id = post.post_id
    return created(req, post, {"id": photo.photo_id, "post_id": post.post_id})


def photo_view(photo: Photo) -> dict[str, Any]:
    view: dict[str, Any] = {"id": photo.photo_id, "created_time": graph_time(photo.created_time)}
    if photo.caption is not None:
        view["name"] = photo.caption
    view["link"] = f"https://www.facebook.com/photo.php?fbid={photo.photo_id}"
    return view


def list_photos(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    """``GET /{page}/photos``: with ``type=uploaded`` the photos the Page shows, newest first."""
    require_reader(token, page)
    within = time_bounds(req)
    with world.lock:
        photos = [
            photo
            for photo in reversed(world.photos.values())
            if req.params.get("type") == "uploaded"
            and photo.page_id == page.page_id
            and not photo.deleted
            and (photo.published or photo.attached_to is not None)
            and within(photo.created_time)
        ]
    return _listing(req, photos, lambda photo: photo.photo_id, photo_view, _PHOTO_FIELDS)


# --- videos ---------------------------------------------------------------------------


def _new_video(
    world: World, token: Token, page: Page, *, kind: str, origin: str, **fields: Any
) -> Video:
    """A video of ``page``, registered; the caller holds ``world.lock``."""
    video = Video(
        video_id=world.new_id(16),
        page_id=page.page_id,
        created_time=world.now(),
        kind=kind,
        app=world.apps.get(token.app_id),
        origin=origin,
        **fields,
    )
    world.videos[video.video_id] = video
    return video


def _with_content(video: Video, content: MediaBytes | None) -> None:
    if content is not None:
        video.file_size = video.received = content.size
        video.sha256 = content.sha256


def _publish_video(world: World, token: Token, page: Page, video: Video) -> None:
    """A finished ``/videos`` video goes live with a feed post; the caller holds the lock."""
    video.publish_status = "published"
    video.publish_time = video.finished_at = world.now()
    post = add_post(
        world,
        token,
        page,
        message=video.description,
        published=True,
        scheduled=None,
        media_type="video",
        media_ids=(video.video_id,),
    )
    video.post_id = post.post_id


async def post_video(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    """``POST /{page}/videos``: one request (``file_url``/``source``) or a resumable phase."""
    require_publisher(world, token, page)
    phase = req.params.get("upload_phase")
    if phase == "start":
        return _video_start(world, req, token, page)
    if phase == "transfer":
        return _video_transfer(world, req, page)
    if phase == "finish":
        return await _video_finish(world, req, token, page)
    if phase:
        raise errors.invalid_param("upload_phase must be one of start, transfer, finish")
    upload = req.uploads.get("source")
    file_url = req.params.get("file_url")
    if upload is None and not file_url:
        raise errors.video_required()
    if upload is not None and upload.size == 0:
        raise errors.video_required()
    content = (
        _uploaded(upload)
        if not file_url
        else await fetch_media(world, file_url, errors.video_fetch_failed())
    )
    await publish_latency(world, req)
    with world.lock:
        video = _new_video(
            world,
            token,
            page,
            kind="video",
            origin="file_url" if file_url else "source",
            file_url=file_url or None,
            title=req.params.get("title") or None,
            description=req.params.get("description") or None,
        )
        _with_content(video, content)
        _publish_video(world, token, page, video)
    return {"id": video.video_id}


def _window(world: World, video: Video) -> dict[str, str]:
    """The next chunk Graph asks for; start equals end once every byte arrived."""
    size = video.file_size or 0
    end = min(size, video.received + world.settings.video_chunk_bytes)
    return {"start_offset": str(video.received), "end_offset": str(end)}


def _video_start(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    file_size = parse_int(req, "file_size")
    if file_size is None:
        raise errors.missing_param("file_size")
    if file_size <= 0:
        raise errors.invalid_param("file_size must be a positive integer")
    with world.lock:
        video = _new_video(
            world,
            token,
            page,
            kind="video",
            origin="resumable",
            file_size=file_size,
            hasher=hashlib.sha256(),
            upload_session_id=world.new_id(16),
        )
        assert video.upload_session_id is not None
        world.upload_sessions[video.upload_session_id] = video.video_id
        return {
            "video_id": video.video_id,
            "upload_session_id": video.upload_session_id,
            **_window(world, video),
        }


def _session_video(world: World, req: GraphRequest, page: Page) -> Video:
    session_id = req.params.get("upload_session_id")
    if not session_id:
        raise errors.missing_param("upload_session_id")
    with world.lock:
        video = world.videos.get(world.upload_sessions.get(session_id, ""))
    if video is None or video.page_id != page.page_id or video.deleted:
        raise errors.upload_session_invalid()
    return video


def _video_transfer(world: World, req: GraphRequest, page: Page) -> dict[str, Any]:
    video = _session_video(world, req, page)
    start = parse_int(req, "start_offset")
    if start is None:
        raise errors.missing_param("start_offset")
    chunk = req.uploads.get("video_file_chunk")
    if chunk is None:
        raise errors.missing_param("video_file_chunk")
    with world.lock:
        size = video.file_size or 0
        if start != video.received or chunk.size == 0 or start + chunk.size > size:
            if video.chunks.get(start) == (chunk.size, chunk.sha256):
                return _window(world, video)  # sent again after a lost reply: no harm
            window = _window(world, video)
            raise errors.chunk_offset_mismatch(
                int(window["start_offset"]), int(window["end_offset"])
            )
        for data in chunk.chunks():
            video.hasher.update(data)
        video.chunks[start] = (chunk.size, chunk.sha256)
        video.received += chunk.size
        if video.complete:
            video.sha256 = video.hasher.hexdigest()
        return _window(world, video)


async def _video_finish(
    world: World, req: GraphRequest, token: Token, page: Page
) -> dict[str, Any]:
    video = _session_video(world, req, page)
    await publish_latency(world, req)
    with world.lock:
        if video.publish_status is not None:
            return {"success": True}
        if not video.complete:
            raise errors.upload_incomplete(video.received, video.file_size)
        video.title = req.params.get("title") or video.title
        video.description = req.params.get("description") or video.description
        _publish_video(world, token, page, video)
    return {"success": True}


# --- reels ----------------------------------------------------------------------------


def upload_url(world: World, req: GraphRequest, video_id: str) -> str:
    version = req.version or world.settings.api_version
    return f"{req.base_url}/{RUPLOAD_SEGMENT}/{version}/{video_id}"


async def post_reel(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    """``POST /{page}/video_reels``: ``upload_phase=start`` or ``finish``."""
    require_publisher(world, token, page)
    phase = req.params.get("upload_phase")
    if phase == "start":
        with world.lock:
            video = _new_video(world, token, page, kind="reel", origin="rupload")
        return {"video_id": video.video_id, "upload_url": upload_url(world, req, video.video_id)}
    if phase == "finish":
        return await _reel_finish(world, req, page)
    if not phase:
        raise errors.missing_param("upload_phase")
    raise errors.invalid_param("upload_phase must be one of start, finish")


def _reel_of(world: World, page: Page, video_id: str) -> Video:
    with world.lock:
        video = world.videos.get(video_id)
    if video is None or video.kind != "reel" or video.page_id != page.page_id or video.deleted:
        raise errors.invalid_param(f"Invalid video_id {video_id}")
    return video


def _reel_state(world: World, req: GraphRequest) -> tuple[str, float]:
    """(publish status, publish time) from ``video_state`` (and ``scheduled_publish_time``)."""
    state = req.params.get("video_state")
    if not state:
        raise errors.missing_param("video_state")
    status = _REEL_STATES.get(state.upper())
    if status is None:
        raise errors.invalid_param("video_state must be one of PUBLISHED, DRAFT, SCHEDULED")
    if status != "scheduled":
        return status, world.now()
    when = parse_time(req.params.get("scheduled_publish_time") or "")
    if when is None:
        raise errors.missing_param("scheduled_publish_time")
    return status, float(when)


def _published_reels(world: World, page: Page) -> int:
    """Reels of the Page put live (or scheduled) through the API in the last 24 h."""
    since = world.now() - _DAY_S
    return sum(
        1
        for video in world.videos.values()
        if video.kind == "reel"
        and video.page_id == page.page_id
        and video.publish_status in ("published", "scheduled")
        and video.finished_at is not None
        and video.finished_at > since
    )


async def _reel_finish(world: World, req: GraphRequest, page: Page) -> dict[str, Any]:
    video_id = req.params.get("video_id")
    if not video_id:
        raise errors.missing_param("video_id")
    video = _reel_of(world, page, video_id)
    status, publish_time = _reel_state(world, req)
    await publish_latency(world, req)
    with world.lock:
        if video.publish_status is not None:
            return {"success": True}
        if not video.complete:
            raise errors.upload_incomplete(video.received, video.file_size)
        limit = world.settings.reels_per_day
        if status != "draft" and _published_reels(world, page) >= limit:
            raise errors.reels_limit(limit)
        video.title = req.params.get("title") or None
        video.description = req.params.get("description") or None
        video.publish_status = status
        video.publish_time = publish_time
        video.finished_at = world.now()
    return {"success": True}


# --- rupload --------------------------------------------------------------------------


def _rupload_video_id(req: GraphRequest) -> str:
    """``/video-upload/{version}/{id}`` or ``/video-upload/{id}`` (the guide shows both)."""
    rest = req.segments[1:]
    if len(rest) == 2 or len(rest) == 1:
        return rest[-1]
    raise errors.unknown_path("/".join(req.segments))


async def rupload(world: World, req: GraphRequest) -> dict[str, Any]:
    """The rupload host, authenticated, proof-checked and metered like any Graph call."""
    video_id = _rupload_video_id(req)
    token = authenticate(world, req.token_value, req.params, req.ctx)
    with world.lock:
        video = world.videos.get(video_id)
        page = world.pages.get(video.page_id) if video is not None else None
    req.ctx.page_id = page.page_id if page is not None else None
    meter(world, req.ctx, app_id=token.app_id, page_id=req.ctx.page_id, token=token)
    if video is None or page is None or video.kind != "reel" or video.deleted:
        raise errors.unsupported_request(req.method, video_id)
    if req.method == "GET":
        require_reader(token, page)
        return {"id": video.video_id, "offset": video.received, "file_size": video.file_size or 0}
    if req.method != "POST":
        raise errors.unsupported_request(req.method, video_id)
    require_publisher(world, token, page)
    file_url = req.headers.get("file_url")
    if file_url:
        content = await fetch_media(world, file_url, errors.video_fetch_failed())
        with world.lock:
            video.file_url = file_url
            video.origin = "file_url"
            _with_content(video, content)
            if content is None:  # a placeholder: taken as arrived, size unknown
                video.file_size = video.received = 0
        return {"success": True}
    await _receive(world, req, video)
    return {"success": True}


def _header_int(req: GraphRequest, name: str) -> int | None:
    raw = req.headers.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.invalid_param(f"Header {name} must be an integer") from None


def _claim(world: World, req: GraphRequest, video: Video) -> int:
    """Check the ``offset``/``file_size`` headers and mark the video busy; the bytes expected."""
    offset = _header_int(req, "offset") or 0
    file_size = _header_int(req, "file_size")
    if file_size is None or file_size <= 0:
        raise errors.missing_param("file_size")
    length = _header_int(req, "content-length")
    partial = errors.rupload_error(
        "PartialRequestError", "Partial request (did not match length of file)"
    )
    with world.lock:
        if video.file_size is not None and video.file_size != file_size:
            raise partial
        if video.uploading or offset != video.received:
            raise errors.rupload_error("OffsetInvalidError", "Request starting offset is invalid")
        if length is not None and length > file_size - offset:
            raise partial
        if video.file_size is None:
            video.file_size = file_size
            video.hasher = hashlib.sha256()
        video.uploading = True
    return file_size - offset


async def _receive(world: World, req: GraphRequest, video: Video) -> None:
    """Digest the raw body into the video as it arrives; keep what came if it stops short."""
    expected = _claim(world, req, video)
    arrived = 0
    try:
        async for data in req.body():
            kept = data[: expected - arrived]
            video.hasher.update(kept)
            arrived += len(kept)
            with world.lock:
                video.received += len(kept)
    except ClientDisconnect:
        pass  # what arrived counts; nobody is left to answer
    finally:
        with world.lock:
            video.uploading = False
            if video.complete:
                video.sha256 = video.hasher.hexdigest()
    if arrived < expected:
        raise errors.rupload_error(
            "PartialRequestError", "Partial request (did not match length of file)"
        )


# --- objects --------------------------------------------------------------------------


def video_status(video: Video) -> dict[str, Any]:
    """``status`` as the Reels guide names it (phases ``not_started|in_progress|complete``)."""
    finished = video.publish_status is not None
    uploading = "in_progress" if video.received else "not_started"
    if video.complete:
        uploading = "complete"
    phase: dict[str, Any] = {
        "status": uploading,
        "bytes_transfered": video.received,
        "bytes_transferred": video.received,
    }
    if video.file_size is not None:
        phase["source_file_size"] = video.file_size
    publishing: dict[str, Any] = {
        "status": "complete" if video.publish_status == "published" else "not_started"
    }
    if finished:
        publishing["publish_status"] = video.publish_status
        publishing["publish_time"] = int(video.publish_time or 0)
    overall = "upload_complete" if video.complete else "uploading"
    if finished:
        overall = "ready"
    return {
        "video_status": overall,
        "uploading_phase": phase,
        "processing_phase": {"status": "complete" if finished else "not_started"},
        "publishing_phase": publishing,
    }


def video_view(video: Video) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": video.video_id,
        "created_time": graph_time(video.created_time),
        "updated_time": graph_time(video.finished_at or video.created_time),
    }
    if video.title is not None:
        view["title"] = video.title
    if video.description is not None:
        view["description"] = video.description
    view["status"] = video_status(video)
    view["published"] = video.publish_status == "published"
    view["permalink_url"] = (
        f"/reel/{video.video_id}"
        if video.kind == "reel"
        else f"/{video.page_id}/videos/{video.video_id}"
    )
    if video.post_id is not None:
        view["post_id"] = video.post_id
    return view


def list_videos(
    world: World, req: GraphRequest, token: Token, page: Page, *, kind: str
) -> dict[str, Any]:
    """``GET /{page}/videos`` (``kind="video"``) or ``/video_reels`` (``"reel"``): the
    published ones, newest first."""
    require_reader(token, page)
    within = time_bounds(req)
    with world.lock:
        videos = [
            video
            for video in reversed(world.videos.values())
            if video.kind == kind
            and video.page_id == page.page_id
            and not video.deleted
            and video.publish_status == "published"
            and within(video.created_time)
        ]
    return _listing(req, videos, lambda video: video.video_id, video_view, _VIDEO_FIELDS)


def _listing(
    req: GraphRequest,
    items: list[Any],
    key: Any,
    view: Any,
    default_fields: tuple[str, ...],
) -> dict[str, Any]:
    chunk, paging = paginate(req, items, key=key)
    fields = req.fields(default_fields)
    body: dict[str, Any] = {"data": [select(view(item), fields) for item in chunk]}
    if paging:
        body["paging"] = paging
    return body


def media_node(req: GraphRequest, token: Token, page: Page, owner: Photo | Video) -> dict[str, Any]:
    """``GET /{photo-id}`` or ``/{video-id}`` (``?fields=status`` for a video's phases)."""
    require_reader(token, page)
    if isinstance(owner, Photo):
        return select(photo_view(owner), req.fields(_PHOTO_FIELDS))
    return select(video_view(owner), req.fields(_VIDEO_FIELDS))


def delete_object(
    world: World, token: Token, page: Page, owner: Post | Photo | Video
) -> dict[str, Any]:
    """``DELETE`` a post, photo or video of the Page: gone from Graph's answers at once.

    A photo's or video's own post goes with it; a post's photos stay (unlisted).
    """
    require_publisher(world, token, page)
    with world.lock:
        owner.deleted = True
        own_post = None if isinstance(owner, Post) else world.posts.get(owner.post_id or "")
        if own_post is not None:
            own_post.deleted = True
    return {"success": True}

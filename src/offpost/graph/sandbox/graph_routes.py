"""The Graph side of the sandbox: one catch-all endpoint that routes like Graph does.

Graph routes by object id and edge rather than by fixed paths, so the
sandbox does too: ``/oauth/access_token``, ``/oauth/client_code``,
``/debug_token``, ``/me`` (the caller's user, or Page for a Page token),
``/{id}`` and ``/{id}/{edge}`` — posts, photos and videos are ids too (``GET``,
``DELETE``, a post's ``POST`` edit, ``/comments`` and a post's ``/insights``:
:mod:`.engagement`). rupload's ``/video-upload/{version}/{video-id}`` is served
here as well, at the same base URL (:mod:`.media`). The version prefix is already gone
(:mod:`.app` strips it). Unknown objects answer Graph's "Unsupported get
request" (100/33), unknown edges "Tried accessing nonexisting field".
``POST /`` is a batch request (:mod:`.batch`), whose items go through
:func:`answer` one by one, as single calls do.

Per call: read the parameters, apply a matching fault (latency, then an error,
a foreign body or a dropped connection, before or after the effect),
authenticate, meter, run the handler, answer JSON (``application/json``) or
Graph's error envelope. How a reply is cut, trickled or given extra headers is
:mod:`.app`'s part.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from offpost.graph.sandbox import batch, engagement, errors, media, oauth, pages
from offpost.graph.sandbox.auth import authenticate, meter, peek_usage
from offpost.graph.sandbox.calls import CallContext
from offpost.graph.sandbox.faults import Fault
from offpost.graph.sandbox.params import READ_BYTES, GraphRequest, Upload
from offpost.graph.sandbox.replies import Reply, error_reply, render_json
from offpost.graph.sandbox.state import Page, Photo, Post, Token, TokenKind, User, Video, World

logger = logging.getLogger(__name__)

#: Where :mod:`.app` keeps the :class:`CallContext` in the ASGI scope.
CONTEXT_KEY = "offpost.sandbox.call"


def error_response(error: errors.GraphError) -> Response:
    return to_response(error_reply(error))


def to_response(reply: Reply) -> Response:
    return Response(
        reply.body, status_code=reply.status, headers=reply.headers, media_type=reply.media_type
    )


async def read_params(
    request: Request,
) -> tuple[dict[str, str], dict[str, str], dict[str, Upload], FormData | None]:
    """(all parameters, query-string parameters, multipart files, the form to close).

    Body values win over the query's. A file's parameter value is its file name
    (what a handler that only names the file sees); its bytes are an :class:`Upload`.
    """
    query = dict(request.query_params)
    params = dict(query)
    if request.method in ("GET", "HEAD"):
        return params, query, {}, None
    content_type = request.headers.get("content-type", "")
    uploads: dict[str, Upload] = {}
    form: FormData | None = None
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise errors.invalid_param("The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise errors.invalid_param("The request body must be a JSON object")
        for key, value in body.items():
            params[key] = value if isinstance(value, str) else json.dumps(value)
    elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                params[key] = value.filename or key
                uploads[key] = await _upload(value, key)
            else:
                params[key] = value
    return params, query, uploads, form


async def _upload(file: UploadFile, name: str) -> Upload:
    """Size and SHA-256 of a multipart file, read once; the file stays for the handler."""
    digest = hashlib.sha256()
    size = 0
    while chunk := await file.read(READ_BYTES):
        digest.update(chunk)
        size += len(chunk)
    await file.seek(0)
    return Upload(
        filename=file.filename or name, size=size, sha256=digest.hexdigest(), file=file.file
    )


def _header_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() in ("oauth", "bearer") else None


def _fault_reply(fault: Fault) -> Reply:
    if fault.closes_without_reply:
        return Reply(502, b"", dropped=True)
    if fault.body is not None:
        return Reply(
            fault.status or 200,
            fault.body.encode(),
            media_type=fault.content_type or "text/plain; charset=utf-8",
        )
    status, body = errors.complete_error(fault.error or {}, fault.status)
    return Reply(status, render_json(body))


async def graph_endpoint(request: Request) -> Response:
    """Every Graph call lands here."""
    world: World = request.app.state.world
    ctx: CallContext = request.scope[CONTEXT_KEY]
    try:
        params, query, uploads, form = await read_params(request)
    except errors.GraphError as exc:
        return error_response(exc)
    try:
        req = GraphRequest(
            method=request.method,
            segments=tuple(part for part in ctx.graph_path.split("/") if part),
            params=params,
            query=query,
            base_url=f"{request.url.scheme}://{request.url.netloc}",
            version=ctx.version,
            ctx=ctx,
            header_token=_header_token(request),
            uploads=uploads,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=request.stream,
        )
        reply = await answer(world, req)
        if reply.dropped:
            ctx.drop = True
        return to_response(reply)
    finally:
        if form is not None:
            await form.close()


async def answer(world: World, req: GraphRequest) -> Reply:
    """The reply to one call whose parameters are read, a single call or a batch's item:
    a matching fault (latency, then an error, a foreign body or a dropped connection,
    before or after the effect), then the handler."""
    ctx = req.ctx
    ctx.params = req.params
    with world.lock:
        fault = world.faults.take(req.method, (ctx.path, ctx.graph_path), req.params)
    if fault is not None:
        ctx.fault_id = fault.fault_id
        ctx.fault = fault
        if fault.latency_ms and not fault.after_effect:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.breaks and not fault.after_effect:
            peek_usage(world, ctx, req.token_value)
            return _fault_reply(fault)
    reply = await _handle(world, req)
    if fault is not None and fault.latency_ms and fault.after_effect:
        # The effect exists; the reply is what is late (a timeout that hides a post).
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault is not None and fault.breaks:
        return _fault_reply(fault)
    return reply


async def _handle(world: World, req: GraphRequest) -> Reply:
    try:
        if batch.is_batch(req):
            return Reply(200, render_json(await batch.run(world, req, answer)))
        return Reply(200, render_json(await dispatch(world, req)))
    except errors.GraphError as exc:
        return error_reply(exc)
    except Exception:
        logger.exception("sandbox handler failed", extra={"action": "sandbox_handler_failed"})
        return error_reply(errors.unknown_error())


async def dispatch(world: World, req: GraphRequest) -> dict[str, Any]:
    """Route one call to its handler; raises :class:`~.errors.GraphError`."""
    segments, method = req.segments, req.method
    if segments == ("oauth", "access_token") and method in ("GET", "POST"):
        return oauth.access_token(world, req)
    if segments == ("oauth", "client_code") and method in ("GET", "POST"):
        return oauth.client_code(world, req)
    if segments == ("debug_token",) and method == "GET":
        return oauth.debug_token(world, req)
    if not segments:
        raise errors.invalid_param(
            "The root path takes only a batch request: POST with a batch parameter"
        )
    if segments[0] == media.RUPLOAD_SEGMENT:
        return await media.rupload(world, req)
    if segments[0] == "me" and not req.token_value:
        raise errors.active_token_required()
    token = authenticate(world, req.token_value, req.params, req.ctx)
    node_id = _me(token) if segments[0] == "me" else segments[0]
    with world.lock:
        user = world.users.get(node_id)
        post = world.posts.get(node_id)
        photo = world.photos.get(node_id)
        video = world.videos.get(node_id)
        owner = post or photo or video
        page = world.pages.get(owner.page_id if owner is not None else node_id)
    req.ctx.page_id = page.page_id if page is not None else None
    meter(world, req.ctx, app_id=token.app_id, page_id=req.ctx.page_id, token=token)
    if len(segments) > 2:
        raise errors.unknown_path("/".join(segments[2:]))
    if user is not None and user.app_id == token.app_id:
        return _user_route(world, req, token, user)
    if page is not None and owner is not None:
        return _object_route(world, req, token, page, owner)
    if page is not None:
        return await _page_route(world, req, token, page)
    raise errors.unsupported_request(method, node_id)


def _object_route(
    world: World, req: GraphRequest, token: Token, page: Page, owner: Post | Photo | Video
) -> dict[str, Any]:
    """A post, photo or video: ``GET``, ``DELETE``, ``POST`` (a post's edit) and the
    ``comments`` and ``insights`` edges (:mod:`.engagement`). A deleted one is gone."""
    node_id = req.segments[0]
    if owner.deleted:
        raise errors.unsupported_request(req.method, node_id)
    if len(req.segments) == 1:
        if req.method == "GET":
            if isinstance(owner, Post):
                return engagement.post_node(world, req, token, page, owner)
            return media.media_node(req, token, page, owner)
        if req.method == "DELETE":
            return media.delete_object(world, token, page, owner)
        if req.method == "POST" and isinstance(owner, Post):
            return engagement.edit_post(world, req, token, page, owner)
        raise errors.unsupported_request(req.method, node_id)
    edge = req.segments[1]
    if edge == "comments" and req.method == "POST":
        return engagement.post_comment(world, req, token, page, owner)
    if edge == "comments" and req.method == "GET":
        return engagement.list_comments(world, req, token, page, owner)
    if edge == "insights" and req.method == "GET" and isinstance(owner, Post):
        return engagement.post_insights(world, req, token, page, owner)
    if edge in ("comments", "insights"):
        raise errors.unsupported_request(req.method, node_id)
    kind = "Post" if isinstance(owner, Post) else "Photo" if isinstance(owner, Photo) else "Video"
    raise errors.nonexisting_field(edge, kind)


def _me(token: Token) -> str:
    if token.kind is TokenKind.PAGE and token.page_id is not None:
        return token.page_id
    if token.user_id is None:
        raise errors.active_token_required()
    return token.user_id


def _user_route(world: World, req: GraphRequest, token: Token, user: User) -> dict[str, Any]:
    if len(req.segments) == 1:
        if req.method != "GET":
            raise errors.unsupported_request(req.method, user.user_id)
        return pages.user_node(req, user)
    edge = req.segments[1]
    if edge == "accounts" and req.method == "GET":
        return pages.accounts(world, req, token, user)
    raise errors.nonexisting_field(edge, "User")


async def _page_route(world: World, req: GraphRequest, token: Token, page: Page) -> dict[str, Any]:
    method = req.method
    if len(req.segments) == 1:
        if method != "GET":
            raise errors.unsupported_request(method, page.page_id)
        return pages.page_node(world, req, token, page)
    edge = req.segments[1]
    if edge in ("feed", "posts") and method == "GET":
        return pages.read_feed(world, req, token, page)
    if edge == "feed" and method == "POST":
        return await pages.publish_feed(world, req, token, page)
    if edge == "photos" and method == "POST":
        return await media.upload_photo(world, req, token, page)
    if edge == "photos" and method == "GET":
        return media.list_photos(world, req, token, page)
    if edge == "videos" and method == "POST":
        return await media.post_video(world, req, token, page)
    if edge == "videos" and method == "GET":
        return media.list_videos(world, req, token, page, kind="video")
    if edge == "video_reels" and method == "POST":
        return await media.post_reel(world, req, token, page)
    if edge == "video_reels" and method == "GET":
        return media.list_videos(world, req, token, page, kind="reel")
    if edge in ("feed", "posts", "photos", "videos", "video_reels"):
        raise errors.unsupported_request(method, page.page_id)
    raise errors.nonexisting_field(edge, "Page")

"""Graph's batch requests: ``POST /`` with ``batch``, a JSON array of up to 50 calls.

Meta: https://developers.facebook.com/docs/graph-api/batch-requests (docs/sandbox.md).

The batch call carries ``batch``, ``access_token`` (required even when every
item has its own), that token's ``appsecret_proof``/``appsecret_time`` and
``include_headers`` (default true; false leaves ``headers`` out of every
element). Before any item runs, the whole request fails with a Graph error
when it has no token (100), no ``batch``, one that is not a JSON array, empty or
longer than :data:`MAX_ITEMS` (100), or when the top-level token or its proof
fails as it would on a single call (190, 100).

An item is ``{"method", "relative_url", "body"?}``: ``method`` GET, POST or
DELETE; ``relative_url`` a path with an optional version prefix and query;
``body`` a form-encoded string (its values win over the query's). Optional:
``headers`` (``[{"name", "value"}]``, the item's request headers) and
``attached_files`` (comma-separated names of multipart files of the batch
call; the first is also the item's ``source``). An item with its own
``access_token`` (query, body or ``Authorization`` header) needs that token's
proof in the item too; an item without one runs with the top-level token and
the top-level proof. ``name``, ``depends_on``, ``omit_response_on_success`` and
JSONPath references (``{result=…}``) are not simulated: such an item fails on
its own with (#100), as does an item of the wrong shape.

Each item goes through the path of a single call (``answer`` of
:mod:`.graph_routes`): the faults matching its own path, method and parameters,
its token and proof, metering (it counts as one call and is throttled on its
own), its handler. Its element is ``{"code", "headers", "body"}``, ``body``
the reply as a JSON string, or ``null`` when a fault lost its reply (a call
Graph did not finish within the batch). Items run one after the other, in
order; ``publish_latency_ms`` is waited once per batch
(:func:`.pages.publish_latency`). The batch call itself counts against no
budget; its reply carries the usage after the last item (:func:`.auth.batch_usage`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from offpost.graph.sandbox import errors
from offpost.graph.sandbox.auth import authenticate, batch_usage
from offpost.graph.sandbox.calls import BatchRun, CallContext
from offpost.graph.sandbox.faults import Fault
from offpost.graph.sandbox.params import GraphRequest, Upload, parse_bool
from offpost.graph.sandbox.replies import Reply, error_reply
from offpost.graph.sandbox.state import TokenKind, World

#: Graph runs at most this many calls in one batch (Meta: Batch Requests, "Limitations").
MAX_ITEMS = 50
METHODS = ("GET", "POST", "DELETE")
#: Item keys of Graph's dependent calls, which the sandbox does not simulate.
UNSUPPORTED_KEYS = ("name", "depends_on", "omit_response_on_success")
_PROOF_PARAMS = ("appsecret_proof", "appsecret_time")
_VERSION_RE = re.compile(r"^/(v\d+\.\d+)(/.*)?$")
_HEADER_NAMES = {
    "content-type": "Content-Type",
    "x-app-usage": "X-App-Usage",
    "x-business-use-case-usage": "X-Business-Use-Case-Usage",
    "x-page-usage": "X-Page-Usage",
    "www-authenticate": "WWW-Authenticate",
}

#: How one call is answered: ``answer`` of :mod:`.graph_routes`, passed in by it.
Answer = Callable[[World, GraphRequest], Awaitable[Reply]]


@dataclass(eq=False)
class Item:
    """One element of ``batch`` read as a call: what a single call gets from HTTP."""

    method: str
    graph_path: str
    version: str | None
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()


def is_batch(req: GraphRequest) -> bool:
    """Whether this call is a batch request (an item of one never is)."""
    return not req.segments and req.method == "POST" and req.ctx.batch_index is None


async def run(world: World, req: GraphRequest, answer: Answer) -> list[dict[str, Any] | None]:
    """Run every item of the batch in order: one element per item, ``None`` for a lost one.

    Raises the :class:`~.errors.GraphError` that fails the whole request, before
    any item runs.
    """
    ctx = req.ctx
    with world.lock:
        ctx.batch = batch_run = world.calls.new_batch()
    token_value = req.token_value
    if not token_value:
        raise errors.missing_param("access_token")
    raw_items = parse_batch(req.params.get("batch"))
    token = authenticate(world, token_value, req.params, ctx)
    include_headers = parse_bool(req.params.get("include_headers"), default=True)
    default_version = world.settings.api_version
    elements: list[dict[str, Any] | None] = []
    apps = [token.app_id] if token.kind is not TokenKind.PAGE else []
    pages: list[str] = []
    for index, raw in enumerate(raw_items):
        item_ctx, reply = await _run_item(world, req, batch_run, index, raw, answer)
        if item_ctx.app_id and item_ctx.token_type in (TokenKind.USER, TokenKind.APP):
            apps.append(item_ctx.app_id)
        if item_ctx.page_id:
            pages.append(item_ctx.page_id)
        elements.append(
            None if reply.dropped else element(reply, item_ctx, include_headers, default_version)
        )
    if token.kind is TokenKind.PAGE and token.page_id:
        pages.append(token.page_id)
    batch_usage(world, ctx, apps, pages)
    return elements


def parse_batch(raw: str | None) -> list[Any]:
    """The items of ``batch``; raises the (#100) that fails the whole request."""
    if not raw:
        raise errors.missing_param("batch")
    try:
        items = json.loads(raw)
    except ValueError:
        raise errors.invalid_param("The batch parameter must be a JSON array") from None
    if not isinstance(items, list):
        raise errors.invalid_param("The batch parameter must be a JSON array")
    if not items:
        raise errors.invalid_param("The batch parameter must hold at least one request")
    if len(items) > MAX_ITEMS:
        raise errors.invalid_param(
            f"Too many requests in batch message. Maximum batch size is {MAX_ITEMS}"
        )
    return items


def parse_item(raw: Any, uploads: dict[str, Upload]) -> Item:
    """Read one element of ``batch``; raises the (#100) that fails this item alone."""
    if not isinstance(raw, dict):
        raise errors.invalid_param("Each request of a batch must be a JSON object")
    for key in UNSUPPORTED_KEYS:
        if key in raw:
            raise errors.invalid_param(f"The sandbox does not simulate {key} in batch requests")
    method = raw.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise errors.invalid_param("A batch request's method must be GET, POST or DELETE")
    relative_url, body = raw.get("relative_url"), raw.get("body", "")
    if not isinstance(relative_url, str) or not relative_url.strip("/"):
        raise errors.missing_param("relative_url")
    if not isinstance(body, str):
        raise errors.invalid_param("A batch request's body must be a form-encoded string")
    if "{result=" in relative_url or "{result=" in body:
        raise errors.invalid_param("The sandbox does not simulate JSONPath references in batches")
    raw_path, _, raw_query = relative_url.partition("?")
    path = "/" + unquote(raw_path).lstrip("/")
    match = _VERSION_RE.match(path)
    version, graph_path = (match.group(1), match.group(2) or "/") if match else (None, path)
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    return Item(
        method=method.upper(),
        graph_path=graph_path,
        version=version,
        params={**query, **dict(parse_qsl(body, keep_blank_values=True))},
        query=query,
        headers=_request_headers(raw.get("headers")),
        files=_attached_files(raw.get("attached_files"), uploads),
    )


def _request_headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list) or not all(
        isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str)
        for h in raw
    ):
        raise errors.invalid_param("A batch request's headers must be a list of {name, value}")
    return {h["name"].lower(): h["value"] for h in raw}


def _attached_files(raw: Any, uploads: dict[str, Upload]) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = tuple(name.strip() for name in raw.split(",")) if isinstance(raw, str) else ()
    missing = [name for name in names if name not in uploads]
    if not names or missing:
        raise errors.invalid_param(
            "attached_files must name files sent with the batch request"
            + (f": {missing[0]} was not sent" if missing else "")
        )
    return names


async def _run_item(
    world: World, batch_req: GraphRequest, run_: BatchRun, index: int, raw: Any, answer: Answer
) -> tuple[CallContext, Reply]:
    """One item through the single-call path, logged as a call of its own."""
    method, path = _described(raw)
    ctx = CallContext(
        method=method,
        path=path,
        graph_path=path,
        version=None,
        started_at=time.perf_counter(),
        batch=run_,
        batch_index=index,
    )
    try:
        item = parse_item(raw, batch_req.uploads)
    except errors.GraphError as exc:
        reply = error_reply(exc)
    else:
        reply = await answer(world, _item_request(batch_req, item, ctx))
    ctx.drop = reply.dropped
    with world.lock:
        world.calls.record(
            ctx,
            status=None if reply.dropped else reply.status,
            now=world.now(),
            duration_ms=(time.perf_counter() - ctx.started_at) * 1000,
        )
    return ctx, reply


def _described(raw: Any) -> tuple[str, str]:
    """(method, path) of an item as far as they can be read: what the call log shows
    of an item too malformed to run."""
    if not isinstance(raw, dict):
        return "?", "?"
    method, relative_url = raw.get("method", "GET"), raw.get("relative_url")
    return (
        method.upper() if isinstance(method, str) else "?",
        "/" + relative_url.partition("?")[0].lstrip("/") if isinstance(relative_url, str) else "?",
    )


def _item_request(batch_req: GraphRequest, item: Item, ctx: CallContext) -> GraphRequest:
    """The item as a call: its own token and proof, or the batch call's."""
    version = item.version or batch_req.version
    ctx.version = version
    ctx.graph_path = item.graph_path
    ctx.path = f"/{version}{item.graph_path}" if version else item.graph_path
    params = dict(item.params)
    header_token = _bearer(item.headers.get("authorization", ""))
    if "access_token" not in params and header_token is None:
        params["access_token"] = batch_req.token_value or ""
        params.update({k: batch_req.params[k] for k in _PROOF_PARAMS if k in batch_req.params})
    uploads = {name: batch_req.uploads[name] for name in item.files}
    if item.files and "source" not in uploads:
        uploads["source"] = uploads[item.files[0]]
    params.update({name: upload.filename for name, upload in uploads.items()})
    return GraphRequest(
        method=item.method,
        segments=tuple(part for part in item.graph_path.split("/") if part),
        params=params,
        query=item.query,
        base_url=batch_req.base_url,
        version=version,
        ctx=ctx,
        header_token=header_token,
        uploads=uploads,
        headers=item.headers,
    )


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return (token.strip() or None) if scheme.lower() in ("oauth", "bearer") else None


def element(
    reply: Reply, ctx: CallContext, include_headers: bool, default_version: str
) -> dict[str, Any]:
    """The item's ``{"code", "headers", "body"}``, ``body`` its reply as a string."""
    answer: dict[str, Any] = {"code": reply.status}
    if include_headers:
        headers = _reply_headers(reply, ctx, ctx.version or default_version)
        answer["headers"] = [{"name": name, "value": value} for name, value in headers]
    answer["body"] = reply.body.decode("utf-8", errors="replace")
    return answer


def _reply_headers(reply: Reply, ctx: CallContext, version: str) -> list[tuple[str, str]]:
    """What a single call's reply would carry: type, version, usage, the fault's headers."""
    headers = [
        ("content-type", reply.media_type),
        ("facebook-api-version", version),
        *((name.decode("latin-1"), value.decode("latin-1")) for name, value in ctx.headers),
        *reply.headers.items(),
    ]
    headers = _with_fault_headers(headers, ctx.fault)
    return [(_HEADER_NAMES.get(name.lower(), name), value) for name, value in headers]


def _with_fault_headers(
    headers: list[tuple[str, str]], fault: Fault | None
) -> list[tuple[str, str]]:
    if fault is None or not fault.headers:
        return headers
    replaced = {name.lower() for name in fault.headers}
    kept = [(name, value) for name, value in headers if name.lower() not in replaced]
    return kept + list(fault.headers.items())

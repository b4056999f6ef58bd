"""The sandbox's ASGI application: :func:`create_sandbox_app`.

A thin raw-ASGI layer (:class:`SandboxApp`) sits outside FastAPI and owns what
needs the connection itself:

- it strips any ``/vNN.N`` prefix (``/v26.0/me``, ``/v3.1/me`` and ``/me`` are
  the same call) and answers the ``facebook-api-version`` header (the version
  asked for, else ``settings.api_version``);
- it adds the usage headers the routes computed;
- it records every Graph call in the call log once its reply starts;
- it drops the connection for ``drop_response`` faults: no HTTP response at
  all, so the client sees a transport error (e.g. ``httpx.RemoteProtocolError``),
  not a 5xx; ``reset_connection`` faults do the same with a TCP RST
  (``ECONNRESET`` on the client's side);
- it shapes the replies of faults with ``headers`` (set on the reply, replacing
  the sandbox's own), ``truncate_bytes`` (the body cut off under a full
  ``Content-Length``, then the connection closed) and ``drip_ms`` (the body
  trickled out a few bytes at a time).

Under uvicorn the ASGI ``send`` callable is a bound method of the connection's
request cycle, whose ``transport`` the sandbox closes; under a server without
that (e.g. httpx's in-process ``ASGITransport``) dropping or cutting a reply
raises :class:`DroppedResponseError` instead, which such transports pass to the
client.

``/_sandbox/`` routes pass straight to FastAPI and are not logged.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from offpost.errors import OffpostError
from offpost.graph.sandbox.calls import CallContext
from offpost.graph.sandbox.control_routes import CONTROL_PREFIX, router
from offpost.graph.sandbox.faults import Fault
from offpost.graph.sandbox.graph_routes import CONTEXT_KEY, graph_endpoint
from offpost.graph.sandbox.settings import SandboxSettings
from offpost.graph.sandbox.state import World, random_app_id, random_app_secret

_VERSION_RE = re.compile(r"^/(v\d+\.\d+)(/.*)?$")
#: Internal mount point of the Graph catch-all route (never seen by clients).
_GRAPH_MOUNT = "/_graph"


class DroppedResponseError(OffpostError):
    """A ``drop_response`` fault fired on a server whose connection the sandbox cannot reach."""


def _connection(send: Send) -> tuple[Any, asyncio.WriteTransport]:
    """The server's request cycle behind ``send`` and its transport."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if not isinstance(transport, asyncio.WriteTransport):
        raise DroppedResponseError("the sandbox dropped this response (connection fault)")
    return cycle, transport


async def _until_disconnected(cycle: Any) -> None:
    # Let the protocol see the loss, so the server does not answer a 500 on our behalf.
    for _ in range(20):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


async def drop_connection(send: Send, *, reset: bool = False) -> None:
    """Close the client connection behind ``send`` without writing any response.

    With ``reset`` the close is a TCP RST (``SO_LINGER`` of zero), not a FIN.
    """
    cycle, transport = _connection(send)
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await _until_disconnected(cycle)


async def cut_connection(send: Send) -> None:
    """Close the connection behind ``send`` once what was written is flushed."""
    cycle, transport = _connection(send)
    transport.close()
    await _until_disconnected(cycle)


def _gone(send: Send) -> bool:
    return bool(getattr(getattr(send, "__self__", None), "disconnected", False))


def _with_fault_headers(
    headers: list[tuple[bytes, bytes]], extra: dict[str, str]
) -> list[tuple[bytes, bytes]]:
    """``headers`` with each of ``extra`` set, replacing any header of the same name."""
    replaced = {name.lower().encode("latin-1") for name in extra}
    kept = [(name, value) for name, value in headers if name.lower() not in replaced]
    return kept + [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()
    ]


async def _send_mangled(send: Send, message: Message, fault: Fault, sent_bytes: int) -> bool:
    """Send one body message cut off and/or trickled out as ``fault`` says; True once cut."""
    body: bytes = message.get("body", b"")
    more_body: bool = message.get("more_body", False)
    cut = fault.truncate_bytes is not None and sent_bytes + len(body) > fault.truncate_bytes
    if cut:
        assert fault.truncate_bytes is not None
        body = body[: max(0, fault.truncate_bytes - sent_bytes)]
    step = fault.drip_bytes if fault.drip_ms else max(1, len(body))
    for start in range(0, len(body), step):
        if _gone(send):
            return True
        await send(
            {"type": "http.response.body", "body": body[start : start + step], "more_body": True}
        )
        if fault.drip_ms:
            await asyncio.sleep(fault.drip_ms / 1000)
    if cut:
        # Content-Length promised more: the client sees the reply end early.
        await cut_connection(send)
        return True
    await send({"type": "http.response.body", "body": b"", "more_body": more_body})
    return False


class SandboxApp:
    """The ASGI callable; ``world`` is its state, ``app_id``/``app_secret`` its own app."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.app_id = world.default_app_id
        self.app_secret = world.apps[world.default_app_id].app_secret
        inner = FastAPI(
            title="offpost Graph sandbox",
            openapi_url=f"{CONTROL_PREFIX}/openapi.json",
            docs_url=f"{CONTROL_PREFIX}/docs",
            redoc_url=None,
        )
        inner.state.world = world
        inner.include_router(router)
        inner.add_api_route(
            _GRAPH_MOUNT + "/{path:path}",
            graph_endpoint,
            methods=["GET", "POST", "DELETE"],
            include_in_schema=False,
        )
        self._inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path == CONTROL_PREFIX
            or path.startswith(CONTROL_PREFIX + "/")
        ):
            await self._inner(scope, receive, send)
            return
        match = _VERSION_RE.match(path)
        version, graph_path = (match.group(1), match.group(2) or "/") if match else (None, path)
        ctx = CallContext(
            method=scope["method"],
            path=path,
            graph_path=graph_path,
            version=version,
            started_at=time.perf_counter(),
        )
        inner_path = _GRAPH_MOUNT + graph_path
        inner_scope = {
            **scope,
            "path": inner_path,
            "raw_path": inner_path.encode(),
            CONTEXT_KEY: ctx,
        }
        version_header = (version or self.world.settings.api_version).encode()
        dropped = False
        sent_bytes = 0

        async def send_reply(message: Message) -> None:
            nonlocal dropped, sent_bytes
            if dropped:
                return
            fault = ctx.fault
            if message["type"] == "http.response.start":
                self._record(ctx, None if ctx.drop else int(message["status"]))
                if ctx.drop:
                    dropped = True
                    await drop_connection(send, reset=fault is not None and fault.reset_connection)
                    return
                headers = [
                    *message.get("headers", []),
                    (b"facebook-api-version", version_header),
                    *ctx.headers,
                ]
                if fault is not None and fault.headers:
                    headers = _with_fault_headers(headers, fault.headers)
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and fault and fault.mangles_body:
                dropped = await _send_mangled(send, message, fault, sent_bytes)
                sent_bytes += len(message.get("body", b""))
                return
            await send(message)

        await self._inner(inner_scope, receive, send_reply)

    def _record(self, ctx: CallContext, status: int | None) -> None:
        with self.world.lock:
            self.world.calls.record(
                ctx,
                status=status,
                now=self.world.now(),
                duration_ms=(time.perf_counter() - ctx.started_at) * 1000,
            )


def create_sandbox_app(
    app_id: str | None = None,
    app_secret: str | None = None,
    *,
    settings: SandboxSettings | Mapping[str, Any] | None = None,
) -> SandboxApp:
    """A fresh sandbox whose own app is ``app_id``/``app_secret`` (random when ``None``).

    ``settings`` overrides the defaults of :class:`SandboxSettings`; ``POST
    /_sandbox/reset`` returns to them.
    """
    if settings is not None and not isinstance(settings, SandboxSettings):
        settings = SandboxSettings.model_validate(dict(settings))
    world = World(app_id or random_app_id(), app_secret or random_app_secret(), settings)
    return SandboxApp(world)

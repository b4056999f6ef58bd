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
  not a 5xx. Under uvicorn the ASGI ``send`` callable is a bound method of the
  connection's request cycle, whose ``transport`` is closed; under a server
  without that (e.g. httpx's in-process ``ASGITransport``) the call raises
  :class:`DroppedResponseError` instead, which such transports pass to the client.

``/_sandbox/`` routes pass straight to FastAPI and are not logged.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from offpost.errors import OffpostError
from offpost.graph.sandbox.calls import CallContext
from offpost.graph.sandbox.control_routes import CONTROL_PREFIX, router
from offpost.graph.sandbox.graph_routes import CONTEXT_KEY, graph_endpoint
from offpost.graph.sandbox.settings import SandboxSettings
from offpost.graph.sandbox.state import World, random_app_id, random_app_secret

_VERSION_RE = re.compile(r"^/(v\d+\.\d+)(/.*)?$")
#: Internal mount point of the Graph catch-all route (never seen by clients).
_GRAPH_MOUNT = "/_graph"


class DroppedResponseError(OffpostError):
    """A ``drop_response`` fault fired on a server whose connection the sandbox cannot reach."""


async def drop_connection(send: Send) -> None:
    """Close the client connection behind ``send`` without writing any response."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if not isinstance(transport, asyncio.WriteTransport):
        raise DroppedResponseError("the sandbox dropped this response (drop_response fault)")
    transport.abort()
    # Let the protocol see the loss, so the server does not answer a 500 on our behalf.
    for _ in range(20):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


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

        async def send_reply(message: Message) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] == "http.response.start":
                self._record(ctx, None if ctx.drop else int(message["status"]))
                if ctx.drop:
                    dropped = True
                    await drop_connection(send)
                    return
                headers = [
                    *message.get("headers", []),
                    (b"facebook-api-version", version_header),
                    *ctx.headers,
                ]
                message = {**message, "headers": headers}
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

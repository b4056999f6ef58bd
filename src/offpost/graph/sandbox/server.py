"""Running the sandbox: :func:`serve` for ``offpost sandbox``, :func:`running_sandbox` for tests.

Both run uvicorn with its access log off (access lines carry query strings,
and Graph query strings carry tokens) and a filter on uvicorn's loggers that
scrubs anything token-shaped from what they still log.

:func:`serve` stops cleanly on SIGINT or SIGTERM and then returns normally, so
the CLI exits 0 (uvicorn's own handling would re-raise the signal afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn

from offpost.errors import OffpostError
from offpost.graph.sandbox.app import SandboxApp, create_sandbox_app
from offpost.graph.sandbox.settings import SandboxSettings
from offpost.graph.sandbox.state import World

_TOKEN_RE = re.compile(
    r"(EAA[A-Za-z0-9]{20,})|((?:access_token|input_token|fb_exchange_token|client_secret|code)=)[^&\s\"']+"
)
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class SandboxStartError(OffpostError):
    """The sandbox server did not come up (port taken, startup timeout)."""


class _ScrubTokens(logging.Filter):
    """Replace token-shaped text in log records with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _TOKEN_RE.sub(lambda m: (m.group(2) or "") + "***", message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_SCRUBBER = _ScrubTokens()


def _install_scrubber() -> None:
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)


class StoppableServer(uvicorn.Server):
    """uvicorn's server, but a signal only asks it to stop: nothing is re-raised afterwards."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self._stop) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: object) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def _config(app: SandboxApp, host: str, port: int) -> uvicorn.Config:
    _install_scrubber()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )


def _bound_url(server: uvicorn.Server, host: str, port: int) -> str:
    bound = [sock for listener in getattr(server, "servers", []) for sock in listener.sockets]
    if bound:  # the real port when asked for port 0
        port = int(bound[0].getsockname()[1])
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    app_id: str | None = None,
    app_secret: str | None = None,
    announce: Callable[[str], Any] = print,
    settings: SandboxSettings | Mapping[str, Any] | None = None,
) -> None:
    """Run the sandbox in the foreground until SIGINT/SIGTERM; then return.

    Announces, once it listens, its URL and app id — and the app secret when
    it generated one (a given secret is never printed).
    """
    app = create_sandbox_app(app_id, app_secret, settings=settings)
    server = StoppableServer(_config(app, host, port))

    async def announce_when_listening() -> None:
        while not server.started:
            await asyncio.sleep(0.02)
        announce(f"Graph sandbox listening on {_bound_url(server, host, port)}")
        announce(f"sandbox app id: {app.app_id}")
        if app_secret is None:
            announce(f"sandbox app secret (generated): {app.app_secret}")
        announce("stop it with Ctrl-C")

    async def run() -> None:
        announcer = asyncio.create_task(announce_when_listening())
        try:
            await server.serve()
        finally:
            announcer.cancel()

    try:
        asyncio.run(run())
    except SystemExit:  # uvicorn exits when it cannot bind; say so in one line instead
        if server.started:
            raise
    if not server.started:
        raise SandboxStartError(f"the Graph sandbox could not listen on {host}:{port}")


@dataclass(frozen=True)
class RunningSandbox:
    """A sandbox serving in a background thread."""

    #: Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash, no version).
    url: str
    app_id: str
    app_secret: str
    #: The ASGI app; ``app.world`` is the in-process state (lock it to touch it).
    app: SandboxApp

    @property
    def world(self) -> World:
        return self.app.world


@contextlib.contextmanager
def running_sandbox(
    app_id: str | None = None,
    app_secret: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    settings: SandboxSettings | Mapping[str, Any] | None = None,
    startup_timeout_s: float = 10.0,
) -> Iterator[RunningSandbox]:
    """Serve a fresh sandbox on ``host`` (a free port unless ``port`` is given) while inside.

    Raises :class:`SandboxStartError` when it does not come up within
    ``startup_timeout_s``; on exit it stops the server and joins its thread.
    """
    app = create_sandbox_app(app_id, app_secret, settings=settings)
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say TCP,
    # and without it every reply waits ~40 ms for a delayed ACK (Nagle).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = StoppableServer(_config(app, host, sock.getsockname()[1]))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="graph-sandbox", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise SandboxStartError("the Graph sandbox server thread stopped during startup")
            if time.monotonic() > deadline:
                raise SandboxStartError("the Graph sandbox did not start in time")
            time.sleep(0.01)
        yield RunningSandbox(
            url=_bound_url(server, host, sock.getsockname()[1]),
            app_id=app.app_id,
            app_secret=app.app_secret,
            app=app,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

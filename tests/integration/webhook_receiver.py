"""A real HTTP receiver for webhook tests: a threaded ``http.server`` on 127.0.0.1.

It answers the statuses it is given, in order (then 200), and records every
request: headers, exact body bytes, and when it came.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    def signed_by(self, secret: str, tolerance_s: float = 300) -> bool:
        """The documented check (docs/webhooks.md), against this request."""
        fields = dict(p.split("=", 1) for p in self.headers["offpost-signature"].split(","))
        timestamp = int(fields["t"])
        if abs(time.time() - timestamp) > tolerance_s:
            return False
        expected = hmac.new(
            secret.encode(), str(timestamp).encode() + b"." + self.body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(expected, fields["v1"])


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.statuses: list[int] = []
        self.url = ""

    def answer(self, *statuses: int) -> None:
        """The next requests get these statuses, in order; 200 afterwards."""
        with self.lock:
            self.statuses = list(statuses)

    def received(self, event_type: str | None = None) -> list[Received]:
        with self.lock:
            got = list(self.requests)
        if event_type is None:
            return got
        return [r for r in got if r.event["type"] == event_type]

    def _next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status = receiver._next_status()
            with receiver.lock:
                receiver.requests.append(
                    Received(
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        at=time.monotonic(),
                    )
                )
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def dripping_receiver(byte_every_s: float = 0.2) -> Iterator[str]:
    """A receiver that reads the request, then answers one byte every ``byte_every_s``
    and never finishes: every read succeeds within any per-read timeout. Its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: "):
                    if stop.wait(byte_every_s):
                        return
                    conn.sendall(bytes([byte]))

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    finally:
        stop.set()
        thread.join(5)
        server.close()

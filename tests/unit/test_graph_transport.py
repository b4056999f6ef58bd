"""The per-thread connection pools of a worker's Graph client, over real sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from offpost.graph.client import PerThreadTransport, make_http_client


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Graph does
    peers: list[int] = []

    def do_GET(self) -> None:
        self.peers.append(self.client_address[1])
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    peers: list[int] = []
    handler = type("Handler", (_Echo,), {"peers": peers})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", peers
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_each_thread_keeps_one_connection_of_its_own(server: tuple[str, list[int]]) -> None:
    url, peers = server
    http = make_http_client(5.0, per_thread=True)
    assert isinstance(http._transport, PerThreadTransport)
    calls_per_thread = 5
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def calls() -> None:
        try:
            barrier.wait(timeout=5)
            for _ in range(calls_per_thread):
                assert http.get(url).json() == {"ok": True}
        except BaseException as exc:  # noqa: BLE001 - reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=calls) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # A pool per thread, each holding the one connection its thread kept using.
    pools = [t._pool for t in http._transport._transports]
    assert len(pools) == 3
    assert all(len(pool.connections) == 1 for pool in pools)
    http.close()

    assert errors == []
    assert len(peers) == 3 * calls_per_thread
    # Three threads, three connections, each reused for all of its thread's calls.
    assert len(set(peers)) == 3
    assert sorted(peers.count(port) for port in set(peers)) == [calls_per_thread] * 3


def test_close_closes_every_threads_pool(server: tuple[str, list[int]]) -> None:
    url, peers = server
    transport = PerThreadTransport()
    http = make_http_client(5.0, transport=transport)
    threads = [threading.Thread(target=lambda: http.get(url)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    pools = [t._pool for t in transport._transports]
    assert len(pools) == 2
    assert all(len(pool.connections) == 1 for pool in pools)
    http.close()
    assert transport._transports == []
    assert all(pool.connections == [] for pool in pools)
    assert len(peers) == 2

"""One deadline for a whole HTTP exchange, from connecting to the last byte.

httpx's timeouts bound each step (connecting, each read, each write), not the
exchange: a receiver that answers one byte a second never trips a ten-second
read timeout and holds the caller for as long as it likes. Webhook deliveries run
on workers other clients depend on, so each one must end by a deadline.

:func:`deadline_client` returns an ``httpx.Client`` whose connections go through a
network backend that gives every connect, read, write and TLS handshake only the
time left until the deadline of the exchange in progress on this thread (set with
:func:`until`), and raises a timeout once it has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx


class _Deadline(threading.local):
    #: ``time.monotonic()`` by which the exchange on this thread must be over.
    at: float | None = None


_DEADLINE = _Deadline()


@contextmanager
def until(seconds: float) -> Iterator[None]:
    """Everything sent or read on this thread inside the block ends within ``seconds``."""
    _DEADLINE.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _DEADLINE.at = None


def _left(timeout: float | None) -> float | None:
    """The step's timeout, cut to what is left of the deadline."""
    at = _DEADLINE.at
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the exchange's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _left(timeout), local_address, socket_options)
        return _Stream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_client(**kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` (``kwargs`` as for it) whose exchanges keep :func:`until`'s deadline."""
    transport = httpx.HTTPTransport(limits=kwargs.pop("limits", httpx.Limits()))
    # httpx builds its pool with the default backend and offers no parameter for
    # another; the pool hands its backend to every connection it opens.
    transport._pool._network_backend = _Backend()
    return httpx.Client(transport=transport, **kwargs)

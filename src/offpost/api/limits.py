"""Request limits: a body-size cap (413) and fixed-window rate limits (429).

The rate limiter counts per key in fixed windows. :class:`MemoryRateLimiter`
serves one process (the embedded ``up`` mode); :class:`RedisRateLimiter` shares
the counts between every API replica of a distributed deployment, so N replicas
do not multiply a client's allowance.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import redis

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimiter(Protocol):
    """Counts hits per key; answers how long to wait when the limit is reached."""

    def hit(self, key: str, limit: int, window_s: int) -> float | None:
        """Count one hit; return None when allowed, else seconds until the window resets."""

    def blocked(self, key: str, limit: int, window_s: int) -> float | None:
        """Without counting: None while under the limit, else seconds until the window resets."""

    def close(self) -> None:
        """Let go of any connection (the app's lifespan ends)."""


class MemoryRateLimiter:
    """Fixed windows in this process's memory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def hit(self, key: str, limit: int, window_s: int) -> float | None:
        now = self._clock()
        window = int(now // window_s)
        with self._lock:
            start, count = self._windows.get(key, (window, 0))
            if start != window:
                start, count = window, 0
            count += 1
            self._windows[key] = (start, count)
            if len(self._windows) > 100_000:
                # Forget finished windows so that a flood of keys cannot grow memory forever.
                self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        if count <= limit:
            return None
        return (window + 1) * window_s - now

    def blocked(self, key: str, limit: int, window_s: int) -> float | None:
        now = self._clock()
        window = int(now // window_s)
        with self._lock:
            start, count = self._windows.get(key, (window, 0))
        # Blocked once the budget is spent, not one failure later: after ``limit``
        # failures even a right key is refused, as the rule says.
        if start != window or count < limit:
            return None
        return (window + 1) * window_s - now

    def close(self) -> None:
        pass


class RedisRateLimiter:
    """Fixed windows in Redis, shared by every API process."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock

    def hit(self, key: str, limit: int, window_s: int) -> float | None:
        now = self._clock()
        window = int(now // window_s)
        name = f"offpost:ratelimit:{key}:{window}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, window_s + 1)
        count = int(pipe.execute()[0])
        if count <= limit:
            return None
        return (window + 1) * window_s - now

    def blocked(self, key: str, limit: int, window_s: int) -> float | None:
        now = self._clock()
        window = int(now // window_s)
        count = int(self._redis.get(f"offpost:ratelimit:{key}:{window}") or 0)
        if count < limit:
            return None
        return (window + 1) * window_s - now

    def close(self) -> None:
        self._redis.close()


def retry_after_header(wait_s: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}


class BodyLimitMiddleware:
    """Answer 413 when a request body exceeds its limit, without reading it all.

    ``limits`` maps a path to its own cap; every other path gets ``default_bytes``.
    A path for which ``streamed`` is true goes through unread: its route streams
    the body and caps it itself (media uploads, up to gigabytes).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_bytes: int,
        limits: dict[str, int] | None = None,
        streamed: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.limits = limits or {}
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.streamed is not None and self.streamed(scope["path"])):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_413(send, limit)
                return
        # Read the body up to the limit before the app sees it: an app that fails
        # half-way through reading would answer 500 instead of 413.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _send_413(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await self.app(
            scope,
            _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that yields ``messages`` first, then defers to ``then`` (disconnects)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "https://offpost.dev/problems/payload_too_large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"the request body is larger than {limit} bytes",
            "code": "payload_too_large",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Request limits: a body-size cap (413) and fixed-window rate limits (429).

The rate limiter counts per key in fixed windows. :class:`MemoryRateLimiter`
serves one process (the embedded ``up`` mode); :class:`RedisRateLimiter` shares
the counts between every API replica of a distributed deployment, so N replicas
do not multiply a client's allowance.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
import redis
import redis.asyncio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: How long a key that worked from an address stays "proven" there (a clock hour).
PROVEN_WINDOW_S = 3600
#: The window of an address's failed authentications and of a client's requests.
MINUTE_S = 60


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """What one authentication counts, judged by :meth:`RateLimiter.check_key` at once.

    ``failures`` names the address's failed authentications (at most
    ``failure_limit`` a minute); ``proven`` names "this key worked from this
    address" (``None`` without a key, or for one too long to be one); ``good`` says whether the
    key named a client that may call; ``client`` names that client's request
    count and ``client_limit`` its requests per minute (``None``: not counted,
    the dashboard's sign-in).
    """

    failures: str
    failure_limit: int
    proven: str | None
    good: bool
    client: str | None = None
    client_limit: int = 0


class KeyVerdict(enum.Enum):
    """:meth:`RateLimiter.check_key`'s answer."""

    #: A good key, counted against its client's requests per minute.
    ACCEPTED = "accepted"
    #: A bad key, counted against the address.
    BAD_KEY = "bad_key"
    #: The address has spent its failures and the key is not proven there: not judged.
    ADDRESS_SLOWED = "address_slowed"
    #: A good key over its client's requests per minute.
    CLIENT_OVER_LIMIT = "client_over_limit"


class RateLimiter(Protocol):
    """Counts hits per key; answers how long to wait when the limit is reached."""

    def hit(self, key: str, limit: int, window_s: int) -> float | None:
        """Count one hit; return None when allowed, else seconds until the window resets."""

    def blocked(self, key: str, limit: int, window_s: int) -> float | None:
        """Without counting: None while under the limit, else seconds until the window resets."""

    def check_key(self, check: KeyCheck) -> tuple[KeyVerdict, float]:
        """Everything one authentication counts (:func:`judge_key`'s rule), at once;
        the verdict and, when refused, the seconds until its window resets."""

    async def check_key_async(self, check: KeyCheck) -> tuple[KeyVerdict, float]:
        """:meth:`check_key` from the event loop (in a thread when it has no async client)."""

    def close(self) -> None:
        """Let go of any connection (the app's lifespan ends)."""

    async def aclose(self) -> None:
        """Let go of the event loop's connections too."""


def judge_key(limiter: RateLimiter, check: KeyCheck) -> tuple[KeyVerdict, float]:
    """The rule of :meth:`RateLimiter.check_key`, with ``limiter``'s counts.

    Once the address has failed ``failure_limit`` times in its minute, a key is
    judged only if it already worked from this address within the hour (no
    guess is confirmed; the people sharing the address keep working). A bad
    key counts against the address; a good one marks itself proven there
    (while the address is not slowed) and counts against its client's minute.
    """
    wait_s = limiter.blocked(check.failures, check.failure_limit, MINUTE_S)
    if wait_s is not None and (
        check.proven is None or limiter.blocked(check.proven, 1, PROVEN_WINDOW_S) is None
    ):
        return KeyVerdict.ADDRESS_SLOWED, wait_s
    if not check.good:
        if wait_s is not None:  # proven once, revoked since
            return KeyVerdict.ADDRESS_SLOWED, wait_s
        over_s = limiter.hit(check.failures, check.failure_limit, MINUTE_S)
        return (KeyVerdict.ADDRESS_SLOWED, over_s) if over_s else (KeyVerdict.BAD_KEY, 0.0)
    if wait_s is None and check.proven is not None:
        limiter.hit(check.proven, 1, PROVEN_WINDOW_S)
    if check.client is not None:
        over_s = limiter.hit(check.client, check.client_limit, MINUTE_S)
        if over_s is not None:
            return KeyVerdict.CLIENT_OVER_LIMIT, over_s
    return KeyVerdict.ACCEPTED, 0.0


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

    def check_key(self, check: KeyCheck) -> tuple[KeyVerdict, float]:
        return judge_key(self, check)

    async def check_key_async(self, check: KeyCheck) -> tuple[KeyVerdict, float]:
        return judge_key(self, check)  # memory only: nothing to wait for

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


#: :func:`judge_key` in Redis: one round trip for an authentication's every count.
#: KEYS: failures, proven, client (the window's counter of each). ARGV: failure
#: limit, failure TTL, proven TTL, client limit, client TTL, then three flags
#: (1/0): proven usable, key good, client counted. Returns a KeyVerdict index.
_CHECK_KEY_SCRIPT = """
local failed = tonumber(redis.call('GET', KEYS[1]) or '0')
local slowed = failed >= tonumber(ARGV[1])
if slowed and (ARGV[6] ~= '1' or tonumber(redis.call('GET', KEYS[2]) or '0') < 1) then
  return 2
end
if ARGV[7] ~= '1' then
  if slowed then return 2 end
  local n = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  if n > tonumber(ARGV[1]) then return 2 end
  return 1
end
if not slowed and ARGV[6] == '1' then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
if ARGV[8] == '1' then
  local n = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  if n > tonumber(ARGV[4]) then return 3 end
end
return 0
"""
_VERDICTS = (
    KeyVerdict.ACCEPTED,
    KeyVerdict.BAD_KEY,
    KeyVerdict.ADDRESS_SLOWED,
    KeyVerdict.CLIENT_OVER_LIMIT,
)


def _with_wait(verdict: KeyVerdict, now: float, minute: int) -> tuple[KeyVerdict, float]:
    """The verdict and, for a refusal, the seconds until its minute ends."""
    if verdict in (KeyVerdict.ADDRESS_SLOWED, KeyVerdict.CLIENT_OVER_LIMIT):
        return verdict, (minute + 1) * MINUTE_S - now
    return verdict, 0.0


class RedisRateLimiter:
    """Fixed windows in Redis, shared by every API process."""

    def __init__(
        self,
        client: redis.Redis,
        clock: Callable[[], float] = time.time,
        *,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        """``async_client`` (the same Redis) serves :meth:`check_key_async` on the event
        loop it is first used on; without it, that runs :meth:`check_key` in a thread."""
        self._redis = client
        self._clock = clock
        self._check_key = client.register_script(_CHECK_KEY_SCRIPT)
        self._async = async_client
        self._async_check_key = (
            async_client.register_script(_CHECK_KEY_SCRIPT) if async_client is not None else None
        )
        self._async_loop: asyncio.AbstractEventLoop | None = None

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

    def check_key(self, check: KeyCheck) -> tuple[KeyVerdict, float]:
        """:func:`judge_key` as one Lua script: one round trip, the same keys and windows."""
        now, minute, keys, args = self._script_arguments(check)
        verdict = _VERDICTS[int(self._check_key(keys=keys, args=args))]
        return _with_wait(verdict, now, minute)

    def _script_arguments(self, check: KeyCheck) -> tuple[float, int, list[str], list[int]]:
        now = self._clock()
        minute = int(now // MINUTE_S)
        hour = int(now // PROVEN_WINDOW_S)
        keys = [
            f"offpost:ratelimit:{check.failures}:{minute}",
            f"offpost:ratelimit:{check.proven or ''}:{hour}",
            f"offpost:ratelimit:{check.client or ''}:{minute}",
        ]
        args = [
            check.failure_limit,
            MINUTE_S + 1,
            PROVEN_WINDOW_S + 1,
            check.client_limit,
            MINUTE_S + 1,
            int(check.proven is not None),
            int(check.good),
            int(check.client is not None),
        ]
        return now, minute, keys, args

    async def check_key_async(self, check: KeyCheck) -> tuple[KeyVerdict, float]:
        loop = asyncio.get_running_loop()
        if self._async_loop is None:
            self._async_loop = loop
        if self._async_check_key is None or loop is not self._async_loop:
            # An async client's connections belong to the loop that opened them.
            return await anyio.to_thread.run_sync(self.check_key, check)
        now, minute, keys, args = self._script_arguments(check)
        verdict = _VERDICTS[int(await self._async_check_key(keys=keys, args=args))]
        return _with_wait(verdict, now, minute)

    def close(self) -> None:
        self._redis.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()


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

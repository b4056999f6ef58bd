"""The shared rate limiter: "do not call Graph for this app / Page / user until T".

Graph says when it throttles (codes 4, 17, 32, 613, 80001… and usage headers
near 100%, docs/graph.md), and calls made while throttled extend the block, so
every worker must stop at once: the blocks live in Redis, shared by all workers
on all machines (:class:`RedisBlockStore`), or in memory for the embedded mode
(:class:`MemoryBlockStore`). A wait is not a failed attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import redis

from offpost.graph.errors import GraphRateLimitedError, RateLimitScope
from offpost.graph.usage import GraphUsage

logger = logging.getLogger(__name__)

#: Usage at or above this percentage slows the app/Page down before Graph throttles.
USAGE_HIGH_PCT = 95
#: How long to hold off when usage is high but Graph gave no time to regain access.
USAGE_HIGH_WAIT_S = 60.0
#: How long a post waits when the blocks cannot be read (Redis unreachable).
UNREACHABLE_WAIT_S = 5.0


def app_key(app_id: str) -> str:
    return f"app:{app_id}"


def page_key(page_id: str) -> str:
    return f"page:{page_id}"


def user_key(fb_user_id: str) -> str:
    return f"user:{fb_user_id}"


def keys_for_call(app_id: str, page_id: str, fb_user_id: str) -> list[str]:
    """Every block that stops a call on ``page_id`` with ``fb_user_id``'s token."""
    return [app_key(app_id), page_key(page_id), user_key(fb_user_id)]


def key_for(error: GraphRateLimitedError, *, app_id: str, page_id: str, fb_user_id: str) -> str:
    """Which limiter a throttle error speaks of."""
    if error.scope == RateLimitScope.PAGE:
        return page_key(page_id)
    if error.scope == RateLimitScope.USER:
        return user_key(fb_user_id)
    return app_key(app_id)


def usage_blocks(usage: GraphUsage, *, app_id: str, page_id: str) -> list[tuple[str, float]]:
    """Blocks to set after a successful call whose usage headers say "nearly throttled"."""
    blocks: list[tuple[str, float]] = []
    wait_s = max(usage.regain_access_s or 0.0, USAGE_HIGH_WAIT_S)
    if usage.app is not None and usage.app.max_pct >= USAGE_HIGH_PCT:
        blocks.append((app_key(app_id), wait_s))
    page = usage.for_object(page_id)
    page_pct = max(
        [usage.page.max_pct if usage.page else 0] + [entry.max_pct for entry in page],
    )
    if page_pct >= USAGE_HIGH_PCT:
        blocks.append((page_key(page_id), wait_s))
    return blocks


class BlockStore(Protocol):
    def block(self, key: str, wait_s: float) -> None:
        """Nobody calls Graph for ``key`` during the next ``wait_s`` seconds (extends only)."""

    def blocked(self, keys: Iterable[str]) -> dict[str, float]:
        """The blocked ones of ``keys``, each with its seconds to wait (one round trip)."""


def wait_s(blocks: BlockStore, keys: Iterable[str]) -> float:
    """Seconds until every one of ``keys`` is free (0 when none is blocked)."""
    return max([0.0, *blocks.blocked(keys).values()])


class MemoryBlockStore:
    """Blocks for one process (the embedded ``up`` mode)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def block(self, key: str, wait_s: float) -> None:
        until = self._clock() + wait_s
        with self._lock:
            self._until[key] = max(until, self._until.get(key, 0.0))

    def blocked(self, keys: Iterable[str]) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            waits = {k: self._until.get(k, 0.0) - now for k in keys}
        return {k: w for k, w in waits.items() if w > 0}


# Extend only: keep the later of the stored and the new deadline.
_BLOCK_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local deadline = tonumber(ARGV[1])
if deadline > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class RedisBlockStore:
    """Blocks in Redis, seen by every worker at once.

    While Redis is unreachable (a restart), a block cannot be set, and is dropped
    as the restart drops every block anyway: the outcome of the Graph call that
    asked for it must still be recorded. Nor can blocks be read: the post waits
    :data:`UNREACHABLE_WAIT_S` (no attempt spent) rather than call Graph blind.
    """

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._clock = clock
        self._script = client.register_script(_BLOCK_SCRIPT)

    def block(self, key: str, wait_s: float) -> None:
        until = self._clock() + wait_s
        ttl_ms = max(1, int(wait_s * 1000) + 1000)
        try:
            self._script(keys=[f"offpost:block:{key}"], args=[f"{until:.3f}", ttl_ms])
        except redis.RedisError as exc:
            logger.warning(
                "could not block %s for %.0f s: Redis unreachable (%s)",
                key,
                wait_s,
                type(exc).__name__,
                extra={"action": "block_dropped"},
            )

    def blocked(self, keys: Iterable[str]) -> dict[str, float]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        try:
            values = self._redis.mget([f"offpost:block:{k}" for k in unique])
        except redis.RedisError as exc:
            logger.warning(
                "rate-limit blocks unreadable: Redis unreachable (%s); waiting %.0f s",
                type(exc).__name__,
                UNREACHABLE_WAIT_S,
                extra={"action": "blocks_unreachable"},
            )
            return dict.fromkeys(unique, UNREACHABLE_WAIT_S)
        now = self._clock()
        waits = {k: float(v) - now for k, v in zip(unique, values, strict=True) if v is not None}
        return {k: w for k, w in waits.items() if w > 0}


def block_store(broker_url: str) -> BlockStore:
    """Where Graph's throttles are shared: Redis with a Redis broker, else this process."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisBlockStore(redis.Redis.from_url(broker_url, socket_timeout=5))
    return MemoryBlockStore()

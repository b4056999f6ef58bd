"""Waking the dispatcher early when a post becomes due sooner than it planned to look.

The dispatcher sleeps until the next due time (bounded). A post created for "now"
must not wait out that sleep: the API announces near due times, and every
dispatcher listening wakes. Across processes the announcement travels over Redis
pub/sub; in one process (the embedded mode) a :class:`LocalWaker` is enough.
A lost announcement costs at most one bounded sleep, never a post.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime
from typing import Protocol

import redis

CHANNEL = "offpost:wake"


class Waker(Protocol):
    def notify(self, due_at: datetime) -> None:
        """A post is due at ``due_at``; wake whoever sleeps past it."""

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True when woken early."""

    def close(self) -> None: ...


class LocalWaker:
    """Wakes a dispatcher in the same process."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self, due_at: datetime) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        woken = self._event.wait(max(0.0, timeout_s))
        self._event.clear()
        return woken

    def close(self) -> None:
        self._event.set()


class RedisWaker:
    """Wakes dispatchers in other processes and machines through Redis pub/sub."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._pubsub: redis.client.PubSub | None = None

    def notify(self, due_at: datetime) -> None:
        # On failure the dispatcher still wakes by itself within its bounded sleep.
        with contextlib.suppress(redis.RedisError):
            self._redis.publish(CHANNEL, f"{due_at.timestamp():.3f}")

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(CHANNEL)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                message = self._pubsub.get_message(timeout=remaining)
                if message is not None and message.get("type") == "message":
                    self._drain()
                    return True
        except redis.RedisError:
            self._reset()
            time.sleep(max(0.0, deadline - time.monotonic()))
            return False

    def _drain(self) -> None:
        assert self._pubsub is not None
        while self._pubsub.get_message(timeout=0) is not None:
            pass

    def _reset(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
        self._pubsub = None

    def close(self) -> None:
        self._reset()
        self._redis.close()


def make_waker(broker_url: str) -> Waker:
    """Redis pub/sub when the broker is Redis, else in-process."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisWaker(broker_url)
    return LocalWaker()

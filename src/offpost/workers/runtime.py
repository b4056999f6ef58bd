"""A worker process's resources, built once per process, after any fork.

Celery's prefork pool forks children from a parent that may already hold
connections; a child must build its own. :class:`ProcessResource` builds its
value on first use, forgets it after a fork (``reset``) and hands it over for
closing (``take``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessResource(Generic[T]):
    """A lazily built, per-process value."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        """The value, built on first use in this process."""
        with self._lock:
            if self._value is None:
                self._value = self._factory()
            return self._value

    def peek(self) -> T | None:
        """The value if it was built, without building it."""
        with self._lock:
            return self._value

    def reset(self) -> None:
        """Forget the value (a forked child must not use its parent's connections)."""
        with self._lock:
            self._value = None

    def take(self) -> T | None:
        """Forget the value and return it, for the caller to close."""
        with self._lock:
            value, self._value = self._value, None
        return value

"""Waking the dispatchers when a new post is due before they would look anyway."""

from __future__ import annotations

from datetime import datetime

from offpost.models.base import utcnow
from offpost.scheduler.wake import Waker


class DispatcherWake:
    """``app.state.wake_dispatcher``: called with each created post's due time; wakes the
    dispatchers (a Redis publish, or an in-process event) when it is soon enough to matter.

    Dispatchers sleep at most ``max_sleep_s`` between looks: a post due later is
    found in time without a nudge. :meth:`soon` lets a caller on the event loop
    skip the call (and the thread it would need for the publish) when it would
    do nothing.
    """

    def __init__(self, waker: Waker, max_sleep_s: float) -> None:
        self.waker = waker
        self.max_sleep_s = max_sleep_s

    def soon(self, due_at: datetime) -> bool:
        """Whether a post due at ``due_at`` is due before the dispatchers would look."""
        return (due_at - utcnow()).total_seconds() < self.max_sleep_s

    def __call__(self, due_at: datetime) -> None:
        if self.soon(due_at):
            self.waker.notify(due_at)

"""Rate-limit accounting: rolling-window call counters and Graph's usage headers (docs/graph.md).

Calls made with user or app tokens count against the app (``X-App-Usage``,
throttle code 4); calls that touch a Page count against that Page
(``X-Business-Use-Case-Usage`` of type ``pages`` plus the legacy
``X-Page-Usage``; throttle 80001 with a Page token, 32 with a user token).
Page-token calls do not count against the app: "if both could apply, BUC wins".

Percentages are computed from call counts only; ``total_time`` and
``total_cputime`` report the same value as ``call_count`` (the sandbox has no
CPU time to measure). Every call counts, throttled ones too, so calling while
limited keeps extending the block, as Graph documents. Not thread-safe by
itself: :class:`~offpost.graph.sandbox.state.World` calls it under its lock.
"""

from __future__ import annotations

import json
import math
from collections import deque


class UsageMeter:
    """Call timestamps per app and per Page within the rolling window."""

    def __init__(self) -> None:
        self._apps: dict[str, deque[float]] = {}
        self._pages: dict[str, deque[float]] = {}

    @staticmethod
    def _count(
        calls: dict[str, deque[float]], key: str, now: float, window_s: int, add: bool
    ) -> deque[float]:
        stamps = calls.setdefault(key, deque())
        while stamps and stamps[0] <= now - window_s:
            stamps.popleft()
        if add:
            stamps.append(now)
        return stamps

    def app_calls(self, app_id: str, now: float, window_s: int, *, add: bool) -> int:
        """Calls of the app in the window (after adding this one when ``add``)."""
        return len(self._count(self._apps, app_id, now, window_s, add))

    def page_calls(self, page_id: str, now: float, window_s: int, *, add: bool) -> int:
        """Calls on the Page in the window (after adding this one when ``add``)."""
        return len(self._count(self._pages, page_id, now, window_s, add))

    def regain_minutes(self, page_id: str, now: float, window_s: int, budget: int) -> int:
        """Minutes until a call on the Page is allowed again (0 while it is not throttled)."""
        stamps = self._pages.get(page_id)
        if not stamps or len(stamps) <= budget:
            return 0
        # The call that must leave the window for the count to drop below the budget.
        leaving = stamps[len(stamps) - budget]
        return max(1, math.ceil((leaving + window_s - now) / 60))


def percent(count: int, budget: int) -> int:
    """Whole-number percentage of the budget used (may exceed 100, as Graph's does)."""
    return (100 * count) // budget


def app_usage_header(pct: int) -> tuple[bytes, bytes]:
    body = {"call_count": pct, "total_cputime": pct, "total_time": pct}
    return b"x-app-usage", json.dumps(body).encode()


def page_usage_headers(page_id: str, pct: int, regain_minutes: int) -> list[tuple[bytes, bytes]]:
    buc = {
        page_id: [
            {
                "type": "pages",
                "call_count": pct,
                "total_cputime": pct,
                "total_time": pct,
                "estimated_time_to_regain_access": regain_minutes,
            }
        ]
    }
    legacy = {"call_count": pct, "total_cputime": pct, "total_time": pct}
    return [
        (b"x-business-use-case-usage", json.dumps(buc).encode()),
        (b"x-page-usage", json.dumps(legacy).encode()),
    ]

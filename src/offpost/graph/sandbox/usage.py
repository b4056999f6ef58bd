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

The window slides: a call stops counting ``usage_window_s`` after it was made, so
a throttled app or Page recovers call by call as its oldest calls leave the
window. ``estimated_time_to_regain_access`` is the whole minutes (rounded up)
until enough calls have left for the next one to be allowed; it is 0 only while
the next call would be. Calls answered with a throttle error because of the
budget are counted too (``throttled_total`` of ``GET /_sandbox/usage``).
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

from offpost.graph.sandbox.settings import SandboxSettings


class UsageMeter:
    """Call timestamps per app and per Page within the rolling window, and throttle counts."""

    def __init__(self) -> None:
        self._apps: dict[str, deque[float]] = {}
        self._pages: dict[str, deque[float]] = {}
        self._throttled_apps: dict[str, int] = {}
        self._throttled_pages: dict[str, int] = {}

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
        """Minutes until a call on the Page is allowed again (0 while the next one is)."""
        return _regain(
            self._count(self._pages, page_id, now, window_s, False), now, window_s, budget
        )

    def app_regain_minutes(self, app_id: str, now: float, window_s: int, budget: int) -> int:
        """Minutes until a call of the app is allowed again (0 while the next one is)."""
        return _regain(self._count(self._apps, app_id, now, window_s, False), now, window_s, budget)

    def app_throttled(self, app_id: str) -> None:
        self._throttled_apps[app_id] = self._throttled_apps.get(app_id, 0) + 1

    def page_throttled(self, page_id: str) -> None:
        self._throttled_pages[page_id] = self._throttled_pages.get(page_id, 0) + 1

    def report(self, now: float, settings: SandboxSettings) -> dict[str, Any]:
        """Every app and Page metered since the last reset: calls in the window, budget,
        percentage, the calls throttled so far and the minutes until the next is allowed."""
        window = settings.usage_window_s
        apps = {
            app_id: _entry(
                self.app_calls(app_id, now, window, add=False),
                settings.app_call_budget,
                self._throttled_apps.get(app_id, 0),
                self.app_regain_minutes(app_id, now, window, settings.app_call_budget),
            )
            for app_id in self._apps
        }
        pages = {
            page_id: _entry(
                self.page_calls(page_id, now, window, add=False),
                settings.page_budget(page_id),
                self._throttled_pages.get(page_id, 0),
                self.regain_minutes(page_id, now, window, settings.page_budget(page_id)),
            )
            for page_id in self._pages
        }
        return {"now": int(now), "window_s": window, "apps": apps, "pages": pages}


def _regain(stamps: deque[float], now: float, window_s: int, budget: int) -> int:
    if len(stamps) < budget:
        return 0
    # The next call is allowed once fewer than `budget` calls remain: this one must leave.
    leaving = stamps[len(stamps) - budget]
    return max(1, math.ceil((leaving + window_s - now) / 60))


def _entry(calls: int, budget: int, throttled: int, regain: int) -> dict[str, int]:
    return {
        "calls": calls,
        "budget": budget,
        "pct": percent(calls, budget),
        "throttled_total": throttled,
        "estimated_time_to_regain_access": regain,
    }


def percent(count: int, budget: int) -> int:
    """Whole-number percentage of the budget used (may exceed 100, as Graph's does)."""
    return (100 * count) // budget


def app_usage_header(pct: int) -> tuple[bytes, bytes]:
    body = {"call_count": pct, "total_cputime": pct, "total_time": pct}
    return b"x-app-usage", json.dumps(body).encode()


def _page_counters(pct: int, regain_minutes: int) -> dict[str, Any]:
    return {
        "type": "pages",
        "call_count": pct,
        "total_cputime": pct,
        "total_time": pct,
        "estimated_time_to_regain_access": regain_minutes,
    }


def page_usage_headers(page_id: str, pct: int, regain_minutes: int) -> list[tuple[bytes, bytes]]:
    legacy = {"call_count": pct, "total_cputime": pct, "total_time": pct}
    return [
        business_usage_header({page_id: (pct, regain_minutes)}),
        (b"x-page-usage", json.dumps(legacy).encode()),
    ]


def business_usage_header(pages: dict[str, tuple[int, int]]) -> tuple[bytes, bytes]:
    """``X-Business-Use-Case-Usage`` for several Pages: ``{page_id: (pct, regain minutes)}``."""
    buc = {page_id: [_page_counters(pct, regain)] for page_id, (pct, regain) in pages.items()}
    return b"x-business-use-case-usage", json.dumps(buc).encode()

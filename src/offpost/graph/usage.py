"""Graph's usage headers, parsed into numbers the rate limiter can act on.

Three headers report how much of an allowance has been used (GRAPH.md §8):

- ``X-App-Usage`` (app and user tokens) and the legacy ``X-Page-Usage``: a JSON
  object of whole-number percentages, ``{"call_count": 28, "total_time": 25,
  "total_cputime": 25}``; throttling may start when any of them reaches 100.
- ``X-Business-Use-Case-Usage`` (Page tokens): a JSON object keyed by business
  object id (for us, the Page id), each value a list of entries with ``type``,
  the same three percentages and ``estimated_time_to_regain_access`` in
  **minutes**.

A header that is missing or malformed is ignored: usage is advice, and a broken
header must never turn a successful call into a failure. :func:`parse_usage`
therefore never raises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

APP_USAGE_HEADER = "x-app-usage"
PAGE_USAGE_HEADER = "x-page-usage"
BUSINESS_USAGE_HEADER = "x-business-use-case-usage"


@dataclass(frozen=True, slots=True)
class UsageCounters:
    """One ``X-App-Usage``/``X-Page-Usage`` reading, in percent of the allowance."""

    call_count_pct: int | None = None
    total_time_pct: int | None = None
    total_cputime_pct: int | None = None

    @property
    def max_pct(self) -> int:
        """The highest of the three percentages (0 when none was given)."""
        return max(
            (
                p
                for p in (self.call_count_pct, self.total_time_pct, self.total_cputime_pct)
                if p is not None
            ),
            default=0,
        )


@dataclass(frozen=True, slots=True)
class BusinessUseCaseUsage:
    """One entry of ``X-Business-Use-Case-Usage`` for one business object."""

    object_id: str
    type: str | None
    call_count_pct: int | None = None
    total_time_pct: int | None = None
    total_cputime_pct: int | None = None
    regain_access_s: int = 0

    @property
    def max_pct(self) -> int:
        """The highest of the three percentages (0 when none was given)."""
        return max(
            (
                p
                for p in (self.call_count_pct, self.total_time_pct, self.total_cputime_pct)
                if p is not None
            ),
            default=0,
        )


@dataclass(frozen=True, slots=True)
class GraphUsage:
    """Everything the usage headers of one response said; empty when they said nothing."""

    app: UsageCounters | None = None
    page: UsageCounters | None = None
    business: tuple[BusinessUseCaseUsage, ...] = ()

    @property
    def max_pct(self) -> int:
        """The highest percentage across every header (0 when there were none)."""
        readings = [c.max_pct for c in (self.app, self.page) if c is not None]
        readings.extend(b.max_pct for b in self.business)
        return max(readings, default=0)

    @property
    def regain_access_s(self) -> int:
        """The longest ``estimated_time_to_regain_access`` of any BUC entry, in seconds."""
        return max((b.regain_access_s for b in self.business), default=0)

    def for_object(self, object_id: str) -> tuple[BusinessUseCaseUsage, ...]:
        """The BUC entries about one business object (a Page id)."""
        return tuple(b for b in self.business if b.object_id == object_id)


EMPTY_USAGE = GraphUsage()


def parse_usage(headers: Mapping[str, str]) -> GraphUsage:
    """Parse the usage headers of one response; malformed ones are left out, never raised."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return GraphUsage(
        app=_parse_counters(lowered.get(APP_USAGE_HEADER)),
        page=_parse_counters(lowered.get(PAGE_USAGE_HEADER)),
        business=_parse_business(lowered.get(BUSINESS_USAGE_HEADER)),
    )


def _pct(value: object) -> int | None:
    """A percentage as a whole number; fractions round up (the cautious side)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return math.ceil(value)


def _load_object(raw: str | None) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        loaded = json.loads(raw)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _parse_counters(raw: str | None) -> UsageCounters | None:
    obj = _load_object(raw)
    if obj is None:
        return None
    counters = UsageCounters(
        call_count_pct=_pct(obj.get("call_count")),
        total_time_pct=_pct(obj.get("total_time")),
        total_cputime_pct=_pct(obj.get("total_cputime")),
    )
    return None if counters == UsageCounters() else counters


def _parse_business(raw: str | None) -> tuple[BusinessUseCaseUsage, ...]:
    obj = _load_object(raw)
    if obj is None:
        return ()
    entries: list[BusinessUseCaseUsage] = []
    for object_id, items in obj.items():
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict):
                continue
            type_ = item.get("type")
            regain_min = _pct(item.get("estimated_time_to_regain_access"))
            entries.append(
                BusinessUseCaseUsage(
                    object_id=str(object_id),
                    type=type_ if isinstance(type_, str) else None,
                    call_count_pct=_pct(item.get("call_count")),
                    total_time_pct=_pct(item.get("total_time")),
                    total_cputime_pct=_pct(item.get("total_cputime")),
                    regain_access_s=(regain_min or 0) * 60,
                )
            )
    return tuple(entries)

"""Graph's usage headers, parsed into numbers the rate limiter can act on.

Three headers report how much of an allowance has been used (docs/graph.md):

- ``X-App-Usage`` (app and user tokens) and the legacy ``X-Page-Usage``: a JSON
  object of whole-number percentages, ``{"call_count": 28, "total_time": 25,
  "total_cputime": 25}``; throttling may start when any of them reaches 100.
- ``X-Business-Use-Case-Usage`` (Page tokens): a JSON object keyed by business
  object id (for us, the Page id), each value a list of entries with ``type``,
  the same three percentages and ``estimated_time_to_regain_access`` in
  **minutes**.

A header that is missing or malformed is ignored: usage is advice, and a broken
header must never turn a successful call into a failure, nor stop publishing
for good. So :func:`parse_usage` never raises, and absurd readings are tamed:
a header longer than :data:`MAX_HEADER_CHARS` is not parsed, a percentage above
:data:`MAX_PLAUSIBLE_PCT` (Graph's go a little past 100, never to millions) is
left out, and ``estimated_time_to_regain_access`` is capped at
:data:`MAX_REGAIN_ACCESS_S`, the longest window Graph counts over (24 hours).
:func:`read_usage` also says what it left out or capped, for one warning.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

APP_USAGE_HEADER = "x-app-usage"
PAGE_USAGE_HEADER = "x-page-usage"
BUSINESS_USAGE_HEADER = "x-business-use-case-usage"
USAGE_HEADERS = (APP_USAGE_HEADER, PAGE_USAGE_HEADER, BUSINESS_USAGE_HEADER)

#: Graph's usage headers are a few hundred bytes (at most 32 objects); longer is not one.
MAX_HEADER_CHARS = 16_384
#: Readings above this many percent are garbage, not a measurement.
MAX_PLAUSIBLE_PCT = 1_000
#: The longest wait a usage header can impose: Graph's longest window (Pages BUC, 24 h).
MAX_REGAIN_ACCESS_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class UsageCounters:
    """One ``X-App-Usage``/``X-Page-Usage`` reading, in percent of the allowance."""

    call_count_pct: int | None = None
    total_time_pct: int | None = None
    total_cputime_pct: int | None = None

    @property
    def max_pct(self) -> int:
        """The highest of the three percentages (0 when none was given)."""
        return _highest(self.call_count_pct, self.total_time_pct, self.total_cputime_pct)


def _highest(*percentages: int | None) -> int:
    return max((p for p in percentages if p is not None), default=0)


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
        return _highest(self.call_count_pct, self.total_time_pct, self.total_cputime_pct)


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
    return read_usage(headers)[0]


def read_usage(headers: Mapping[str, str]) -> tuple[GraphUsage, tuple[str, ...]]:
    """:func:`parse_usage`, and what it ignored or capped, one short sentence per header.

    The sentences name headers and fields, never their values.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    values = tuple(lowered.get(name) for name in USAGE_HEADERS)
    if sum(len(value) for value in values if value) <= MAX_CACHED_CHARS:
        return _read_cached(*values)
    return _read(*values)


#: Readings this long or shorter are remembered (Graph's are a few hundred bytes).
MAX_CACHED_CHARS = 2048


@functools.lru_cache(maxsize=1024)
def _read_cached(
    app: str | None, page: str | None, business: str | None
) -> tuple[GraphUsage, tuple[str, ...]]:
    """:func:`_read`, remembered: the replies of a batch request repeat the same few
    readings, and the answer is immutable."""
    return _read(app, page, business)


def _read(
    app: str | None, page: str | None, business: str | None
) -> tuple[GraphUsage, tuple[str, ...]]:
    problems: list[str] = []
    usage = GraphUsage(
        app=_parse_counters(APP_USAGE_HEADER, app, problems),
        page=_parse_counters(PAGE_USAGE_HEADER, page, problems),
        business=_parse_business(business, problems),
    )
    return usage, tuple(dict.fromkeys(problems))


class _Problems:
    """What one header got wrong; each kind of fault is reported once."""

    def __init__(self, header: str, sink: list[str]) -> None:
        self.header = header
        self.sink = sink

    def note(self, what: str) -> None:
        self.sink.append(f"{self.header}: {what}")

    def pct(self, field: str, value: object) -> int | None:
        """A percentage as a whole number; fractions round up (the cautious side)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.note(f"{field} is not a number; ignored")
            return None
        if not math.isfinite(value) or value < 0:
            self.note(f"{field} is negative or not finite; ignored")
            return None
        if value > MAX_PLAUSIBLE_PCT:
            self.note(f"{field} is above {MAX_PLAUSIBLE_PCT}%; ignored")
            return None
        return math.ceil(value)

    def regain_s(self, value: object) -> int:
        """``estimated_time_to_regain_access`` (minutes) in seconds, capped."""
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.note("estimated_time_to_regain_access is not a number; ignored")
            return 0
        if math.isnan(value) or value < 0:
            self.note("estimated_time_to_regain_access is negative or not a number; ignored")
            return 0
        if value * 60 > MAX_REGAIN_ACCESS_S:
            self.note(
                f"estimated_time_to_regain_access is above {MAX_REGAIN_ACCESS_S // 3600} hours; "
                "capped"
            )
            return MAX_REGAIN_ACCESS_S
        return math.ceil(value) * 60

    def load_object(self, raw: str | None) -> dict[str, object] | None:
        if raw is None:
            return None
        if len(raw) > MAX_HEADER_CHARS:
            self.note(f"longer than {MAX_HEADER_CHARS} characters; ignored")
            return None
        try:
            loaded = json.loads(raw)
        except (ValueError, RecursionError):
            self.note("not JSON; ignored")
            return None
        if not isinstance(loaded, dict):
            self.note("not a JSON object; ignored")
            return None
        return loaded


def _parse_counters(header: str, raw: str | None, sink: list[str]) -> UsageCounters | None:
    problems = _Problems(header, sink)
    obj = problems.load_object(raw)
    if obj is None:
        return None
    counters = UsageCounters(
        call_count_pct=problems.pct("call_count", obj.get("call_count")),
        total_time_pct=problems.pct("total_time", obj.get("total_time")),
        total_cputime_pct=problems.pct("total_cputime", obj.get("total_cputime")),
    )
    return None if counters == UsageCounters() else counters


def _parse_business(raw: str | None, sink: list[str]) -> tuple[BusinessUseCaseUsage, ...]:
    problems = _Problems(BUSINESS_USAGE_HEADER, sink)
    obj = problems.load_object(raw)
    if obj is None:
        return ()
    entries: list[BusinessUseCaseUsage] = []
    for object_id, items in obj.items():
        if not isinstance(items, list):
            problems.note("an object's usage is not a list; ignored")
            continue
        for item in items:
            if not isinstance(item, dict):
                problems.note("a usage entry is not an object; ignored")
                continue
            type_ = item.get("type")
            entries.append(
                BusinessUseCaseUsage(
                    object_id=str(object_id),
                    type=type_ if isinstance(type_, str) else None,
                    call_count_pct=problems.pct("call_count", item.get("call_count")),
                    total_time_pct=problems.pct("total_time", item.get("total_time")),
                    total_cputime_pct=problems.pct("total_cputime", item.get("total_cputime")),
                    regain_access_s=problems.regain_s(item.get("estimated_time_to_regain_access")),
                )
            )
    return tuple(entries)

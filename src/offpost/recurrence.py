"""Recurrence: when a schedule's occurrences fall, as UTC instants (pure; no I/O).

A rule is an RFC 5545 RRULE (``start_at`` is its DTSTART, in the schedule's
time zone) or a 5-field cron expression, evaluated in an IANA time zone.
:func:`parse_rule` validates one and returns a :class:`Recurrence`, whose
:meth:`~Recurrence.occurrences` yields instants in strictly increasing order.

How wall-clock time becomes instants (the OpenAPI document):

1. The rule is expanded in *naive wall-clock time* of the zone: dateutil's
   ``rrule`` with a naive DTSTART, croniter with naive datetimes. Neither
   library then does any DST arithmetic, so neither can get it wrong; 09:00
   stays 09:00 in summer and in winter.
2. Each wall time is resolved to an instant by :func:`resolve_wall_time`:

   - a time that exists once is that instant;
   - a repeated time (autumn fold) is its *first* instant (``fold=0``), so it
     is published once;
   - a time that does not exist (spring-forward gap) is the first instant
     after the gap, i.e. the transition itself: 02:30 on the Berlin
     spring-forward day is 03:00 CEST, 02:15 on Lord Howe's (a 30-minute
     shift) is 02:30 +11:00.

3. Resolution never goes backwards, so the instants are non-decreasing; equal
   neighbours (an hourly rule's 02:00 and 03:00 both land on 03:00 on
   spring-forward day) collapse into one occurrence. Instants before
   ``start_at`` or after ``end_at`` (or the RRULE's ``UNTIL``) are dropped.

Decisions beyond the RFC:

- DTSTART counts only if it matches the rule (dateutil's reading; RFC 5545
  would always count it). A schedule starting "now" with ``BYDAY=MO`` should
  not post now.
- Minute precision: ``FREQ=SECONDLY`` and ``BYSECOND`` other than ``0`` are refused. The RRULE
  is one property value (``FREQ=…;…``, an ``RRULE:`` prefix is allowed); no
  DTSTART, RDATE, EXDATE lines. COUNT with UNTIL is refused (RFC 5545 forbids it).
- ``UNTIL=…Z`` is an instant; a floating ``UNTIL`` is wall time in the zone.
- Cron is the classic five fields (minute hour day-of-month month
  day-of-week; names such as ``JAN`` and ``MON`` allowed; a restricted
  day-of-month *or* day-of-week matches, as in Vixie cron). croniter's
  extensions (``L``, ``W``, ``#``, ``?``, ``H``, seconds and year fields,
  ``@daily``) are refused.
- Zones come from the ``tzdata`` package, never from the system, so every
  machine computes the same instants.
- A search that finds no occurrence for centuries (``BYMONTH=2;BYMONTHDAY=30``)
  is cut off instead of spinning until the year 9999: such a rule has no
  occurrence, which :func:`parse_rule` refuses.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter
from dateutil import rrule as du

from offpost.errors import OffpostError

#: How many occurrences ``POST /v1/schedules/preview`` returns at most.
MAX_PREVIEW = 1000
#: The largest COUNT: a counted rule is replayed from its start at every evaluation
#: (the count depends on every occurrence before), so its work must stay bounded.
MAX_COUNT = 10_000
#: How far in the past a counted rule may start, for the same reason.
COUNT_LOOKBACK = timedelta(days=366)
#: dateutil rebuilds its calendar once a period or month; this many rebuilds
#: without an occurrence (about 400 years of months) means "never".
_SEARCH_BUDGET = 12 * 400
#: Wall-clock slack when starting a search in the middle of the sequence:
#: more than any zone ever skipped at once (Samoa skipped a whole day in 2011).
_WALL_MARGIN = timedelta(days=2)


class RuleError(OffpostError):
    """A rule, a zone or a bound is invalid; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- time zones -----------------------------------------------------------------


@functools.cache
def _zone_names() -> frozenset[str]:
    text = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(text.split())


@functools.lru_cache(maxsize=512)
def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` from the ``tzdata`` package; :class:`RuleError` if unknown."""
    if name not in _zone_names():
        raise RuleError(
            "timezone", f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin"
        )
    resource = importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/"))
    with resource.open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def wall_time(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time of ``instant`` in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def resolve_wall_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the naive wall time ``wall`` happens in ``zone``.

    A repeated time gives its first instant; a time inside a spring-forward
    gap gives the first instant after the gap (the transition).
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if wall_time(first, zone) == wall:
        return first
    # In a gap, fold=1 reads the wall time with the offset after the
    # transition (an instant before it), fold=0 with the offset before (an
    # instant after it). The transition is the first instant whose wall time
    # is past ``wall``: bisect between the two, in whole seconds.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    while (high - low) > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if wall_time(middle, zone) > wall:
            high = middle
        else:
            low = middle
    return high


# --- RRULE ----------------------------------------------------------------------

_FREQS = {
    "YEARLY": du.YEARLY,
    "MONTHLY": du.MONTHLY,
    "WEEKLY": du.WEEKLY,
    "DAILY": du.DAILY,
    "HOURLY": du.HOURLY,
    "MINUTELY": du.MINUTELY,
}
_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_BYDAY_RE = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL_RE = re.compile(r"^(\d{8})(T\d{6})?(Z)?$")
_INT_LISTS = {
    # name: (dateutil keyword, smallest, largest, negatives allowed)
    "BYMONTH": ("bymonth", 1, 12, False),
    "BYMONTHDAY": ("bymonthday", 1, 31, True),
    "BYYEARDAY": ("byyearday", 1, 366, True),
    "BYWEEKNO": ("byweekno", 1, 53, True),
    "BYHOUR": ("byhour", 0, 23, False),
    "BYMINUTE": ("byminute", 0, 59, False),
    "BYSETPOS": ("bysetpos", 1, 366, True),
}


class _BoundedRRule(du.rrule):  # type: ignore[misc]
    """dateutil's ``rrule`` that gives up after :data:`_SEARCH_BUDGET` empty rebuilds.

    dateutil only stops a search at the year 9999: a rule that matches nothing
    (``FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30``) takes seconds to say so. Its
    iterator reads ``_bynweekday`` once per calendar rebuild (a period or a
    month), so that attribute is where the budget is counted; each occurrence
    refills it. Build one instance per iteration: the count is per instance.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._rebuilds_left: int | None = None
        super().__init__(**kwargs)

    @property
    def _bynweekday(self) -> Any:
        if self._rebuilds_left is not None:
            self._rebuilds_left -= 1
            if self._rebuilds_left < 0:
                raise _SearchExhaustedError
        return self._nweekday_value

    @_bynweekday.setter
    def _bynweekday(self, value: Any) -> None:
        self._nweekday_value = value

    def _iter(self) -> Iterator[datetime]:
        self._rebuilds_left = _SEARCH_BUDGET
        try:
            for value in super()._iter():
                self._rebuilds_left = _SEARCH_BUDGET
                yield value
        finally:
            self._rebuilds_left = None


class _SearchExhaustedError(Exception):
    """Raised inside dateutil's iterator when the search budget runs out."""


@dataclass(frozen=True)
class _RRuleSpec:
    """A parsed RRULE: dateutil keywords (without DTSTART) and the UNTIL bound."""

    kwargs: dict[str, Any]
    until_instant: datetime | None


def _ints(name: str, value: str, low: int, high: int, negatives: bool) -> list[int]:
    out = []
    for item in value.split(","):
        if not re.fullmatch(r"[+-]?\d{1,4}", item):
            raise RuleError("rrule", f"{name}={value}: {item!r} is not a number")
        number = int(item)
        if not (low <= abs(number) <= high) or (number < 0 and not negatives):
            bounds = f"±{low}..{high}" if negatives else f"{low}..{high}"
            raise RuleError("rrule", f"{name}={value}: {number} is outside {bounds}")
        out.append(number)
    return out


def _parse_until(value: str, zone: ZoneInfo) -> tuple[datetime, datetime | None]:
    """``(wall-clock bound for dateutil, instant bound or None)``."""
    match = _UNTIL_RE.match(value)
    if match is None:
        raise RuleError("rrule", f"UNTIL={value}: expected YYYYMMDD or YYYYMMDDTHHMMSS[Z]")
    try:
        wall = datetime.strptime(match.group(1) + (match.group(2) or "T000000"), "%Y%m%dT%H%M%S")
    except ValueError:
        raise RuleError("rrule", f"UNTIL={value}: not a valid date") from None
    if match.group(3):
        instant = wall.replace(tzinfo=UTC)
        return wall_time(instant, zone), instant
    return wall, None


def _parse_rrule(text: str, zone: ZoneInfo) -> _RRuleSpec:  # noqa: PLR0915 - one check per part
    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[len("RRULE:") :]
    if not body or not re.fullmatch(r"[A-Za-z0-9=;,+\-]+", body):
        raise RuleError(
            "rrule", "expected one RRULE value such as FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0"
        )
    parts: dict[str, str] = {}
    for part in body.upper().strip(";").split(";"):
        name, sep, value = part.partition("=")
        if not sep or not value:
            raise RuleError("rrule", f"{part!r} is not NAME=VALUE")
        if name in parts:
            raise RuleError("rrule", f"{name} is given twice")
        parts[name] = value
    if "FREQ" not in parts:
        raise RuleError("rrule", "FREQ is required")
    freq_name = parts.pop("FREQ")
    if freq_name == "SECONDLY":
        raise RuleError("rrule", "FREQ=SECONDLY is not supported: schedules have minute precision")
    if freq_name not in _FREQS:
        raise RuleError("rrule", f"FREQ={freq_name} is not one of {', '.join(_FREQS)}")
    freq = _FREQS[freq_name]
    kwargs: dict[str, Any] = {"freq": freq}
    until_instant = None
    if "COUNT" in parts and "UNTIL" in parts:
        raise RuleError("rrule", "COUNT and UNTIL exclude each other (RFC 5545)")
    for name, value in parts.items():
        if name in ("INTERVAL", "COUNT"):
            if not re.fullmatch(r"\d{1,6}", value) or int(value) < 1:
                raise RuleError("rrule", f"{name}={value}: expected a whole number from 1")
            if name == "COUNT" and int(value) > MAX_COUNT:
                raise RuleError(
                    "rrule", f"COUNT={value}: at most {MAX_COUNT} (UNTIL can end a longer rule)"
                )
            kwargs[name.lower()] = int(value)
        elif name == "UNTIL":
            kwargs["until"], until_instant = _parse_until(value, zone)
        elif name == "WKST":
            if value not in _DAYS:
                raise RuleError("rrule", f"WKST={value}: expected one of {', '.join(_DAYS)}")
            kwargs["wkst"] = _DAYS[value]
        elif name == "BYDAY":
            kwargs["byweekday"] = _parse_byday(value, freq, has_weekno="BYWEEKNO" in parts)
        elif name in _INT_LISTS:
            keyword, low, high, negatives = _INT_LISTS[name]
            kwargs[keyword] = _ints(name, value, low, high, negatives)
        elif name == "BYSECOND":
            # Many RRULE generators write BYSECOND=0, which is exactly minute precision.
            if value != "0":
                raise RuleError(
                    "rrule", "BYSECOND is not supported: schedules have minute precision"
                )
            kwargs["bysecond"] = 0
        else:
            raise RuleError("rrule", f"unknown rule part {name}")
    # RFC 5545 §3.3.10: parts that make no sense with some frequencies.
    if "BYWEEKNO" in parts and freq != du.YEARLY:
        raise RuleError("rrule", "BYWEEKNO is only allowed with FREQ=YEARLY")
    if "BYYEARDAY" in parts and freq in (du.MONTHLY, du.WEEKLY, du.DAILY):
        raise RuleError("rrule", f"BYYEARDAY is not allowed with FREQ={freq_name}")
    if "BYMONTHDAY" in parts and freq == du.WEEKLY:
        raise RuleError("rrule", "BYMONTHDAY is not allowed with FREQ=WEEKLY")
    if (
        "BYSETPOS" in parts
        and len(parts)
        - sum(1 for n in ("BYSETPOS", "INTERVAL", "COUNT", "UNTIL", "WKST") if n in parts)
        == 0
    ):
        raise RuleError("rrule", "BYSETPOS needs another BYxxx part")
    return _RRuleSpec(kwargs, until_instant)


def _parse_byday(value: str, freq: int, *, has_weekno: bool) -> list[Any]:
    days: list[Any] = []
    for item in value.split(","):
        match = _BYDAY_RE.match(item)
        if match is None:
            raise RuleError(
                "rrule", f"BYDAY={value}: {item!r} is not a day such as MO, 1MO or -1FR"
            )
        weekday = du.weekdays[_DAYS[match.group(2)]]
        if match.group(1) is None:
            days.append(weekday)
            continue
        ordinal = int(match.group(1))
        if freq not in (du.MONTHLY, du.YEARLY) or (freq == du.YEARLY and has_weekno):
            raise RuleError(
                "rrule", f"BYDAY={value}: ordinals like {item} need FREQ=MONTHLY or YEARLY"
            )
        limit = 5 if freq == du.MONTHLY else 53
        if ordinal == 0 or abs(ordinal) > limit:
            raise RuleError("rrule", f"BYDAY={value}: {ordinal} is outside ±1..{limit}")
        days.append(weekday(ordinal))
    return days


_PERIODS_OF = {du.YEARLY, du.MONTHLY, du.WEEKLY, du.DAILY, du.HOURLY, du.MINUTELY}


def _explicit_kwargs(kwargs: dict[str, Any], dtstart: datetime) -> dict[str, Any]:
    """``kwargs`` with every default dateutil would take from ``dtstart`` spelled out.

    Then DTSTART only sets the phase of the periods, so a later DTSTART at
    the start of an aligned period yields the same occurrences from there on.
    """
    out = dict(kwargs)
    freq = out["freq"]
    if freq < du.HOURLY and out.get("byhour") is None:
        out["byhour"] = [dtstart.hour]
    if freq < du.MINUTELY and out.get("byminute") is None:
        out["byminute"] = [dtstart.minute]
    out["bysecond"] = [dtstart.second]
    if not any(out.get(k) for k in ("byweekno", "byyearday", "bymonthday", "byweekday")):
        if freq == du.YEARLY:
            out.setdefault("bymonth", [dtstart.month])
            out["bymonthday"] = [dtstart.day]
        elif freq == du.MONTHLY:
            out["bymonthday"] = [dtstart.day]
        elif freq == du.WEEKLY:
            out["byweekday"] = [dtstart.weekday()]
    return out


def _aligned_start(
    freq: int, interval: int, wkst: int, dtstart: datetime, wall: datetime
) -> datetime:
    """The start of the last period at or before ``wall`` that is a multiple of ``interval``
    periods after DTSTART's (DTSTART itself if there is none)."""
    if wall <= dtstart:
        return dtstart
    if freq == du.YEARLY:
        steps = (wall.year - dtstart.year) // interval
        return (
            dtstart.replace(
                year=dtstart.year + steps * interval, month=1, day=1, hour=0, minute=0, second=0
            )
            if steps
            else dtstart
        )
    if freq == du.MONTHLY:
        months = (wall.year - dtstart.year) * 12 + wall.month - dtstart.month
        index = dtstart.year * 12 + dtstart.month - 1 + months // interval * interval
        if months // interval == 0:
            return dtstart
        return datetime(index // 12, index % 12 + 1, 1)
    if freq == du.WEEKLY:
        first = datetime.combine(dtstart.date(), datetime.min.time())
        first -= timedelta(days=(dtstart.weekday() - wkst) % 7)
        steps = (wall - first).days // (7 * interval)
        return first + timedelta(weeks=steps * interval) if steps else dtstart
    size = {
        du.DAILY: timedelta(days=1),
        du.HOURLY: timedelta(hours=1),
        du.MINUTELY: timedelta(minutes=1),
    }[freq]
    floor = {
        du.DAILY: dtstart.replace(hour=0, minute=0, second=0),
        du.HOURLY: dtstart.replace(minute=0, second=0),
        du.MINUTELY: dtstart.replace(second=0),
    }[freq]
    steps = (wall - floor) // (size * interval)
    return floor + size * interval * steps if steps else dtstart


def _rrule_walls(spec: _RRuleSpec, dtstart: datetime) -> Callable[[datetime], Iterator[datetime]]:
    kwargs = spec.kwargs
    explicit = _explicit_kwargs(kwargs, dtstart)

    def walls(low: datetime) -> Iterator[datetime]:
        start = dtstart
        arguments = kwargs
        # Without COUNT the sequence does not depend on how many came before:
        # start from a period near ``low`` instead of replaying years of it.
        if kwargs.get("count") is None:
            start = _aligned_start(
                kwargs["freq"], kwargs.get("interval", 1), kwargs.get("wkst", 0), dtstart, low
            )
            if start != dtstart:
                arguments = explicit
        rule = _BoundedRRule(dtstart=start, **arguments)
        try:
            for wall in rule:
                if wall >= low:
                    yield wall
        except _SearchExhaustedError:
            return

    return walls


# --- cron -----------------------------------------------------------------------

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


def _cron_item_re(names: tuple[str, ...]) -> re.Pattern[str]:
    value = r"\d{1,2}" + (f"|{'|'.join(names)}" if names else "")
    item = rf"(?:\*(?:/\d{{1,2}})?|(?:{value})(?:-(?:{value}))?(?:/\d{{1,2}})?)"
    return re.compile(rf"^{item}(?:,{item})*$", re.IGNORECASE)


_CRON_RES = (
    _cron_item_re(()),
    _cron_item_re(()),
    _cron_item_re(()),
    _cron_item_re(_MONTHS),
    _cron_item_re(_WEEKDAYS),
)


def _check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        raise RuleError(
            "cron",
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}",
        )
    for field, pattern, name in zip(fields, _CRON_RES, _CRON_FIELDS, strict=True):
        if not pattern.match(field):
            raise RuleError("cron", f"the {name} field {field!r} is not valid")
    normalized = " ".join(fields)
    try:
        croniter(normalized, datetime(2000, 1, 1))
    except (CroniterError, ValueError) as exc:
        raise RuleError("cron", f"{normalized!r} is not valid: {exc}") from None
    return normalized


def _cron_walls(expression: str) -> Callable[[datetime], Iterator[datetime]]:
    def walls(low: datetime) -> Iterator[datetime]:
        # croniter gives the next match strictly after its start; naive in, naive out.
        matches = croniter(expression, low.replace(microsecond=0) - timedelta(seconds=1))
        while True:
            try:
                wall = matches.get_next(datetime)
            except (CroniterError, OverflowError, ValueError):
                return  # no further match (or past the year 9999)
            yield wall

    return walls


# --- the recurrence -------------------------------------------------------------


@dataclass(frozen=True)
class Recurrence:
    """A validated rule in its zone, between ``start_at`` and ``end_at`` (UTC, inclusive)."""

    zone: ZoneInfo
    start_at: datetime
    end_at: datetime | None
    _walls: Callable[[datetime], Iterator[datetime]]

    def occurrences(
        self, after: datetime | None = None, *, inclusive: bool = False
    ) -> Iterator[datetime]:
        """Occurrence instants (aware UTC), strictly increasing.

        From ``start_at`` when ``after`` is ``None``; otherwise those later
        than ``after`` (or equal to it, with ``inclusive``).
        """
        if after is None or after < self.start_at:
            lower, inclusive = self.start_at, True
        else:
            lower = after.astimezone(UTC)
        previous: datetime | None = None
        # Like DTSTART: a wall time before start_at's own is no occurrence, even
        # when a DST gap moves its instant to start_at or later.
        first_wall = wall_time(self.start_at, self.zone)
        try:
            since = wall_time(lower, self.zone) - _WALL_MARGIN
        except OverflowError:  # ``after`` within days of year 1: start from the first one
            since = first_wall
        for wall in self._walls(since):
            if wall < first_wall:
                continue
            instant = resolve_wall_time(wall, self.zone)
            if self.end_at is not None and instant > self.end_at:
                return
            if previous is not None and instant <= previous:
                continue
            previous = instant
            if instant > lower or (inclusive and instant == lower):
                yield instant

    def upcoming(self, now: datetime, count: int) -> list[datetime]:
        """The next ``count`` occurrences after ``now`` (fewer when the rule ends)."""
        out = []
        for instant in self.occurrences(now):
            out.append(instant)
            if len(out) >= count:
                break
        return out

    def local(self, instant: datetime) -> datetime:
        """``instant`` in the schedule's zone (for display with its offset)."""
        return instant.astimezone(self.zone)


def parse_rule(
    *,
    rrule: str | None,
    cron: str | None,
    timezone: str,
    start_at: datetime,
    end_at: datetime | None = None,
    now: datetime | None = None,
) -> Recurrence:
    """Validate a rule and return its :class:`Recurrence`; :class:`RuleError` names the field.

    Exactly one of ``rrule`` and ``cron``; ``start_at`` and ``end_at`` are
    aware instants, ``end_at`` not before ``start_at``. A rule with no
    occurrence at all between them is refused too. Given ``now`` (a rule being
    set, not one stored), a counted rule may start at most :data:`COUNT_LOOKBACK`
    before it.
    """
    if (
        now is not None
        and rrule is not None
        and re.search(r"(^|[:;])COUNT=", rrule.upper())
        and start_at < now - COUNT_LOOKBACK
    ):
        raise RuleError(
            "start_at",
            "with COUNT it may be at most a year in the past: every evaluation counts from it",
        )
    if (rrule is None) == (cron is None):
        field = "rrule" if rrule is not None else "cron"
        raise RuleError(field, "give exactly one of rrule and cron")
    if start_at.tzinfo is None or (end_at is not None and end_at.tzinfo is None):
        raise RuleError("start_at" if start_at.tzinfo is None else "end_at", "needs a UTC offset")
    zone = load_zone(timezone)
    try:
        return _checked_recurrence(rrule, cron, zone, start_at, end_at)
    except OverflowError:  # a wall time before 0001-01-01 (start_at in its first day or two)
        raise RuleError("start_at", "is too close to the first day of year 1") from None


def _checked_recurrence(
    rrule: str | None, cron: str | None, zone: ZoneInfo, start_at: datetime, end_at: datetime | None
) -> Recurrence:
    """:func:`parse_rule` past its quick checks."""
    start = start_at.astimezone(UTC).replace(microsecond=0)
    end = None if end_at is None else end_at.astimezone(UTC)
    if end is not None and end < start:
        raise RuleError("end_at", "is before start_at")
    if rrule is not None:
        spec = _parse_rrule(rrule, zone)
        if spec.until_instant is not None:
            end = spec.until_instant if end is None else min(end, spec.until_instant)
        walls = _rrule_walls(spec, wall_time(start, zone))
        field = "rrule"
    else:
        assert cron is not None
        walls = _cron_walls(_check_cron(cron))
        field = "cron"
    recurrence = Recurrence(zone, start, end, walls)
    try:
        first = next(recurrence.occurrences(), None)
    except ValueError as exc:  # dateutil: an interval that can never meet a BYxxx list
        raise RuleError(field, str(exc)) from None
    if first is None:
        raise RuleError(field, "the rule has no occurrence between start_at and its end")
    return recurrence


def format_local(instant: datetime, zone: ZoneInfo) -> str:
    """``instant`` as RFC 3339 with the zone's offset, e.g. ``2026-12-01T09:00:00+01:00``."""
    return instant.astimezone(zone).isoformat(timespec="seconds")

"""A schedule's rule in plain English, for the dashboard: "every Monday and Wednesday at 09:00".

Pure (no I/O, no clock). :func:`describe_rule` knows the common shapes of both
kinds of rule a schedule holds — an RFC 5545 RRULE and a 5-field cron
expression — and answers ``None`` for anything else, so that the page shows the
rule's own text instead: no sentence is better than a wrong one. It describes,
it does not validate (:mod:`offpost.recurrence` did that when the rule was
stored), and the times it names are wall-clock times in the schedule's zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
#: At most this many times of day are listed ("at 09:00, 12:00 and 17:00").
MAX_TIMES = 6

_RRULE_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}
_WEEKDAYS = (0, 1, 2, 3, 4)
#: Cron's day-of-week names as its numbers (0 and 7 are Sunday; Python's weekday() is 6).
_CRON_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_CRON_MONTH_NAMES = {name[:3].upper(): n for n, name in enumerate(MONTHS, 1)}


class _Unknown(Exception):
    """A shape of rule this module has no sentence for."""


def describe_rule(rrule: str | None, cron: str | None, start: datetime | None = None) -> str | None:
    """The rule in words, or ``None`` when it is not one of the shapes known here.

    ``start`` is the schedule's start as wall-clock time in its zone: an RRULE
    takes from it what its parts leave out (``FREQ=DAILY`` alone runs at the
    start's time of day, ``FREQ=WEEKLY`` on the start's weekday). Without it
    such a rule is not described.
    """
    try:
        if rrule is not None:
            return _rrule_words(rrule, start)
        if cron is not None:
            return _cron_words(cron)
    except (_Unknown, ValueError):
        pass
    return None


# --- pieces of sentences -------------------------------------------------------------------


def _and(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _every(n: int, unit: str) -> str:
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _times(hours: Sequence[int], minutes: Sequence[int]) -> str:
    if len(hours) * len(minutes) > MAX_TIMES:
        raise _Unknown
    return "at " + _and([f"{h:02d}:{m:02d}" for h in sorted(hours) for m in sorted(minutes)])


def _past_the_hour(minutes: Sequence[int]) -> str:
    if len(minutes) > MAX_TIMES:
        raise _Unknown
    return "at " + _and([f":{m:02d}" for m in sorted(minutes)])


def _days(weekdays: Sequence[int]) -> str:
    """``every Monday and Wednesday``, ``every weekday``, ``every day``."""
    found = sorted(set(weekdays))
    if len(found) == len(DAYS):
        return "every day"
    if tuple(found) == _WEEKDAYS:
        return "every weekday"
    return "every " + _and([DAYS[d] for d in found])


def _on_days(weekdays: Sequence[int]) -> str:
    """The same days as a qualifier of a shorter period: ``on Mondays``, ``on weekdays``."""
    found = sorted(set(weekdays))
    if len(found) == len(DAYS):
        return ""
    if tuple(found) == _WEEKDAYS:
        return " on weekdays"
    return " on " + _and([f"{DAYS[d]}s" for d in found])


def _month_days(days: Sequence[int]) -> str:
    """``the 1st and 15th``, ``the last day``."""
    if len(set(days)) > MAX_TIMES:
        raise _Unknown
    words = []
    for day in sorted(set(days), key=lambda d: (d < 0, d)):
        if day > 0:
            words.append(_ordinal(day))
        elif day == -1:
            words.append("last day")
        else:
            raise _Unknown
    return "the " + _and(words)


# --- RRULE ---------------------------------------------------------------------------------

_ORDINAL_DAY = re.compile(r"([+-]?\d{1,2})?([A-Z]{2})")


def _rrule_parts(text: str) -> dict[str, str]:
    body = text.strip().upper()
    body = body.removeprefix("RRULE:")
    parts: dict[str, str] = {}
    for part in body.strip(";").split(";"):
        name, sep, value = part.partition("=")
        if not sep or name in parts:
            raise _Unknown
        parts[name] = value
    # BYSECOND=0 is minute precision, which every schedule has; WKST only shifts which
    # week an INTERVAL counts from.
    if parts.get("BYSECOND", "0") != "0":
        raise _Unknown
    parts.pop("BYSECOND", None)
    parts.pop("WKST", None)
    return parts


def _ints(value: str | None) -> list[int] | None:
    return None if value is None else [int(v) for v in value.split(",")]


def _byday(value: str | None) -> list[tuple[int | None, int]] | None:
    """``BYDAY`` as ``(ordinal or None, weekday)`` pairs."""
    if value is None:
        return None
    found = []
    for item in value.split(","):
        match = _ORDINAL_DAY.fullmatch(item)
        if match is None or match.group(2) not in _RRULE_DAYS:
            raise _Unknown
        ordinal = int(match.group(1)) if match.group(1) else None
        found.append((ordinal, _RRULE_DAYS[match.group(2)]))
    return found


@dataclass(frozen=True)
class _RRule:
    """The parts of an RRULE that have words here."""

    interval: int
    hours: list[int] | None
    minutes: list[int] | None
    #: ``BYDAY`` as ``(ordinal or None, weekday)``: "MO,WE" or "1MO,-1FR".
    days: list[tuple[int | None, int]] | None
    month_days: list[int] | None
    months: list[int] | None
    start: datetime | None

    @property
    def ordinals(self) -> bool:
        """``BYDAY`` names the n-th weekday (``1MO``), which only a monthly rule has words for."""
        return self.days is not None and any(ordinal is not None for ordinal, _ in self.days)

    @property
    def plain_days(self) -> list[int] | None:
        return None if self.days is None or self.ordinals else [day for _, day in self.days]

    def begun(self) -> datetime:
        """The start, for what the rule leaves out (dateutil takes it from DTSTART)."""
        if self.start is None:
            raise _Unknown
        return self.start

    def time_of_day(self) -> str:
        return _times(self.hours or [self.begun().hour], self.minutes or [self.begun().minute])

    def minutely(self) -> str:
        if self.hours or self.minutes or self.days or self.month_days or self.months:
            raise _Unknown
        return _every(self.interval, "minute")

    def hourly(self) -> str:
        if self.hours or self.month_days or self.months or self.ordinals:
            raise _Unknown
        minutes = self.minutes or [self.begun().minute]
        days = self.plain_days
        return f"{_every(self.interval, 'hour')} {_past_the_hour(minutes)}" + (
            _on_days(days) if days else ""
        )

    def daily(self) -> str:
        days = self.plain_days
        if self.month_days or self.months or self.ordinals or (days and self.interval > 1):
            raise _Unknown
        period = _days(days) if days else _every(self.interval, "day")
        return f"{period} {self.time_of_day()}"

    def weekly(self) -> str:
        if self.month_days or self.months or self.ordinals:
            raise _Unknown
        weekdays = sorted(set(self.plain_days or [self.begun().weekday()]))
        if self.interval == 1:
            period = _days(weekdays)
        elif len(weekdays) < len(DAYS):
            period = _every(self.interval, "week") + _on_days(weekdays)
        else:  # every day of every other week: "every 2 weeks" alone would mislead
            raise _Unknown
        return f"{period} {self.time_of_day()}"

    def monthly(self) -> str:
        if self.months or (self.days is not None and (self.month_days or not self.ordinals)):
            raise _Unknown
        if self.days is not None:
            which = "the " + _and([_ordinal_weekday(o, d) for o, d in self.days])
        else:
            which = _month_days(self.month_days or [self.begun().day])
        return f"on {which} of {_every(self.interval, 'month')} {self.time_of_day()}"

    def yearly(self) -> str:
        # BYMONTHDAY without BYMONTH runs every month (dateutil): not "every year".
        if self.days is not None or (self.month_days and not self.months):
            raise _Unknown
        months = self.months or [self.begun().month]
        month_days = self.month_days or [self.begun().day]
        if len(months) != 1 or len(month_days) != 1 or not 1 <= month_days[0] <= 31:
            raise _Unknown
        on = f"{month_days[0]} {MONTHS[months[0] - 1]}"
        return f"{_every(self.interval, 'year')} on {on} {self.time_of_day()}"


_FREQUENCIES = {
    "MINUTELY": _RRule.minutely,
    "HOURLY": _RRule.hourly,
    "DAILY": _RRule.daily,
    "WEEKLY": _RRule.weekly,
    "MONTHLY": _RRule.monthly,
    "YEARLY": _RRule.yearly,
}


def _rrule_words(text: str, start: datetime | None) -> str:
    parts = _rrule_parts(text)
    words = _FREQUENCIES.get(parts.pop("FREQ", ""))
    ending = _rrule_ending(parts.pop("COUNT", None), parts.pop("UNTIL", None))
    rule = _RRule(
        interval=int(parts.pop("INTERVAL", "1")),
        hours=_ints(parts.pop("BYHOUR", None)),
        minutes=_ints(parts.pop("BYMINUTE", None)),
        days=_byday(parts.pop("BYDAY", None)),
        month_days=_ints(parts.pop("BYMONTHDAY", None)),
        months=_ints(parts.pop("BYMONTH", None)),
        start=start,
    )
    if words is None or parts:  # BYSETPOS, BYYEARDAY, BYWEEKNO: no plain sentence for those
        raise _Unknown
    return words(rule) + ending


def _ordinal_weekday(ordinal: int | None, weekday: int) -> str:
    if ordinal not in _ORDINAL_WORDS:
        raise _Unknown
    return f"{_ORDINAL_WORDS[ordinal]} {DAYS[weekday]}"


def _rrule_ending(count: str | None, until: str | None) -> str:
    if count is not None:
        n = int(count)
        return ", once" if n == 1 else f", {n} times"
    if until is not None:
        match = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(?:T(\d\d)(\d\d)(\d\d)(Z?))?", until)
        if match is None:
            raise _Unknown
        year, month, day, hour, minute, _, utc = match.groups()
        when = f"{year}-{month}-{day}"
        if hour is not None:
            when += f" {hour}:{minute}" + (" UTC" if utc else "")
        return f", until {when}"
    return ""


# --- cron ----------------------------------------------------------------------------------


def _cron_number(text: str, names: dict[str, int]) -> int:
    upper = text.upper()
    return names[upper] if upper in names else int(text)


def _cron_field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> list[int]:
    """Every value a cron field matches, in order (``*`` is all of them)."""
    values: set[int] = set()
    for item in text.split(","):
        part, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if part == "*":
            first, last = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _cron_number(a, names or {}), _cron_number(b, names or {})
        else:
            first = _cron_number(part, names or {})
            last = high if step_text else first
        if step < 1 or first > last or first < low or last > high:
            raise _Unknown
        values.update(range(first, last + 1, step))
    return sorted(values)


def _cron_words(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        raise _Unknown
    minute, hour, day_of_month, month, day_of_week = fields
    minutes = _cron_field(minute, 0, 59)
    hours = _cron_field(hour, 0, 23)
    month_days = _cron_field(day_of_month, 1, 31)
    months = _cron_field(month, 1, 12, _CRON_MONTH_NAMES)
    weekdays = sorted({(d - 1) % 7 for d in _cron_field(day_of_week, 0, 7, _CRON_DAY_NAMES)})

    restricted_days = day_of_month != "*"
    restricted_weekdays = day_of_week != "*"
    if restricted_days and restricted_weekdays:
        raise _Unknown  # either matches (Vixie cron): no short sentence says that right
    if month != "*":
        # Only "every year on 1 January": one month, one day of it.
        if restricted_weekdays or len(months) != 1 or len(month_days) != 1:
            raise _Unknown
        day_part = f"every year on {month_days[0]} {MONTHS[months[0] - 1]}"
    elif restricted_days:
        day_part = f"on {_month_days(month_days)} of every month"
    else:
        day_part = _days(weekdays)

    every_hour = hour == "*"
    if minute == "*" or (minute.startswith("*/") and 60 % int(minute[2:]) == 0):
        # Every n minutes, all day long.
        if not every_hour:
            raise _Unknown
        step = 1 if minute == "*" else int(minute[2:])
        return _every(step, "minute") + _qualifier(day_part, weekdays)
    if every_hour or (hour.startswith("*/") and 24 % int(hour[2:]) == 0):
        step = 1 if every_hour else int(hour[2:])
        return f"{_every(step, 'hour')} {_past_the_hour(minutes)}" + _qualifier(day_part, weekdays)
    if (
        len(minutes) == 1
        and len(hours) > MAX_TIMES
        and hours == list(range(hours[0], hours[-1] + 1))
    ):
        # "0 9-17 * * *": hourly within a span of the day.
        m = minutes[0]
        span = f"from {hours[0]:02d}:{m:02d} to {hours[-1]:02d}:{m:02d}"
        return f"every hour at :{m:02d} {span}" + _qualifier(day_part, weekdays)
    return f"{day_part} {_times(hours, minutes)}"


def _qualifier(day_part: str, weekdays: Sequence[int]) -> str:
    """The days a several-times-a-day rule runs on, after its period (nothing for every day)."""
    if day_part == "every day":
        return ""
    if day_part.startswith("every") and not day_part.startswith("every year"):
        return _on_days(weekdays)
    return f", {day_part}"

"""DST arithmetic, as tables: wall-clock stays wall-clock, gaps move to the first
instant after them, repeated times are published once — for cron and RRULE alike.

2026 transitions used below (local time):

- Europe/Berlin: 29 March 02:00 → 03:00; 25 October 03:00 → 02:00
- America/New_York: 8 March 02:00 → 03:00; 1 November 02:00 → 01:00
- Australia/Sydney: 5 April 03:00 → 02:00; 4 October 02:00 → 03:00
- Australia/Lord_Howe (30 minutes): 5 April 02:00 → 01:30; 4 October 02:00 → 02:30
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from offpost.recurrence import (
    format_local,
    load_zone,
    parse_rule,
    resolve_wall_time,
)


def daily(zone: str, clock: str, first_day: str, days: int, *, kind: str) -> list[str]:
    """``days`` daily occurrences at wall time ``clock`` from ``first_day``, as printed."""
    hour, minute = (int(p) for p in clock.split(":"))
    tz = load_zone(zone)
    start = datetime.fromisoformat(first_day).replace(tzinfo=tz)
    if kind == "cron":
        rule = {"cron": f"{minute} {hour} * * *", "rrule": None}
    else:
        rule = {"rrule": f"FREQ=DAILY;BYHOUR={hour};BYMINUTE={minute}", "cron": None}
    recurrence = parse_rule(**rule, timezone=zone, start_at=start)
    return [format_local(o, tz) for o in itertools.islice(recurrence.occurrences(), days)]


KINDS = ["cron", "rrule"]

# (zone, wall time, first day, expected occurrences)
DAILY_0900_ACROSS_TRANSITIONS = [
    (
        "Europe/Berlin",
        "2026-03-28",
        ["2026-03-28T09:00:00+01:00", "2026-03-29T09:00:00+02:00", "2026-03-30T09:00:00+02:00"],
    ),
    (
        "Europe/Berlin",
        "2026-10-24",
        ["2026-10-24T09:00:00+02:00", "2026-10-25T09:00:00+01:00", "2026-10-26T09:00:00+01:00"],
    ),
    (
        "America/New_York",
        "2026-03-07",
        ["2026-03-07T09:00:00-05:00", "2026-03-08T09:00:00-04:00", "2026-03-09T09:00:00-04:00"],
    ),
    (
        "America/New_York",
        "2026-10-31",
        ["2026-10-31T09:00:00-04:00", "2026-11-01T09:00:00-05:00", "2026-11-02T09:00:00-05:00"],
    ),
    (
        "Australia/Sydney",
        "2026-04-04",
        ["2026-04-04T09:00:00+11:00", "2026-04-05T09:00:00+10:00", "2026-04-06T09:00:00+10:00"],
    ),
    (
        "Australia/Sydney",
        "2026-10-03",
        ["2026-10-03T09:00:00+10:00", "2026-10-04T09:00:00+11:00", "2026-10-05T09:00:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        "2026-04-04",
        ["2026-04-04T09:00:00+11:00", "2026-04-05T09:00:00+10:30", "2026-04-06T09:00:00+10:30"],
    ),
    (
        "Australia/Lord_Howe",
        "2026-10-03",
        ["2026-10-03T09:00:00+10:30", "2026-10-04T09:00:00+11:00", "2026-10-05T09:00:00+11:00"],
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("zone", "first_day", "expected"), DAILY_0900_ACROSS_TRANSITIONS)
def test_daily_0900_stays_0900_across_both_transitions(
    kind: str, zone: str, first_day: str, expected: list[str]
) -> None:
    assert daily(zone, "09:00", first_day, 3, kind=kind) == expected


# A wall time that does not exist on spring-forward day: the first instant after the gap.
GAP_DAYS = [
    (
        "Europe/Berlin",
        "02:30",
        "2026-03-28",
        ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    (
        "America/New_York",
        "02:30",
        "2026-03-07",
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    (
        "Australia/Sydney",
        "02:30",
        "2026-10-03",
        ["2026-10-03T02:30:00+10:00", "2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"],
    ),
    # Lord Howe skips only 02:00-02:29: 02:30 exists, 02:15 becomes 02:30.
    (
        "Australia/Lord_Howe",
        "02:30",
        "2026-10-03",
        ["2026-10-03T02:30:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-05T02:30:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        "02:15",
        "2026-10-03",
        ["2026-10-03T02:15:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("zone", "clock", "first_day", "expected"), GAP_DAYS)
def test_a_time_in_the_spring_gap_is_published_when_the_gap_ends(
    kind: str, zone: str, clock: str, first_day: str, expected: list[str]
) -> None:
    assert daily(zone, clock, first_day, 3, kind=kind) == expected


# A wall time that happens twice on fall-back day: once, at its first instant.
FOLD_DAYS = [
    (
        "Europe/Berlin",
        "02:30",
        "2026-10-24",
        ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "America/New_York",
        "01:30",
        "2026-10-31",
        ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "Australia/Sydney",
        "02:30",
        "2026-04-04",
        ["2026-04-04T02:30:00+11:00", "2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"],
    ),
    (
        "Australia/Lord_Howe",
        "01:45",
        "2026-04-04",
        ["2026-04-04T01:45:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
    ),
    # 02:30 is not repeated on Lord Howe (only 01:30-01:59 is).
    (
        "Australia/Lord_Howe",
        "02:30",
        "2026-04-04",
        ["2026-04-04T02:30:00+11:00", "2026-04-05T02:30:00+10:30", "2026-04-06T02:30:00+10:30"],
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("zone", "clock", "first_day", "expected"), FOLD_DAYS)
def test_a_repeated_autumn_time_is_published_once(
    kind: str, zone: str, clock: str, first_day: str, expected: list[str]
) -> None:
    assert daily(zone, clock, first_day, 3, kind=kind) == expected


# (zone, naive wall time, the instant it resolves to)
RESOLUTIONS = [
    ("Europe/Berlin", "2026-03-29T02:00", "2026-03-29T01:00:00+00:00"),
    ("Europe/Berlin", "2026-03-29T02:59", "2026-03-29T01:00:00+00:00"),
    ("Europe/Berlin", "2026-03-29T03:00", "2026-03-29T01:00:00+00:00"),
    ("Europe/Berlin", "2026-10-25T02:00", "2026-10-25T00:00:00+00:00"),
    ("Europe/Berlin", "2026-10-25T02:59", "2026-10-25T00:59:00+00:00"),
    ("America/New_York", "2026-03-08T02:30", "2026-03-08T07:00:00+00:00"),
    ("America/New_York", "2026-11-01T01:30", "2026-11-01T05:30:00+00:00"),
    ("Australia/Lord_Howe", "2026-10-04T02:00", "2026-10-03T15:30:00+00:00"),
    ("Australia/Lord_Howe", "2026-10-04T02:29", "2026-10-03T15:30:00+00:00"),
    ("Australia/Lord_Howe", "2026-04-05T01:45", "2026-04-04T14:45:00+00:00"),
    # Samoa skipped 30 December 2011 entirely: its 09:00 is midnight of the 31st.
    ("Pacific/Apia", "2011-12-30T09:00", "2011-12-30T10:00:00+00:00"),
]


@pytest.mark.parametrize(("zone", "wall", "instant"), RESOLUTIONS)
def test_resolve_wall_time(zone: str, wall: str, instant: str) -> None:
    resolved = resolve_wall_time(datetime.fromisoformat(wall), load_zone(zone))
    assert resolved == datetime.fromisoformat(instant)
    assert resolved.tzinfo is UTC


def hourly(zone: str, first: str, count: int, *, kind: str) -> list[str]:
    tz = load_zone(zone)
    rule = (
        {"cron": "0 * * * *", "rrule": None}
        if kind == "cron"
        else {"rrule": "FREQ=HOURLY", "cron": None}
    )
    start = datetime.fromisoformat(first).replace(tzinfo=tz)
    recurrence = parse_rule(**rule, timezone=zone, start_at=start)
    return [format_local(o, tz) for o in itertools.islice(recurrence.occurrences(), count)]


@pytest.mark.parametrize("kind", KINDS)
def test_hourly_wall_clock_across_berlins_spring_gap_publishes_03_00_once(kind: str) -> None:
    # 02:00 does not exist and lands on 03:00, which is also an occurrence: one post.
    assert hourly("Europe/Berlin", "2026-03-29T01:00", 3, kind=kind) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_hourly_wall_clock_across_berlins_autumn_fold_publishes_02_00_once(kind: str) -> None:
    assert hourly("Europe/Berlin", "2026-10-25T01:00", 3, kind=kind) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_occurrences_after_an_instant_inside_the_fold_continue_without_repeats() -> None:
    tz = load_zone("Europe/Berlin")
    recurrence = parse_rule(
        rrule=None,
        cron="*/30 * * * *",
        timezone="Europe/Berlin",
        start_at=datetime(2026, 10, 24, tzinfo=UTC),
    )
    # 02:15 CET, the second pass: 02:30 was already published at 02:30 CEST.
    after = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)
    got = [format_local(o, tz) for o in itertools.islice(recurrence.occurrences(after), 2)]
    assert got == ["2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00"]
    assert all(o > after for o in itertools.islice(recurrence.occurrences(after), 5))
    assert timedelta(0) < datetime.fromisoformat(got[0]) - after

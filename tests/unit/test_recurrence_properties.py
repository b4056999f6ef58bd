"""Properties of occurrences, checked by hypothesis against independent oracles.

- strictly increasing, never before ``start_at``;
- each satisfies the rule: its wall time matches, or it is the end of a DST
  gap into which a matching wall time fell;
- none missed across DST changes: a minute-by-minute walk of real instants
  (plus the wall times that fell into gaps) finds exactly the same set;
- resuming from any instant (what materialisation does every tick) gives the
  tail of the full sequence, also where the search starts from a later period.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from offpost.recurrence import (
    Recurrence,
    RuleError,
    load_zone,
    parse_rule,
    resolve_wall_time,
    wall_time,
)

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"]
# The 2026 transitions of those zones, in UTC (see test_recurrence_dst).
TRANSITIONS = [
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2026, 4, 4, 16, tzinfo=UTC),
    datetime(2026, 10, 3, 16, tzinfo=UTC),
    datetime(2026, 4, 4, 15, tzinfo=UTC),
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
]
WINDOW = timedelta(hours=36)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass(frozen=True)
class WallClockRule:
    """A rule given by sets: minutes, hours and weekdays (Monday = 0, ``None`` = every day)."""

    minutes: list[int]
    hours: list[int]
    weekdays: frozenset[int] | None
    as_cron: bool
    zone: str
    start: datetime

    def parse(self) -> Recurrence:
        minutes = ",".join(map(str, self.minutes))
        hours = ",".join(map(str, self.hours))
        if self.as_cron:
            days = (
                "*"
                if self.weekdays is None
                else ",".join(str((d + 1) % 7) for d in sorted(self.weekdays))
            )
            cron = f"{minutes} {hours} * * {days}"
            return parse_rule(rrule=None, cron=cron, timezone=self.zone, start_at=self.start)
        byday = (
            ""
            if self.weekdays is None
            else ";BYDAY=" + ",".join(DAY_CODES[d] for d in sorted(self.weekdays))
        )
        text = f"FREQ=DAILY;BYHOUR={hours};BYMINUTE={minutes}{byday}"
        return parse_rule(rrule=text, cron=None, timezone=self.zone, start_at=self.start)

    def matches(self, wall: datetime) -> bool:
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and (self.weekdays is None or wall.weekday() in self.weekdays)
        )


DAY_CODES = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


@st.composite
def wall_clock_rules(draw: st.DrawFn) -> WallClockRule:
    """Rules biased to the hours that DST transitions touch."""
    minutes = draw(st.sets(st.sampled_from([0, 1, 15, 29, 30, 45, 59]), min_size=1, max_size=3))
    hour = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 23))
    hours = draw(st.sets(hour, min_size=1, max_size=4))
    weekdays = draw(st.none() | st.frozensets(st.integers(0, 6), min_size=1, max_size=7))
    around = draw(st.sampled_from(TRANSITIONS)) + timedelta(hours=draw(st.integers(-30, 6)))
    return WallClockRule(
        minutes=sorted(minutes),
        hours=sorted(hours),
        weekdays=weekdays,
        as_cron=draw(st.booleans()),
        zone=draw(st.sampled_from(ZONES)),
        start=around.replace(minute=0),
    )


def _oracle(rule: WallClockRule, start: datetime, end: datetime) -> set[datetime]:
    """Every occurrence in [start, end], found without the code under test's machinery."""
    zone = load_zone(rule.zone)
    found: set[datetime] = set()
    seen_walls: set[datetime] = set()
    instant = start - timedelta(hours=3)  # earlier passes of a repeated wall time count as seen
    while instant <= end:
        wall = wall_time(instant, zone)
        if rule.matches(wall) and wall not in seen_walls and instant >= start:
            found.add(instant)
        seen_walls.add(wall)
        instant += timedelta(minutes=1)
    # Wall times that never happen (gaps) are published when the gap ends.
    day = wall_time(start, zone).date() - timedelta(days=1)
    while day <= wall_time(end, zone).date():
        for hour in rule.hours:
            for minute in rule.minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                aware = wall.replace(tzinfo=zone)
                exists = wall_time(aware.astimezone(UTC), zone) == wall
                if not exists and rule.matches(wall) and wall >= wall_time(start, zone):
                    # The first instant whose wall time is past the gap.
                    probe = aware.replace(fold=1).astimezone(UTC)
                    while wall_time(probe, zone) < wall:
                        probe += timedelta(minutes=1)
                    if start <= probe <= end:
                        found.add(probe)
        day += timedelta(days=1)
    return found


@PROPERTY_SETTINGS
@given(wall_clock_rules())
def test_strictly_increasing_each_matching_and_none_missed(rule: WallClockRule) -> None:
    recurrence = rule.parse()
    start = recurrence.start_at
    end = start + WINDOW
    produced = list(itertools.takewhile(lambda o: o <= end, recurrence.occurrences()))
    assert all(a < b for a, b in itertools.pairwise(produced))
    assert all(o >= start for o in produced)
    zone = recurrence.zone
    for occurrence in produced:
        offset = occurrence.astimezone(zone).utcoffset()
        at_gap_end = (occurrence - timedelta(seconds=1)).astimezone(zone).utcoffset() != offset
        assert rule.matches(wall_time(occurrence, zone)) or at_gap_end, occurrence
    assert set(produced) == _oracle(rule, start, end)


@PROPERTY_SETTINGS
@given(wall_clock_rules(), st.integers(0, 36 * 60))
def test_resuming_from_any_instant_continues_the_same_sequence(
    rule: WallClockRule, minutes_later: int
) -> None:
    recurrence = rule.parse()
    after = recurrence.start_at + timedelta(minutes=minutes_later, seconds=30)
    full = list(itertools.islice(recurrence.occurrences(), 200))
    tail = [o for o in full if o > after]
    resumed = list(itertools.islice(recurrence.occurrences(after), len(tail)))
    assert resumed == tail


FREQS = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY"]


@st.composite
def rrules(draw: st.DrawFn) -> str:
    freq = draw(st.sampled_from(FREQS))
    small = freq not in ("HOURLY", "MINUTELY")
    interval = draw(st.integers(1, 5) if small else st.sampled_from([1, 5, 7, 90]))
    parts = [f"FREQ={freq}", f"INTERVAL={interval}"]
    if freq in ("YEARLY", "MONTHLY") and draw(st.booleans()):
        parts.append("BYDAY=" + draw(st.sampled_from(["1MO", "-1FR", "TU,TH", "2WE,-2SA", "SU"])))
    elif freq == "WEEKLY" and draw(st.booleans()):
        parts.append("BYDAY=" + draw(st.sampled_from(["MO", "TU,FR", "SA,SU"])))
    if freq in ("YEARLY", "MONTHLY", "DAILY") and draw(st.booleans()):
        parts.append("BYMONTHDAY=" + draw(st.sampled_from(["1", "-1", "15,28", "1,10,20"])))
    if freq == "YEARLY" and draw(st.booleans()):
        parts.append("BYMONTH=" + draw(st.sampled_from(["1", "2,8", "3,6,9,12"])))
    if draw(st.booleans()) and any(
        p.startswith("BYDAY") or p.startswith("BYMONTHDAY") for p in parts
    ):
        parts.append("BYSETPOS=" + draw(st.sampled_from(["1", "-1", "2"])))
    if freq in ("HOURLY", "MINUTELY") and draw(st.booleans()):
        parts.append("BYHOUR=" + draw(st.sampled_from(["9", "8,17", "0,6,12,18"])))
    parts.append("WKST=" + draw(st.sampled_from(["MO", "SU"])))
    return ";".join(parts)


@PROPERTY_SETTINGS
@given(
    rrules(),
    st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2021, 1, 1)),
    st.integers(0, 3 * 365 * 24 * 60),
)
def test_searching_from_a_later_period_gives_what_dateutil_gives_from_dtstart(
    text: str, dtstart: datetime, minutes_later: int
) -> None:
    # In UTC wall time is the instant, so plain dateutil from DTSTART is the oracle.
    start = dtstart.replace(second=0, microsecond=0, tzinfo=UTC)
    try:
        recurrence = parse_rule(rrule=text, cron=None, timezone="UTC", start_at=start)
    except RuleError:
        assume(False)  # a combination that never occurs (BYSETPOS=2 of one Monday)
        return
    after = start + timedelta(minutes=minutes_later)
    plain = rrulestr(text, dtstart=start.replace(tzinfo=None))
    expected = [
        o.replace(tzinfo=UTC) for o in itertools.islice(plain.xafter(after.replace(tzinfo=None)), 8)
    ]
    assert list(itertools.islice(recurrence.occurrences(after), 8)) == expected


@PROPERTY_SETTINGS
@given(
    st.sampled_from(ZONES),
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
)
def test_resolution_is_monotonic_and_exact_for_existing_times(
    zone_name: str, wall: datetime
) -> None:
    zone = load_zone(zone_name)
    wall = wall.replace(second=0, microsecond=0)
    instant = resolve_wall_time(wall, zone)
    later = resolve_wall_time(wall + timedelta(minutes=1), zone)
    assert instant <= later
    if wall_time(wall.replace(tzinfo=zone).astimezone(UTC), zone) == wall:
        assert wall_time(instant, zone) == wall
    else:
        assert wall_time(instant, zone) > wall
        assert wall_time(instant - timedelta(seconds=1), zone) < wall

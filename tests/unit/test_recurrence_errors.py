"""Rules offpost refuses, each naming the field a client has to fix."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest

from offpost.recurrence import RuleError, load_zone, parse_rule

START = datetime(2026, 1, 6, 9, tzinfo=UTC)

# (rrule, cron, timezone, end_at, field, words of the message)
REFUSED = [
    (None, None, "UTC", None, "cron", "exactly one"),
    ("FREQ=DAILY", "0 9 * * *", "UTC", None, "rrule", "exactly one"),
    ("FREQ=DAILY", None, "Mars/Olympus_Mons", None, "timezone", "unknown time zone"),
    ("FREQ=DAILY", None, "../../etc/passwd", None, "timezone", "unknown time zone"),
    ("FREQ=DAILY", None, "UTC", datetime(2026, 1, 5, tzinfo=UTC), "end_at", "before start_at"),
    ("", None, "UTC", None, "rrule", "expected one RRULE"),
    ("BYDAY=MO", None, "UTC", None, "rrule", "FREQ is required"),
    ("FREQ=FORTNIGHTLY", None, "UTC", None, "rrule", "FREQ=FORTNIGHTLY"),
    ("FREQ=SECONDLY", None, "UTC", None, "rrule", "minute precision"),
    ("FREQ=DAILY;BYSECOND=5", None, "UTC", None, "rrule", "minute precision"),
    ("FREQ=MINUTELY;COUNT=999999", None, "UTC", None, "rrule", "at most 10000"),
    ("FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z", None, "UTC", None, "rrule", "COUNT and UNTIL"),
    ("FREQ=DAILY;INTERVAL=0", None, "UTC", None, "rrule", "INTERVAL=0"),
    ("FREQ=DAILY;BYHOUR=24", None, "UTC", None, "rrule", "outside"),
    ("FREQ=MONTHLY;BYMONTHDAY=32", None, "UTC", None, "rrule", "outside"),
    ("FREQ=MONTHLY;BYMONTHDAY=0", None, "UTC", None, "rrule", "outside"),
    ("FREQ=YEARLY;BYMONTH=13", None, "UTC", None, "rrule", "outside"),
    ("FREQ=WEEKLY;BYDAY=XX", None, "UTC", None, "rrule", "not a day"),
    ("FREQ=WEEKLY;BYDAY=1MO", None, "UTC", None, "rrule", "ordinals"),
    ("FREQ=MONTHLY;BYDAY=6MO", None, "UTC", None, "rrule", "outside"),
    ("FREQ=MONTHLY;BYWEEKNO=3", None, "UTC", None, "rrule", "BYWEEKNO"),
    ("FREQ=DAILY;BYYEARDAY=3", None, "UTC", None, "rrule", "BYYEARDAY"),
    ("FREQ=WEEKLY;BYMONTHDAY=3", None, "UTC", None, "rrule", "BYMONTHDAY"),
    ("FREQ=DAILY;BYSETPOS=1", None, "UTC", None, "rrule", "BYSETPOS"),
    ("FREQ=DAILY;FREQ=WEEKLY", None, "UTC", None, "rrule", "twice"),
    ("FREQ=DAILY;X-NAME=1", None, "UTC", None, "rrule", "unknown rule part"),
    ("FREQ=DAILY;UNTIL=2026-12-01", None, "UTC", None, "rrule", "UNTIL"),
    ("FREQ=DAILY;UNTIL=20261301T000000Z", None, "UTC", None, "rrule", "not a valid date"),
    ("DTSTART:20260101T090000\nRRULE:FREQ=DAILY", None, "UTC", None, "rrule", "one RRULE"),
    ("FREQ=HOURLY;INTERVAL=2;BYHOUR=4", None, "UTC", None, "rrule", "empty"),
    # Never occurs: refused quickly instead of searching until the year 9999.
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", None, "UTC", None, "rrule", "no occurrence"),
    ("FREQ=MINUTELY;BYMONTH=4;BYMONTHDAY=31", None, "UTC", None, "rrule", "no occurrence"),
    ("FREQ=DAILY;INTERVAL=7;BYDAY=MO", None, "UTC", None, "rrule", "no occurrence"),
    ("FREQ=DAILY;COUNT=2", None, "UTC", START, "rrule", None),  # fine: one occurrence
    ("FREQ=DAILY;UNTIL=20260101T000000Z", None, "UTC", None, "rrule", "no occurrence"),
    (None, "0 9 * *", "UTC", None, "cron", "5 fields"),
    (None, "0 9 * * * 2026", "UTC", None, "cron", "5 fields"),
    (None, "@daily", "UTC", None, "cron", "5 fields"),
    (None, "61 9 * * *", "UTC", None, "cron", "not valid"),
    (None, "0 24 * * *", "UTC", None, "cron", "not valid"),
    (None, "0 9 L * *", "UTC", None, "cron", "day of month"),
    (None, "0 9 * * 1#2", "UTC", None, "cron", "day of week"),
    (None, "0 9 ? * *", "UTC", None, "cron", "day of month"),
    (None, "H 9 * * *", "UTC", None, "cron", "minute"),
    (None, "0 9 * FOO *", "UTC", None, "cron", "month"),
    (None, "0 9 31 2 *", "UTC", None, "cron", "no occurrence"),
]


@pytest.mark.parametrize(("rrule", "cron", "zone", "end_at", "field", "words"), REFUSED)
def test_a_bad_rule_names_its_field(
    rrule: str | None,
    cron: str | None,
    zone: str,
    end_at: datetime | None,
    field: str,
    words: str | None,
) -> None:
    started = time.monotonic()
    if words is None:
        parse_rule(rrule=rrule, cron=cron, timezone=zone, start_at=START, end_at=end_at)
        return
    with pytest.raises(RuleError) as caught:
        parse_rule(rrule=rrule, cron=cron, timezone=zone, start_at=START, end_at=end_at)
    assert caught.value.field == field
    assert words in caught.value.message
    assert time.monotonic() - started < 2


ACCEPTED_CRON = [
    "0 9 * * 1,3",
    "*/15 8-18 * * MON-FRI",
    "0 0 1,15 * *",
    "30 6 * JAN,JUL SUN",
    "5/10 * * * *",
    "0 12 * * 7",
    "0 9 29 2 *",
]


@pytest.mark.parametrize("cron", ACCEPTED_CRON)
def test_classic_cron_is_accepted(cron: str) -> None:
    parse_rule(rrule=None, cron=cron, timezone="Europe/Berlin", start_at=START)


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(rrule="FREQ=DAILY", cron=None, timezone="UTC", start_at=datetime(2026, 1, 1))
    assert caught.value.field == "start_at"


def test_zones_come_from_the_tzdata_package() -> None:
    zone = load_zone("Australia/Lord_Howe")
    assert zone.key == "Australia/Lord_Howe"
    assert load_zone("Australia/Lord_Howe") is zone  # cached


def test_an_rrule_prefix_and_lower_case_are_accepted() -> None:
    recurrence = parse_rule(
        rrule="RRULE:freq=weekly;byday=mo", cron=None, timezone="UTC", start_at=START
    )
    assert next(recurrence.occurrences()) == datetime(2026, 1, 12, 9, tzinfo=UTC)


def test_a_floating_until_is_wall_time_in_the_zone() -> None:
    start = datetime(2026, 1, 1, 9, tzinfo=load_zone("Europe/Berlin"))
    recurrence = parse_rule(
        rrule="FREQ=DAILY;UNTIL=20260103T090000",
        cron=None,
        timezone="Europe/Berlin",
        start_at=start,
    )
    assert len(list(recurrence.occurrences())) == 3


def test_bysecond_zero_is_minute_precision_and_accepted() -> None:
    """Many RRULE generators write BYSECOND=0; it means what minute precision means."""
    plain = parse_rule(
        rrule="FREQ=DAILY;BYHOUR=9;BYMINUTE=0", cron=None, timezone="UTC", start_at=START
    )
    zero = parse_rule(
        rrule="FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0", cron=None, timezone="UTC", start_at=START
    )
    first = list(itertools.islice(zero.occurrences(), 5))
    assert first == list(itertools.islice(plain.occurrences(), 5))
    assert [o.second for o in first] == [0] * 5


def test_a_counted_rule_starts_at_most_a_year_back() -> None:
    """Its count runs from the start at every evaluation: the work must stay bounded.
    A rule stored earlier (no ``now``) is still read."""
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    old = now - timedelta(days=400)
    for rrule in ("FREQ=MINUTELY;COUNT=10000", "RRULE:FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;COUNT=9"):
        with pytest.raises(RuleError, match="at most a year in the past") as caught:
            parse_rule(rrule=rrule, cron=None, timezone="UTC", start_at=old, now=now)
        assert caught.value.field == "start_at"
        parse_rule(rrule=rrule, cron=None, timezone="UTC", start_at=old)
    # Without COUNT the sequence is read from near "now", whatever the start.
    parse_rule(rrule="FREQ=MINUTELY", cron=None, timezone="UTC", start_at=old, now=now)
    parse_rule(rrule="FREQ=MINUTELY;COUNT=10000", cron=None, timezone="UTC", start_at=now, now=now)

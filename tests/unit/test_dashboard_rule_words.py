"""Rules in words for the dashboard (``offpost.api.dashboard.rule_words``): pure, no I/O.

A table of common RRULE and cron rules and their sentences; rules with no short
sentence give ``None`` (the page then shows the rule's text); and, for the
sentences that name days and times, the rule's own occurrences
(``offpost.recurrence``) fall on exactly those days and times.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime

import pytest

from offpost.api.dashboard.rule_words import DAYS, describe_rule
from offpost.recurrence import load_zone, parse_rule

#: The schedules' start: Tuesday 1 December 2026, 09:30 wall time in the zone.
START = datetime(2026, 12, 1, 9, 30)
ZONE = "Europe/Berlin"

RRULES = [
    ("FREQ=DAILY;BYHOUR=9;BYMINUTE=0", "every day at 09:00"),
    ("FREQ=DAILY", "every day at 09:30"),
    ("RRULE:FREQ=DAILY;BYHOUR=9,17;BYMINUTE=0", "every day at 09:00 and 17:00"),
    ("FREQ=DAILY;INTERVAL=2;BYHOUR=7;BYMINUTE=15;BYSECOND=0", "every 2 days at 07:15"),
    ("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=0", "every weekday at 08:00"),
    ("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0", "every Monday and Wednesday at 09:00"),
    ("freq=weekly;byday=we,mo;byhour=9;byminute=0", "every Monday and Wednesday at 09:00"),
    ("FREQ=WEEKLY", "every Tuesday at 09:30"),
    ("FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=10;BYMINUTE=0", "every Saturday and Sunday at 10:00"),
    (
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;BYHOUR=12;BYMINUTE=0;WKST=SU",
        "every 2 weeks on Mondays and Fridays at 12:00",
    ),
    ("FREQ=MINUTELY;INTERVAL=15", "every 15 minutes"),
    ("FREQ=MINUTELY", "every minute"),
    ("FREQ=HOURLY;BYMINUTE=0", "every hour at :00"),
    ("FREQ=HOURLY;INTERVAL=3", "every 3 hours at :30"),
    (
        "FREQ=HOURLY;BYDAY=SA,SU;BYMINUTE=15,45",
        "every hour at :15 and :45 on Saturdays and Sundays",
    ),
    ("FREQ=MONTHLY;BYMONTHDAY=1;BYHOUR=9;BYMINUTE=0", "on the 1st of every month at 09:00"),
    (
        "FREQ=MONTHLY;BYMONTHDAY=2,3,22,-1",
        "on the 2nd, 3rd, 22nd and last day of every month at 09:30",
    ),
    ("FREQ=MONTHLY", "on the 1st of every month at 09:30"),
    ("FREQ=MONTHLY;INTERVAL=3;BYMONTHDAY=11", "on the 11th of every 3 months at 09:30"),
    ("FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0", "on the first Monday of every month at 09:00"),
    ("FREQ=MONTHLY;BYDAY=-1FR", "on the last Friday of every month at 09:30"),
    ("FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=1;BYHOUR=8;BYMINUTE=0", "every year on 1 March at 08:00"),
    ("FREQ=YEARLY", "every year on 1 December at 09:30"),
    ("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;COUNT=10", "every day at 09:00, 10 times"),
    ("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;COUNT=1", "every day at 09:00, once"),
    ("FREQ=DAILY;UNTIL=20261231T225959Z", "every day at 09:30, until 2026-12-31 22:59 UTC"),
    ("FREQ=WEEKLY;UNTIL=20270131", "every Tuesday at 09:30, until 2027-01-31"),
]

CRONS = [
    ("0 9 * * *", "every day at 09:00"),
    ("0 9 * * 1,3", "every Monday and Wednesday at 09:00"),
    ("0 9 * * mon,wed", "every Monday and Wednesday at 09:00"),
    ("0 9 * * 1-5", "every weekday at 09:00"),
    ("0 9 * * MON-FRI", "every weekday at 09:00"),
    ("0 10 * * 0", "every Sunday at 10:00"),
    ("0 10 * * 7", "every Sunday at 10:00"),
    ("0 12 * * 6,0", "every Saturday and Sunday at 12:00"),
    ("0 9 * * 0-6", "every day at 09:00"),
    ("0 9,17 * * *", "every day at 09:00 and 17:00"),
    ("30 8 1 * *", "on the 1st of every month at 08:30"),
    ("0 9 1,15 * *", "on the 1st and 15th of every month at 09:00"),
    ("0 0 1 1 *", "every year on 1 January at 00:00"),
    ("0 6 24 dec *", "every year on 24 December at 06:00"),
    ("*/15 * * * *", "every 15 minutes"),
    ("* * * * *", "every minute"),
    ("*/15 * * * 1", "every 15 minutes on Mondays"),
    ("0 * * * *", "every hour at :00"),
    ("0,30 * * * *", "every hour at :00 and :30"),
    ("30 */2 * * *", "every 2 hours at :30"),
    ("0 * 1 * *", "every hour at :00, on the 1st of every month"),
    ("0 9-17 * * 1-5", "every hour at :00 from 09:00 to 17:00 on weekdays"),
    ("0 8-18/2 * * *", "every day at 08:00, 10:00, 12:00, 14:00, 16:00 and 18:00"),
]

#: Rules with no short, true sentence.
NO_WORDS = [
    ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", None),
    ("FREQ=YEARLY;BYYEARDAY=100", None),
    ("FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO", None),
    # BYMONTHDAY without BYMONTH runs monthly: "every year" would be wrong.
    ("FREQ=YEARLY;BYMONTHDAY=1", None),
    ("FREQ=YEARLY;BYMONTH=1,7;BYMONTHDAY=1", None),
    ("FREQ=MONTHLY;BYDAY=MO", None),
    ("FREQ=MONTHLY;BYDAY=2MO;BYMONTHDAY=1", None),
    ("FREQ=MONTHLY;BYDAY=-2FR", None),
    ("FREQ=MONTHLY;BYMONTHDAY=-2", None),
    ("FREQ=DAILY;INTERVAL=2;BYDAY=MO", None),
    ("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TU,WE,TH,FR,SA,SU", None),
    ("FREQ=MINUTELY;INTERVAL=5;BYHOUR=9", None),
    ("FREQ=HOURLY;BYHOUR=9,10", None),
    ("FREQ=DAILY;BYHOUR=9;BYMINUTE=0,5,10,15,20,25,30", None),
    ("FREQ=SECONDLY", None),
    ("FREQ=DAILY;BYSECOND=30", None),
    ("BYHOUR=9", None),
    ("not a rule", None),
]
NO_CRON_WORDS = [
    "0 9 1 * 1",  # day of month or day of week (Vixie cron): no short sentence
    "*/7 * * * *",  # resets at each hour: not "every 7 minutes"
    "*/15 9 * * *",
    "0 9 * 1 *",
    "0 9 1-31/2 * *",
    "0 9 * *",
    "61 9 * * *",
    "0 0 5-1 * *",
]


@pytest.mark.parametrize(("rrule", "words"), RRULES, ids=[r for r, _ in RRULES])
def test_rrules_in_words(rrule: str, words: str) -> None:
    assert describe_rule(rrule, None, START) == words


@pytest.mark.parametrize(("cron", "words"), CRONS, ids=[c for c, _ in CRONS])
def test_cron_in_words(cron: str, words: str) -> None:
    assert describe_rule(None, cron, START) == words
    assert describe_rule(None, cron) == words  # a cron rule needs no start


@pytest.mark.parametrize(("rrule", "words"), NO_WORDS, ids=[r for r, _ in NO_WORDS])
def test_rrules_without_words(rrule: str, words: None) -> None:
    assert describe_rule(rrule, None, START) is words


@pytest.mark.parametrize("cron", NO_CRON_WORDS)
def test_cron_without_words(cron: str) -> None:
    assert describe_rule(None, cron) is None


def test_what_an_rrule_takes_from_its_start_needs_the_start() -> None:
    assert describe_rule("FREQ=DAILY", None) is None
    assert describe_rule("FREQ=WEEKLY;BYHOUR=9;BYMINUTE=0", None) is None
    # Nothing to take from it: no start needed.
    assert describe_rule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0", None) == (
        "every Monday at 09:00"
    )
    assert describe_rule("FREQ=MINUTELY;INTERVAL=5", None) == "every 5 minutes"
    assert describe_rule(None, None, START) is None


# --- the sentences say what the rules do ---------------------------------------------------

_TIMES = re.compile(r"\b(\d\d):(\d\d)\b")


def _claimed(words: str) -> tuple[set[int] | None, set[tuple[int, int]]]:
    """The weekdays (``None``: any) and times of day an "every … at …" sentence names."""
    period, _, times = words.partition(" at ")
    days = {n for n, day in enumerate(DAYS) if day in period}
    if "weekday" in period:
        days = set(range(5))
    return days or None, {(int(h), int(m)) for h, m in _TIMES.findall(times)}


#: Rules whose sentence is "every <days> at <times>", checked against their occurrences.
DAYS_AND_TIMES = [
    ("FREQ=DAILY;BYHOUR=9;BYMINUTE=0", None),
    ("FREQ=DAILY", None),
    ("RRULE:FREQ=DAILY;BYHOUR=9,17;BYMINUTE=0", None),
    ("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=0", None),
    ("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0", None),
    ("FREQ=WEEKLY", None),
    ("FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=10;BYMINUTE=0", None),
    (None, "0 9 * * *"),
    (None, "0 9 * * 1,3"),
    (None, "0 9 * * mon,wed"),
    (None, "0 9 * * 1-5"),
    (None, "0 10 * * 0"),
    (None, "0 10 * * 7"),
    (None, "0 12 * * 6,0"),
    (None, "0 9,17 * * *"),
    (None, "0 8-18/2 * * *"),
]


@pytest.mark.parametrize(("rrule", "cron"), DAYS_AND_TIMES, ids=[r or c for r, c in DAYS_AND_TIMES])
def test_the_occurrences_fall_on_the_days_and_times_the_words_name(
    rrule: str | None, cron: str | None
) -> None:
    words = describe_rule(rrule, cron, START)
    assert words is not None
    days, times = _claimed(words)
    assert times
    recurrence = parse_rule(
        rrule=rrule, cron=cron, timezone=ZONE, start_at=START.replace(tzinfo=load_zone(ZONE))
    )
    seen = set()
    for instant in itertools.islice(recurrence.occurrences(), 60):
        local = recurrence.local(instant)
        assert (local.hour, local.minute) in times, (words, local)
        if days is not None:
            assert local.weekday() in days, (words, local)
        seen.add((local.weekday(), local.hour, local.minute))
    # And every day and time named comes up.
    assert {(h, m) for _, h, m in seen} == times
    assert {d for d, _, _ in seen} == (days if days is not None else set(range(7)))

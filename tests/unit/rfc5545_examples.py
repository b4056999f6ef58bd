"""The recurrence examples of RFC 5545 §3.8.5.3, with the results the RFC states.

Every example has DTSTART;TZID=America/New_York as the RFC writes it. Results
are local wall times in New York; the RFC gives them as "(1997 9:00 AM EDT)
September 2-11" and the offsets follow from the zone. For rules that run
forever the table holds the prefix the RFC lists. Shared by the pure tests and
the preview endpoint's tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ZONE = "America/New_York"


@dataclass(frozen=True)
class Example:
    name: str
    dtstart: str  # local wall time in New York, "1997-09-02T09:00"
    rrule: str
    expected: list[str]  # local wall times, "1997-09-02T09:00"
    forever: bool = False  # the list is only the beginning


def on(year: int, month: int, days: Iterable[int], time: str = "09:00") -> list[str]:
    return [f"{year:04d}-{month:02d}-{day:02d}T{time}" for day in days]


def times(date: str, *clock: str) -> list[str]:
    return [f"{date}T{c}" for c in clock]


def _every_20_minutes(date: str) -> list[str]:
    return [f"{date}T{h:02d}:{m:02d}" for h in range(9, 17) for m in (0, 20, 40)]


_JAN_3_YEARS = on(1998, 1, range(1, 32)) + on(1999, 1, range(1, 32)) + on(2000, 1, range(1, 32))
_TU_TH_5_WEEKS = on(1997, 9, [2, 4, 9, 11, 16, 18, 23, 25, 30]) + on(1997, 10, [2])
_20_MINUTES = _every_20_minutes("1997-09-02") + _every_20_minutes("1997-09-03")

EXAMPLES: list[Example] = [
    Example(
        "daily, 10 occurrences",
        "1997-09-02T09:00",
        "FREQ=DAILY;COUNT=10",
        on(1997, 9, range(2, 12)),
    ),
    Example(
        "daily until December 24, 1997",
        "1997-09-02T09:00",
        "FREQ=DAILY;UNTIL=19971224T000000Z",
        on(1997, 9, range(2, 31))
        + on(1997, 10, range(1, 32))
        + on(1997, 11, range(1, 31))
        + on(1997, 12, range(1, 24)),
    ),
    Example(
        "every other day, forever",
        "1997-09-02T09:00",
        "FREQ=DAILY;INTERVAL=2",
        on(1997, 9, range(2, 31, 2))
        + on(1997, 10, range(2, 31, 2))
        + on(1997, 11, range(1, 30, 2))
        + on(1997, 12, [1, 3]),
        forever=True,
    ),
    Example(
        "every 10 days, 5 occurrences",
        "1997-09-02T09:00",
        "FREQ=DAILY;INTERVAL=10;COUNT=5",
        on(1997, 9, [2, 12, 22]) + on(1997, 10, [2, 12]),
    ),
    Example(
        "every day in January for 3 years (yearly)",
        "1998-01-01T09:00",
        "FREQ=YEARLY;UNTIL=20000131T140000Z;BYMONTH=1;BYDAY=SU,MO,TU,WE,TH,FR,SA",
        _JAN_3_YEARS,
    ),
    Example(
        "every day in January for 3 years (daily)",
        "1998-01-01T09:00",
        "FREQ=DAILY;UNTIL=20000131T140000Z;BYMONTH=1",
        _JAN_3_YEARS,
    ),
    Example(
        "weekly, 10 occurrences",
        "1997-09-02T09:00",
        "FREQ=WEEKLY;COUNT=10",
        on(1997, 9, [2, 9, 16, 23, 30]) + on(1997, 10, [7, 14, 21, 28]) + on(1997, 11, [4]),
    ),
    Example(
        "weekly until December 24, 1997",
        "1997-09-02T09:00",
        "FREQ=WEEKLY;UNTIL=19971224T000000Z",
        on(1997, 9, [2, 9, 16, 23, 30])
        + on(1997, 10, [7, 14, 21, 28])
        + on(1997, 11, [4, 11, 18, 25])
        + on(1997, 12, [2, 9, 16, 23]),
    ),
    Example(
        "every other week, forever",
        "1997-09-02T09:00",
        "FREQ=WEEKLY;INTERVAL=2;WKST=SU",
        on(1997, 9, [2, 16, 30])
        + on(1997, 10, [14, 28])
        + on(1997, 11, [11, 25])
        + on(1997, 12, [9, 23])
        + on(1998, 1, [6, 20])
        + on(1998, 2, [3, 17]),
        forever=True,
    ),
    Example(
        "Tuesday and Thursday for five weeks (UNTIL)",
        "1997-09-02T09:00",
        "FREQ=WEEKLY;UNTIL=19971007T000000Z;WKST=SU;BYDAY=TU,TH",
        _TU_TH_5_WEEKS,
    ),
    Example(
        "Tuesday and Thursday for five weeks (COUNT)",
        "1997-09-02T09:00",
        "FREQ=WEEKLY;COUNT=10;WKST=SU;BYDAY=TU,TH",
        _TU_TH_5_WEEKS,
    ),
    Example(
        "every other week on MO, WE, FR until December 24, 1997",
        "1997-09-01T09:00",
        "FREQ=WEEKLY;INTERVAL=2;UNTIL=19971224T000000Z;WKST=SU;BYDAY=MO,WE,FR",
        on(1997, 9, [1, 3, 5, 15, 17, 19, 29])
        + on(1997, 10, [1, 3, 13, 15, 17, 27, 29, 31])
        + on(1997, 11, [10, 12, 14, 24, 26, 28])
        + on(1997, 12, [8, 10, 12, 22]),
    ),
    Example(
        "every other week on TU and TH, 8 occurrences",
        "1997-09-02T09:00",
        "FREQ=WEEKLY;INTERVAL=2;COUNT=8;WKST=SU;BYDAY=TU,TH",
        on(1997, 9, [2, 4, 16, 18, 30]) + on(1997, 10, [2, 14, 16]),
    ),
    Example(
        "monthly on the first Friday, 10 occurrences",
        "1997-09-05T09:00",
        "FREQ=MONTHLY;COUNT=10;BYDAY=1FR",
        on(1997, 9, [5])
        + on(1997, 10, [3])
        + on(1997, 11, [7])
        + on(1997, 12, [5])
        + on(1998, 1, [2])
        + on(1998, 2, [6])
        + on(1998, 3, [6])
        + on(1998, 4, [3])
        + on(1998, 5, [1])
        + on(1998, 6, [5]),
    ),
    Example(
        "monthly on the first Friday until December 24, 1997",
        "1997-09-05T09:00",
        "FREQ=MONTHLY;UNTIL=19971224T000000Z;BYDAY=1FR",
        on(1997, 9, [5]) + on(1997, 10, [3]) + on(1997, 11, [7]) + on(1997, 12, [5]),
    ),
    Example(
        "every other month on the first and last Sunday, 10 occurrences",
        "1997-09-07T09:00",
        "FREQ=MONTHLY;INTERVAL=2;COUNT=10;BYDAY=1SU,-1SU",
        on(1997, 9, [7, 28])
        + on(1997, 11, [2, 30])
        + on(1998, 1, [4, 25])
        + on(1998, 3, [1, 29])
        + on(1998, 5, [3, 31]),
    ),
    Example(
        "monthly on the second-to-last Monday for 6 months",
        "1997-09-22T09:00",
        "FREQ=MONTHLY;COUNT=6;BYDAY=-2MO",
        on(1997, 9, [22])
        + on(1997, 10, [20])
        + on(1997, 11, [17])
        + on(1997, 12, [22])
        + on(1998, 1, [19])
        + on(1998, 2, [16]),
    ),
    Example(
        "monthly on the third-to-the-last day, forever",
        "1997-09-28T09:00",
        "FREQ=MONTHLY;BYMONTHDAY=-3",
        on(1997, 9, [28])
        + on(1997, 10, [29])
        + on(1997, 11, [28])
        + on(1997, 12, [29])
        + on(1998, 1, [29])
        + on(1998, 2, [26]),
        forever=True,
    ),
    Example(
        "monthly on the 2nd and 15th, 10 occurrences",
        "1997-09-02T09:00",
        "FREQ=MONTHLY;COUNT=10;BYMONTHDAY=2,15",
        on(1997, 9, [2, 15])
        + on(1997, 10, [2, 15])
        + on(1997, 11, [2, 15])
        + on(1997, 12, [2, 15])
        + on(1998, 1, [2, 15]),
    ),
    Example(
        "monthly on the first and last day, 10 occurrences",
        "1997-09-30T09:00",
        "FREQ=MONTHLY;COUNT=10;BYMONTHDAY=1,-1",
        on(1997, 9, [30])
        + on(1997, 10, [1, 31])
        + on(1997, 11, [1, 30])
        + on(1997, 12, [1, 31])
        + on(1998, 1, [1, 31])
        + on(1998, 2, [1]),
    ),
    Example(
        "every 18 months on the 10th to 15th, 10 occurrences",
        "1997-09-10T09:00",
        "FREQ=MONTHLY;INTERVAL=18;COUNT=10;BYMONTHDAY=10,11,12,13,14,15",
        on(1997, 9, range(10, 16)) + on(1999, 3, range(10, 14)),
    ),
    Example(
        "every Tuesday, every other month",
        "1997-09-02T09:00",
        "FREQ=MONTHLY;INTERVAL=2;BYDAY=TU",
        on(1997, 9, [2, 9, 16, 23, 30])
        + on(1997, 11, [4, 11, 18, 25])
        + on(1998, 1, [6, 13, 20, 27])
        + on(1998, 3, [3, 10, 17, 24, 31]),
        forever=True,
    ),
    Example(
        "yearly in June and July, 10 occurrences",
        "1997-06-10T09:00",
        "FREQ=YEARLY;COUNT=10;BYMONTH=6,7",
        [d for y in range(1997, 2002) for d in on(y, 6, [10]) + on(y, 7, [10])],
    ),
    Example(
        "every other year in January, February and March, 10 occurrences",
        "1997-03-10T09:00",
        "FREQ=YEARLY;INTERVAL=2;COUNT=10;BYMONTH=1,2,3",
        on(1997, 3, [10])
        + [d for y in (1999, 2001, 2003) for m in (1, 2, 3) for d in on(y, m, [10])],
    ),
    Example(
        "every third year on the 1st, 100th and 200th day, 10 occurrences",
        "1997-01-01T09:00",
        "FREQ=YEARLY;INTERVAL=3;COUNT=10;BYYEARDAY=1,100,200",
        on(1997, 1, [1])
        + on(1997, 4, [10])
        + on(1997, 7, [19])
        + on(2000, 1, [1])
        + on(2000, 4, [9])
        + on(2000, 7, [18])
        + on(2003, 1, [1])
        + on(2003, 4, [10])
        + on(2003, 7, [19])
        + on(2006, 1, [1]),
    ),
    Example(
        "every 20th Monday of the year, forever",
        "1997-05-19T09:00",
        "FREQ=YEARLY;BYDAY=20MO",
        on(1997, 5, [19]) + on(1998, 5, [18]) + on(1999, 5, [17]),
        forever=True,
    ),
    Example(
        "Monday of week number 20, forever",
        "1997-05-12T09:00",
        "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
        on(1997, 5, [12]) + on(1998, 5, [11]) + on(1999, 5, [17]),
        forever=True,
    ),
    Example(
        "every Thursday in March, forever",
        "1997-03-13T09:00",
        "FREQ=YEARLY;BYMONTH=3;BYDAY=TH",
        on(1997, 3, [13, 20, 27]) + on(1998, 3, [5, 12, 19, 26]) + on(1999, 3, [4, 11, 18, 25]),
        forever=True,
    ),
    Example(
        "every Thursday in June, July and August, forever",
        "1997-06-05T09:00",
        "FREQ=YEARLY;BYDAY=TH;BYMONTH=6,7,8",
        on(1997, 6, [5, 12, 19, 26])
        + on(1997, 7, [3, 10, 17, 24, 31])
        + on(1997, 8, [7, 14, 21, 28])
        + on(1998, 6, [4, 11, 18, 25])
        + on(1998, 7, [2, 9, 16, 23, 30])
        + on(1998, 8, [6, 13, 20, 27])
        + on(1999, 6, [3, 10, 17, 24])
        + on(1999, 7, [1, 8, 15, 22, 29])
        + on(1999, 8, [5, 12, 19, 26]),
        forever=True,
    ),
    Example(
        # The RFC adds EXDATE for DTSTART; here DTSTART does not match the rule,
        # so it is no occurrence anyway (see offpost.recurrence).
        "every Friday the 13th, forever",
        "1997-09-02T09:00",
        "FREQ=MONTHLY;BYDAY=FR;BYMONTHDAY=13",
        on(1998, 2, [13])
        + on(1998, 3, [13])
        + on(1998, 11, [13])
        + on(1999, 8, [13])
        + on(2000, 10, [13]),
        forever=True,
    ),
    Example(
        "the first Saturday that follows the first Sunday of the month, forever",
        "1997-09-13T09:00",
        "FREQ=MONTHLY;BYDAY=SA;BYMONTHDAY=7,8,9,10,11,12,13",
        on(1997, 9, [13])
        + on(1997, 10, [11])
        + on(1997, 11, [8])
        + on(1997, 12, [13])
        + on(1998, 1, [10])
        + on(1998, 2, [7])
        + on(1998, 3, [7])
        + on(1998, 4, [11])
        + on(1998, 5, [9])
        + on(1998, 6, [13]),
        forever=True,
    ),
    Example(
        "every 4 years, the first Tuesday after a Monday in November (US elections)",
        "1996-11-05T09:00",
        "FREQ=YEARLY;INTERVAL=4;BYMONTH=11;BYDAY=TU;BYMONTHDAY=2,3,4,5,6,7,8",
        on(1996, 11, [5]) + on(2000, 11, [7]) + on(2004, 11, [2]),
        forever=True,
    ),
    Example(
        "the third instance of TU, WE or TH, for the next 3 months",
        "1997-09-04T09:00",
        "FREQ=MONTHLY;COUNT=3;BYDAY=TU,WE,TH;BYSETPOS=3",
        on(1997, 9, [4]) + on(1997, 10, [7]) + on(1997, 11, [6]),
    ),
    Example(
        "the second-to-last weekday of the month",
        "1997-09-29T09:00",
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-2",
        on(1997, 9, [29])
        + on(1997, 10, [30])
        + on(1997, 11, [27])
        + on(1997, 12, [30])
        + on(1998, 1, [29])
        + on(1998, 2, [26])
        + on(1998, 3, [30]),
        forever=True,
    ),
    Example(
        # The RFC lists 09:00, 12:00 and 15:00, but 15:00 EDT is after its own
        # UNTIL (17:00Z is 13:00 EDT); every implementation stops at 12:00.
        "every 3 hours from 9:00 until 17:00Z",
        "1997-09-02T09:00",
        "FREQ=HOURLY;INTERVAL=3;UNTIL=19970902T170000Z",
        times("1997-09-02", "09:00", "12:00"),
    ),
    Example(
        "every 15 minutes, 6 occurrences",
        "1997-09-02T09:00",
        "FREQ=MINUTELY;INTERVAL=15;COUNT=6",
        times("1997-09-02", "09:00", "09:15", "09:30", "09:45", "10:00", "10:15"),
    ),
    Example(
        "every hour and a half, 4 occurrences",
        "1997-09-02T09:00",
        "FREQ=MINUTELY;INTERVAL=90;COUNT=4",
        times("1997-09-02", "09:00", "10:30", "12:00", "13:30"),
    ),
    Example(
        "every 20 minutes from 9:00 to 16:40 (daily)",
        "1997-09-02T09:00",
        "FREQ=DAILY;BYHOUR=9,10,11,12,13,14,15,16;BYMINUTE=0,20,40",
        _20_MINUTES,
        forever=True,
    ),
    Example(
        "every 20 minutes from 9:00 to 16:40 (minutely)",
        "1997-09-02T09:00",
        "FREQ=MINUTELY;INTERVAL=20;BYHOUR=9,10,11,12,13,14,15,16",
        _20_MINUTES,
        forever=True,
    ),
    Example(
        "WKST=MO changes which days an every-other-week rule takes",
        "1997-08-05T09:00",
        "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
        on(1997, 8, [5, 10, 19, 24]),
    ),
    Example(
        "WKST=SU changes which days an every-other-week rule takes",
        "1997-08-05T09:00",
        "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
        on(1997, 8, [5, 17, 19, 31]),
    ),
    Example(
        "an invalid date (February 30) is ignored",
        "2007-01-15T09:00",
        "FREQ=MONTHLY;BYMONTHDAY=15,30;COUNT=5",
        on(2007, 1, [15, 30]) + on(2007, 2, [15]) + on(2007, 3, [15, 30]),
    ),
]

"""RFC 5545 §3.8.5.3, example by example, through the pure recurrence function."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from offpost.recurrence import format_local, load_zone, parse_rule
from tests.unit.rfc5545_examples import EXAMPLES, ZONE, Example

NEW_YORK = load_zone(ZONE)


def start_of(example: Example) -> datetime:
    return datetime.fromisoformat(example.dtstart).replace(tzinfo=NEW_YORK)


def expected_strings(example: Example) -> list[str]:
    """The RFC's wall times with New York's offset of the day, as the API prints them."""
    return [
        format_local(datetime.fromisoformat(wall).replace(tzinfo=NEW_YORK), NEW_YORK)
        for wall in example.expected
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_rfc5545_example(example: Example) -> None:
    recurrence = parse_rule(
        rrule=example.rrule, cron=None, timezone=ZONE, start_at=start_of(example)
    )
    # One more than stated, to prove that finite rules stop where the RFC says.
    produced = list(itertools.islice(recurrence.occurrences(), len(example.expected) + 1))
    if example.forever:
        produced = produced[: len(example.expected)]
    assert [format_local(o, NEW_YORK) for o in produced] == expected_strings(example)


def test_the_offsets_follow_new_york_across_the_1997_autumn_change() -> None:
    example = next(e for e in EXAMPLES if e.name == "weekly, 10 occurrences")
    printed = expected_strings(example)
    assert printed[7] == "1997-10-21T09:00:00-04:00"  # EDT
    assert printed[8] == "1997-10-28T09:00:00-05:00"  # EST

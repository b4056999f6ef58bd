"""The dashboard chart's layout: counts per minute to SVG coordinates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from offpost.api.dashboard.chart import HEIGHT, LEFT, WIDTH, MinuteCounts, chart

START = datetime(2026, 3, 1, 9, 1, tzinfo=UTC)


def counts(published: dict[int, int], failed: dict[int, int], minutes: int = 180) -> MinuteCounts:
    return MinuteCounts(
        start=START,
        published=[published.get(i, 0) for i in range(minutes)],
        failed=[failed.get(i, 0) for i in range(minutes)],
    )


def test_an_empty_window_draws_no_bars() -> None:
    drawn = chart(counts({}, {}))
    assert drawn.bars == []
    assert drawn.y_max == 1
    assert (drawn.published_total, drawn.failed_total) == (0, 0)
    assert drawn.hours == 3


def test_bars_stack_failed_on_published() -> None:
    drawn = chart(counts({59: 6}, {59: 2, 179: 1}))
    assert drawn.y_max == 10
    first, last = drawn.bars
    assert first.x == pytest.approx(LEFT + 59 * WIDTH / 180)
    assert first.published_h == pytest.approx(HEIGHT * 0.6)
    assert first.published_y == pytest.approx(HEIGHT * 0.4)
    assert first.failed_h == pytest.approx(HEIGHT * 0.2)
    assert first.failed_y == pytest.approx(HEIGHT * 0.2)
    assert first.label == "10:00 UTC: 6 published, 2 failed"
    assert last.published_h == 0
    assert (drawn.published_total, drawn.failed_total) == (6, 3)


@pytest.mark.parametrize(("peak", "top"), [(1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (480, 500)])
def test_the_scale_ends_on_a_round_number(peak: int, top: int) -> None:
    assert chart(counts({0: peak}, {})).y_max == top


@pytest.mark.parametrize(
    ("start", "labels"),
    [
        (START, ["09:01", "10:00", "11:00", "12:00"]),
        # The window's first minute is dropped when it would crowd the first hour's label.
        (START.replace(minute=55), ["10:00", "11:00", "12:00"]),
    ],
)
def test_ticks_fall_on_the_hours(start: datetime, labels: list[str]) -> None:
    window = MinuteCounts(start=start, published=[0] * 180, failed=[0] * 180)
    assert [t.label for t in chart(window).ticks] == labels

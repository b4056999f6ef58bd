"""The dashboard's chart: posts published and failed per minute over the recent hours.

:func:`outcomes_per_minute` counts in the database, one ``GROUP BY`` per
series on the minute since the epoch, with the same definitions as the stats'
``last_hour`` (published by ``published_at``; failed by ``updated_at`` of a
post now ``failed``). :func:`chart` is pure: it turns the counts into the
coordinates of an SVG drawn by the template, so the page needs no JavaScript.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, cast, extract, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from offpost.models import Post, PostStatus

#: How far back the chart looks.
WINDOW = timedelta(hours=3)
#: Drawing area of the SVG, in user units.
WIDTH = 720
HEIGHT = 140
#: Room left of and below the drawing area for the labels.
LEFT = 40
BOTTOM = 18


_TimeColumn = InstrumentedAttribute[datetime] | InstrumentedAttribute[datetime | None]


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """Posts published and failed in each minute of a window, oldest minute first."""

    start: datetime
    published: list[int]
    failed: list[int]


def _minute_of(dialect: str, column: _TimeColumn) -> ColumnElement[int]:
    """Whole minutes since the epoch of a time column, in SQL."""
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", column) / 60), Integer)
    # SQLite holds the UTC wall clock as text; strftime('%s') reads it as UTC.
    return cast(func.strftime("%s", column), Integer) // 60


def outcomes_per_minute(
    session: Session, now: datetime, window: timedelta = WINDOW
) -> MinuteCounts:
    """The counts of the ``window`` minutes that end with the current minute (``now`` aware)."""
    minutes = int(window.total_seconds() // 60)
    end_minute = int(now.timestamp() // 60)
    first_minute = end_minute - minutes + 1
    start = datetime.fromtimestamp(first_minute * 60, UTC)
    dialect = session.get_bind().dialect.name

    def series(column: _TimeColumn, status: PostStatus) -> list[int]:
        minute = _minute_of(dialect, column).label("minute")
        rows = session.execute(
            select(minute, func.count())
            .where(Post.status == status, column >= start, column <= now)
            .group_by(minute)
        )
        counts = [0] * minutes
        for at, n in rows:
            index = int(at) - first_minute
            if 0 <= index < minutes:
                counts[index] = int(n)
        return counts

    return MinuteCounts(
        start=start,
        published=series(Post.published_at, PostStatus.PUBLISHED),
        failed=series(Post.updated_at, PostStatus.FAILED),
    )


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute's stacked bar: published from the baseline up, failed on top."""

    x: float
    width: float
    published_y: float
    published_h: float
    failed_y: float
    failed_h: float
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template draws: bars, time ticks, the scale's top, the totals."""

    hours: float
    width: int
    height: int
    left: int
    bottom: int
    bars: list[Bar]
    ticks: list[Tick]
    y_max: int
    published_total: int
    failed_total: int


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... that is at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    magnitude: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def chart(counts: MinuteCounts) -> Chart:
    """Lay ``counts`` out as stacked bars with an hourly time axis (UTC)."""
    minutes = len(counts.published)
    totals = [p + f for p, f in zip(counts.published, counts.failed, strict=True)]
    y_max = _nice_ceiling(max(totals, default=0))
    step = WIDTH / max(minutes, 1)
    scale = HEIGHT / y_max
    bars = []
    for i, (published, failed) in enumerate(zip(counts.published, counts.failed, strict=True)):
        if not published and not failed:
            continue
        at = counts.start + timedelta(minutes=i)
        published_h = published * scale
        failed_h = failed * scale
        bars.append(
            Bar(
                x=round(LEFT + i * step, 2),
                width=round(max(step - 0.5, 0.5), 2),
                published_y=round(HEIGHT - published_h, 2),
                published_h=round(published_h, 2),
                failed_y=round(HEIGHT - published_h - failed_h, 2),
                failed_h=round(failed_h, 2),
                label=f"{at:%H:%M} UTC: {published} published, {failed} failed",
            )
        )
    ticks = []
    for i in range(minutes):
        at = counts.start + timedelta(minutes=i)
        if at.minute == 0 or i == 0:
            ticks.append(Tick(x=round(LEFT + i * step, 2), label=f"{at:%H:%M}"))
    if len(ticks) > 1 and ticks[1].x - ticks[0].x < 40:
        del ticks[0]  # the window's first minute sits too close to the first full hour
    return Chart(
        hours=round(minutes / 60, 1) if minutes % 60 else minutes // 60,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        bottom=BOTTOM,
        bars=bars,
        ticks=ticks,
        y_max=y_max,
        published_total=sum(counts.published),
        failed_total=sum(counts.failed),
    )

"""``/admin/pages/{page_id}/insights``: one Page's last 30 days of insights (docs/insights.md).

A bar per UTC day of the reactions, comments and shares (stacked) of the posts
published that day, as each post's latest fetch counted them
(:func:`~offpost.models.insights.page_summary`); under it the days as a table,
and the Page's recent posts with their latest counts, impressions and reach.
The chart is an SVG laid out here and drawn by the template, like the main
dashboard's (:mod:`.chart`): the dashboard's CSP allows no script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.api.dashboard.chart import BOTTOM, HEIGHT, LEFT, WIDTH, Tick, _nice_ceiling
from offpost.api.dashboard.routes import SignedInDep, _answers, _page, _redirect
from offpost.api.deps import NowDep, SessionDep
from offpost.models import CredentialPage, Post
from offpost.models.insights import DaySummary, InsightStatus, PostInsight, page_summary

router = APIRouter(prefix="/admin", tags=["dashboard"])

#: How far back the Page's summary looks.
DAYS = 30
#: Recent posts listed under the chart.
RECENT_POSTS = 50
#: What a post's ``target`` may look like (Graph's Page ids are digits); else not a Page.
_PAGE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class DayBar:
    """One day's stacked bar: reactions from the baseline, comments, then shares on top."""

    x: float
    width: float
    segments: list[tuple[str, float, float]]  # (class, y, height)
    label: str


@dataclass(frozen=True, slots=True)
class DayChart:
    width: int
    height: int
    left: int
    bottom: int
    bars: list[DayBar]
    ticks: list[Tick]
    y_max: int
    posts: int
    reactions: int
    comments: int
    shares: int


def day_chart(days: list[DaySummary]) -> DayChart:
    """Lay ``days`` (oldest first) out as stacked bars with a weekly date axis."""
    y_max = _nice_ceiling(max((d.engagement for d in days), default=0))
    step = WIDTH / max(len(days), 1)
    scale = HEIGHT / y_max
    bars, ticks = [], []
    for i, day in enumerate(days):
        x = round(LEFT + i * step, 2)
        if i % 7 == 0:
            ticks.append(Tick(x=round(x + step / 2, 2), label=f"{day.day:%m-%d}"))
        if not day.engagement:
            continue
        segments, top = [], float(HEIGHT)
        for name, value in (
            ("reactions", day.reactions),
            ("comments", day.comments),
            ("shares", day.shares),
        ):
            if value:
                h = value * scale
                top -= h
                segments.append((name, round(top, 2), round(h, 2)))
        bars.append(
            DayBar(
                x=x,
                width=round(max(step - 2, 1), 2),
                segments=segments,
                label=(
                    f"{day.day:%Y-%m-%d}: {day.posts} posts, {day.reactions} reactions, "
                    f"{day.comments} comments, {day.shares} shares"
                ),
            )
        )
    return DayChart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        bottom=BOTTOM,
        bars=bars,
        ticks=ticks,
        y_max=y_max,
        posts=sum(d.posts for d in days),
        reactions=sum(d.reactions for d in days),
        comments=sum(d.comments for d in days),
        shares=sum(d.shares for d in days),
    )


@dataclass(frozen=True, slots=True)
class PostRow:
    post: Post
    latest: PostInsight | None
    fetches: int


def recent_posts(session: Session, page_id: str, since: datetime) -> list[PostRow]:
    """The Page's posts published since ``since``, newest first, with their latest fetch."""
    posts = list(
        session.scalars(
            select(Post)
            .where(
                Post.target == page_id,
                Post.published_at.is_not(None),
                Post.published_at >= since,
            )
            .order_by(Post.published_at.desc())
            .limit(RECENT_POSTS)
        )
    )
    by_post: dict[str, list[PostInsight]] = {}
    if posts:
        for row in session.scalars(
            select(PostInsight)
            .where(PostInsight.post_id.in_([p.id for p in posts]))
            .order_by(PostInsight.due_at)
        ):
            by_post.setdefault(row.post_id, []).append(row)
    rows = []
    for post in posts:
        fetched = [r for r in by_post.get(post.id, []) if r.status is InsightStatus.DONE]
        latest = max(fetched, key=lambda r: r.fetched_at or r.due_at) if fetched else None
        rows.append(PostRow(post, latest, len(fetched)))
    return rows


def _page_name(session: Session, page_id: str) -> str | None:
    return session.scalars(
        select(CredentialPage.name).where(CredentialPage.page_id == page_id).limit(1)
    ).first()


@router.get(
    "/pages/{page_id}/insights",
    response_class=HTMLResponse,
    summary="One Page's insights: the last 30 days, a bar a day",
    responses=_answers(_303="signed out: a redirect to the sign-in form", _404="not a Page id"),
)
def page_insights(page_id: str, who: SignedInDep, db: SessionDep, now: NowDep) -> Response:
    if who is None:
        return _redirect("/admin/login")
    if not _PAGE_ID_RE.match(page_id):
        return _page(
            "message.html", 404, signed_in=who, title="Not found", text="That is not a Page id."
        )
    first_day = (now - timedelta(days=DAYS - 1)).date()
    start = datetime.combine(first_day, datetime.min.time(), now.tzinfo)
    days = page_summary(db, page_id, start, now)
    context: dict[str, Any] = {
        "page_id": page_id,
        "page_name": _page_name(db, page_id),
        "days": list(reversed(days)),
        "chart": day_chart(days),
        "posts": recent_posts(db, page_id, start),
        "window_days": DAYS,
    }
    return _page("page_insights.html", signed_in=who, nav="posts", **context)

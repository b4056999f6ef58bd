"""Graph's per-Page publishing budgets, enforced before Graph enforces them.

Meta documents one such budget for what offpost publishes: **30 Reels published
through the API per Page in any 24 hours** ("Reels Publishing API", Limitations:
https://developers.facebook.com/docs/video-api/guides/reels-publishing/), and
asks apps to keep count themselves. No daily cap is documented for feed posts,
photos or Page videos; those are paced by the usage headers instead
(docs/graph.md).

The budget is checked twice (docs/media.md):

- when a Reel post is created, moved or made by a schedule: a time at which the
  Page would hold more than 30 Reels in some 24 hours is refused, and the
  answer names the next time that fits (:func:`next_reel_slot`);
- when it is published: a Page that already published 30 Reels in the last 24
  hours makes the post wait until the oldest of them is a day old
  (:func:`reel_wait_until`). Posts created before a change of plan, or by
  several clients on one Page, can still meet there.

A Reel counts at ``published_at`` once published, at ``publish_at`` while pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from offpost.models.post import PENDING_POST_STATUSES, Post, PostStatus

#: Reels published through the API per Page in any 24 hours (Meta's Reels guide).
REELS_PER_DAY = 30
REELS_WINDOW = timedelta(hours=24)


def page_reel_times(
    session: Session,
    target: str,
    around: datetime,
    *,
    exclude_post_id: str | None = None,
) -> list[datetime]:
    """When the Page's other Reels publish (or published) within a day of ``around``, sorted."""
    at = func.coalesce(Post.published_at, Post.publish_at)
    query = select(at).where(
        Post.target == target,
        Post.media_kind == "reel",
        or_(Post.status.in_(PENDING_POST_STATUSES), Post.status == PostStatus.PUBLISHED),
        Post.publish_at > around - 2 * REELS_WINDOW,
        Post.publish_at < around + 2 * REELS_WINDOW,
    )
    if exclude_post_id is not None:
        query = query.where(Post.id != exclude_post_id)
    times = [t for t in session.scalars(query) if abs(t - around) < REELS_WINDOW]
    return sorted(times)


def fits(times: Sequence[datetime], at: datetime, limit: int = REELS_PER_DAY) -> bool:
    """Whether one more Reel at ``at`` keeps every 24 hours at or under ``limit``.

    Of the day-long windows holding ``at``, the fullest is the earliest one or
    one that a later Reel has just entered, so only those are counted.
    """
    tick = timedelta(microseconds=1)
    starts = [at - REELS_WINDOW + tick] + [
        t - REELS_WINDOW + tick for t in times if at < t < at + REELS_WINDOW
    ]
    return all(
        sum(1 for t in times if start <= t < start + REELS_WINDOW) + 1 <= limit for start in starts
    )


def next_reel_slot(times: Sequence[datetime], at: datetime, limit: int = REELS_PER_DAY) -> datetime:
    """The earliest time at or after ``at`` at which one more Reel fits (``at`` if it does)."""
    if fits(times, at, limit):
        return at
    candidates = sorted({t + REELS_WINDOW for t in times if t + REELS_WINDOW > at})
    for candidate in candidates:
        if fits(times, candidate, limit):
            return candidate
    # Past every Reel counted here plus a day, the window is empty.
    return max(times, default=at) + REELS_WINDOW


def reel_wait_until(session: Session, target: str, now: datetime) -> datetime | None:
    """When a Reel may be published on ``target``: ``None`` if now; else when the oldest of
    the last day's published Reels turns a day old."""
    published = sorted(
        t
        for t in session.scalars(
            select(Post.published_at).where(
                Post.target == target,
                Post.media_kind == "reel",
                Post.status == PostStatus.PUBLISHED,
                Post.published_at > now - REELS_WINDOW,
            )
        )
        if t is not None
    )
    if len(published) < REELS_PER_DAY:
        return None
    # The one whose first day ending leaves room for one more.
    return published[len(published) - REELS_PER_DAY] + REELS_WINDOW

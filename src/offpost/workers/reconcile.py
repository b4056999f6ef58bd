"""Reconciliation: before calling Graph again after an unknown outcome, look first.

Graph has no idempotency key and sometimes publishes while answering an error,
or a reply is lost on the way back. So before a post whose earlier attempt
ended without a known outcome is sent again, its Page's posts are read, and one
of them is adopted as the post's only if it is provably what such an attempt
made:

- **what was sent**: its text (and link) are those the attempt recorded before
  its call (:class:`~offpost.models.attempt.Sent`), not what the post holds now;
- **when**: it was created inside that attempt's window, from the attempt's
  start to its end plus the time Graph may still take to finish a call offpost
  gave up on, each widened by :data:`~offpost.workers.decide.RECONCILE_SKEW`
  for the difference between Graph's clock and the database's;
- **who**: Graph names offpost's own app as the one that made it
  (``application``), so a person's post with the same text is never adopted;
- **not another's**: its Graph id is not recorded for another offpost post
  (``taken``; the unique index on ``posts.graph_post_id`` makes it impossible
  for two posts to hold it, whatever the timing).

Only when nothing qualifies may the worker publish again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from offpost.graph.types import FeedPost
from offpost.models.attempt import Sent, text_sha256
from offpost.workers.decide import RECONCILE_SKEW


@dataclass(frozen=True, slots=True)
class Sought:
    """What one attempt whose outcome is unknown sent, and when its post could appear."""

    text_sha256: str | None
    link: str | None
    start: datetime
    end: datetime

    @classmethod
    def of(
        cls, sent: Sent, started_at: datetime, finished_at: datetime, settle: timedelta
    ) -> Sought:
        return cls(
            sent.text_sha256,
            sent.link,
            started_at - RECONCILE_SKEW,
            finished_at + settle + RECONCILE_SKEW,
        )

    def made(self, post: FeedPost) -> bool:
        """Whether ``post`` has this attempt's content and appeared in its window."""
        return (
            self.start <= post.created_time <= self.end
            and text_sha256(post.message) == self.text_sha256
            and (self.link is None or post.link is None or post.link == self.link)
        )


def find_published(
    posts: Sequence[FeedPost],
    sought: Sequence[Sought],
    *,
    app_id: str,
    taken: Collection[str] = (),
) -> FeedPost | None:
    """The earliest post of ``posts`` that one of the ``sought`` attempts made, or None."""
    candidates = [
        post
        for post in posts
        if post.application_id == app_id
        and post.id not in taken
        and any(attempt.made(post) for attempt in sought)
    ]
    return min(candidates, key=lambda post: post.created_time, default=None)

"""Reconciliation: before calling Graph again after an unknown outcome, look first.

Graph has no idempotency key and sometimes publishes while answering an error
(GRAPH.md §10, F5), or a reply is lost on the way back. So a post whose earlier
attempt ended without a known outcome is searched for on its Page — among the
posts created since that attempt began, with the same text and link — and
adopted if found. Only when it is not there may the worker publish again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from offpost.graph.types import FeedPost
from offpost.workers.decide import reconcile_since


def _same_text(a: str | None, b: str | None) -> bool:
    return (a or "").strip() == (b or "").strip()


def find_published(
    posts: Sequence[FeedPost],
    *,
    text: str | None,
    link: str | None,
    since: datetime,
    taken: Collection[str] = (),
) -> FeedPost | None:
    """The earliest post of ``posts`` that is ours: same text (and link), created since.

    ``taken`` holds Graph ids already adopted by other offpost posts, so that two
    posts with identical content are never both matched to one Graph post.
    """
    start = reconcile_since(since)
    candidates = [
        p
        for p in posts
        if p.created_time >= start
        and _same_text(p.message, text)
        and (link is None or p.link is None or p.link == link)
        and p.id not in taken
    ]
    return min(candidates, key=lambda p: p.created_time, default=None)

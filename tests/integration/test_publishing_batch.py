"""Publishing in Graph batch requests, by a real worker against the sandbox over HTTP.

The posts of one message go to Graph up to 50 in one request (``OFFPOST_GRAPH_BATCH``,
on as shipped). Each answer inside is acted on as a call of its own would be; a
lost reply costs one read of each Page's feed for all its posts, not one per post.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from offpost.models import AttemptOutcome, PostStatus
from tests.integration.pipeline_support import Pipeline, handed_over_page
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(180)

#: The batch request itself: ``POST /`` or ``POST /v26.0/``.
BATCH_PATH = r"^/(v\d+\.\d+/?)?$"


def pages(pipeline: Pipeline, graph: SandboxClient, name: str, n: int) -> list[dict[str, str]]:
    """``n`` Pages, each of its own user and credential, of one client each."""
    return [handed_over_page(pipeline, graph, f"{name}-{i}") for i in range(n)]


def add_due_together(
    pipeline: Pipeline, targets: list[dict[str, str]], per_page: int, label: str
) -> dict[str, list[str]]:
    """``per_page`` posts on each Page, all due at one instant two seconds from now."""
    at = datetime.now(UTC) + timedelta(seconds=2)
    return {
        page["page_id"]: pipeline.add_posts(
            page["client_id"],
            page["credential_id"],
            page["page_id"],
            [f"{label} {page['page_id']} #{i}" for i in range(per_page)],
            at=at,
        )
        for page in targets
    }


def calls_about(graph: SandboxClient, page_ids: list[str]) -> list[dict[str, Any]]:
    wanted = re.compile(r"/(" + "|".join(page_ids) + r")/feed$")
    return [call for call in graph.calls() if wanted.search(call["path"])]


def test_posts_of_several_pages_share_batch_requests(
    pipeline: Pipeline, graph: SandboxClient
) -> None:
    targets = pages(pipeline, graph, "batched", 3)
    ids = add_due_together(pipeline, targets, 10, "batched")
    everything = [post_id for post_ids in ids.values() for post_id in post_ids]
    posts = pipeline.wait_status(everything, {PostStatus.PUBLISHED})
    for page_id, post_ids in ids.items():
        on_page = {p["id"]: p["message"] for p in graph.posts(page_id)}
        assert len(on_page) == len(post_ids)
        mine = [post for post in posts if post.id in post_ids]
        assert {post.graph_post_id for post in mine} == set(on_page)
    assert all(post.attempts == 1 for post in posts)
    feed_calls = calls_about(graph, list(ids))
    assert len(feed_calls) == 30
    in_batches = [call for call in feed_calls if call["batch_index"] is not None]
    # One message holds them all (dispatched at one instant): one request, not 30.
    assert len(in_batches) == 30
    assert len({call["batch_id"] for call in in_batches}) <= 2


def test_a_lost_batch_reply_costs_one_read_per_page(
    pipeline: Pipeline, graph: SandboxClient
) -> None:
    targets = pages(pipeline, graph, "lost-batch", 2)
    graph.fault(path=BATCH_PATH, method="POST", times=1, after_effect=True, drop_response=True)
    ids = add_due_together(pipeline, targets, 8, "lost batch")
    everything = [post_id for post_ids in ids.values() for post_id in post_ids]
    posts = pipeline.wait_status(everything, {PostStatus.PUBLISHED})
    for page_id, post_ids in ids.items():
        on_page = graph.posts(page_id)
        assert len(on_page) == len(post_ids)  # made once, by the batch whose reply was lost
        assert {p.graph_post_id for p in posts if p.id in post_ids} == {p["id"] for p in on_page}
    for post in posts:
        outcomes = [a.outcome for a in pipeline.attempts(post.id)]
        assert outcomes == [AttemptOutcome.RETRY, AttemptOutcome.RECONCILED]
        assert post.attempts == 1
    reads = [call for call in calls_about(graph, list(ids)) if call["method"] == "GET"]
    read_pages = sorted(re.search(r"/(\d+)/feed$", call["path"])[1] for call in reads)
    assert read_pages == sorted(ids), (read_pages, [(c["path"], c["batch_id"]) for c in reads])


def test_an_items_error_is_its_own(pipeline: Pipeline, graph: SandboxClient) -> None:
    dead, alive = pages(pipeline, graph, "item-error", 2)
    graph.control("POST", f"/users/{dead['user_id']}/invalidate", {"reason": "password_changed"})
    ids = add_due_together(pipeline, [dead, alive], 5, "item error")
    parked = pipeline.wait_status(ids[dead["page_id"]], {PostStatus.NEEDS_REAUTH})
    published = pipeline.wait_status(ids[alive["page_id"]], {PostStatus.PUBLISHED})
    assert all(post.last_error and post.last_error["subcode"] == 460 for post in parked)
    assert all(post.attempts == 1 for post in published)
    assert len(graph.posts(alive["page_id"])) == 5
    assert graph.posts(dead["page_id"]) == []


def test_a_refused_batch_is_sent_call_by_call(pipeline: Pipeline, graph: SandboxClient) -> None:
    targets = pages(pipeline, graph, "refused-batch", 2)
    graph.fault(
        path=BATCH_PATH,
        method="POST",
        times=1,
        status=400,
        error={"code": 100, "message": "(#100) The batch could not be read"},
    )
    ids = add_due_together(pipeline, targets, 4, "refused batch")
    everything = [post_id for post_ids in ids.values() for post_id in post_ids]
    posts = pipeline.wait_status(everything, {PostStatus.PUBLISHED})
    assert all(post.attempts == 1 for post in posts)
    singles = [call for call in calls_about(graph, list(ids)) if call["batch_index"] is None]
    assert len(singles) == 8
    for page_id, post_ids in ids.items():
        assert len(graph.posts(page_id)) == len(post_ids)

"""Pacing under a real worker: a burst for one Page with a small budget is never throttled.

The sandbox's throttling mode gives the Page a budget of calls per rolling window
and answers (#80001) beyond it; the worker's pacer learns the budget from the
usage headers of the first replies and holds the rest of the burst back until
room frees in the window (docs/pacing.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import AttemptOutcome, PostStatus
from tests.integration.pipeline_support import Pipeline, checked_pipeline, handed_over_page
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(240)

WINDOW_S = 10
BUDGET = 120
POSTS = 250


@pytest.fixture(scope="module")
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """A worker whose pacer assumes the sandbox's window for Pages."""
    logs = Path(tmp_path_factory.mktemp("pipeline-logs"))
    with checked_pipeline(
        postgres_server_url,
        redis_url,
        sandbox_server,
        logs,
        OFFPOST_PACING_PAGE_WINDOW_S=str(WINDOW_S),
    ) as running:
        yield running


def test_a_burst_for_one_page_is_paced_not_throttled(
    pipeline: Pipeline, graph: SandboxClient
) -> None:
    page = handed_over_page(pipeline, graph, "paced")
    page_id = page["page_id"]
    graph.settings(usage_window_s=WINDOW_S, page_call_budgets={page_id: BUDGET})
    started = time.monotonic()
    ids = pipeline.add_posts(
        page["client_id"],
        page["credential_id"],
        page_id,
        [f"paced #{i}" for i in range(POSTS)],
    )
    posts = pipeline.wait_status(ids, {PostStatus.PUBLISHED}, timeout_s=180)
    drained_s = time.monotonic() - started
    usage = graph.usage()["pages"][page_id]
    assert usage["throttled_total"] == 0
    assert len(graph.posts(page_id)) == POSTS
    # Every post on its first attempt: waiting for room spends none.
    assert all(post.attempts == 1 for post in posts)
    assert all(
        [a.outcome for a in pipeline.attempts(post.id)] == [AttemptOutcome.PUBLISHED]
        for post in posts
    )
    # Beyond the budget, the burst had to wait for calls to leave the window: at
    # least one window for 250 posts on a budget of 120.
    assert drained_s >= WINDOW_S

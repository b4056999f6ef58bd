"""No Graph call starts when it could outlive its post's lease.

Once a lease ends the reaper takes the post back, and another worker may
reconcile and publish it while the first call is still running. So a worker
starts a call only while the lease outlasts the longest call (about twice the
Graph timeout). Here one worker has a single publish thread, a 10 s lease and a
3 s Graph timeout: a call must start within 4 s of the claim. Graph is slow for
the first two calls (2.5 s each), so the later posts of the same message wait
in the pool past that point. They go back to ``scheduled`` without an attempt
and the next claim publishes them. Every post ends published exactly once, and
no attempt row is left for a call that was never made. The worker sends each
publish in a request of its own (``OFFPOST_GRAPH_BATCH=false``): in one batch
request the slow calls would delay every post's reply, not keep later posts
waiting for the thread.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import AttemptOutcome, PostStatus
from tests.conftest import fresh_postgres_database
from tests.integration.pipeline_support import new_client, running_pipeline
from tests.integration.sandbox_support import TIMEOUT, SandboxClient

POSTS = 6


@pytest.mark.timeout(120)
def test_a_call_that_could_outlive_the_lease_is_not_started(
    postgres_server_url: str, redis_url: str, sandbox_server: RunningSandbox, tmp_path: Path
) -> None:
    with (
        fresh_postgres_database(postgres_server_url) as db,
        running_pipeline(
            db,
            redis_url,
            sandbox_server,
            tmp_path / "logs",
            OFFPOST_LEASE_S="10",
            OFFPOST_GRAPH_TIMEOUT_S="3",
            OFFPOST_PUBLISH_CONCURRENCY="1",
            OFFPOST_MESSAGE_BATCH=str(POSTS),
            OFFPOST_GRAPH_BATCH="false",
        ) as pipeline,
        httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http,
    ):
        graph = SandboxClient(sandbox_server, http)
        client_id, key = new_client(pipeline, "lease")
        user = graph.mint_user(pages=1)
        with pipeline.api() as api:
            credential_id = pipeline.credential(api, key, user)
        page_id = user["pages"][0]["id"]
        graph.fault(path=f"/{page_id}/feed$", method="POST", times=2, latency_ms=2500)
        try:
            pipeline.start_worker()
            pipeline.start_dispatcher()
            ids = pipeline.add_posts(
                client_id,
                credential_id,
                page_id,
                [f"lease {n}" for n in range(POSTS)],
                due_in_s=1,
            )
            posts = pipeline.wait_status(ids, {PostStatus.PUBLISHED}, timeout_s=60)
        finally:
            graph.control("DELETE", "/faults")

        # Exactly once each on the Page, under the id offpost recorded.
        on_page = graph.posts(page_id)
        assert Counter(p["message"] for p in on_page) == Counter(f"lease {n}" for n in range(POSTS))
        assert {p.graph_post_id for p in posts} == {p["id"] for p in on_page}
        # One attempt per post: the calls never started left no attempt behind.
        for post in posts:
            attempts = pipeline.attempts(post.id)
            assert [a.outcome for a in attempts] == [AttemptOutcome.PUBLISHED], post.id
            assert [a.number for a in attempts] == [1]
        log = pipeline.log_text()
        # It really happened: some posts of the message waited past their start budget.
        assert "not starting the Graph call" in log
        assert "Traceback" not in log

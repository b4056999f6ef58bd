"""The promise under fire: every post published exactly once while processes die.

A few hundred posts fall due within seconds, across several Pages. Two
dispatchers and three workers run; every second or so one of them is killed
with SIGKILL at a random instant and restarted. A tenth of the publish replies
are lost after Graph created the post. Afterwards every post is ``published``,
exactly once, on its Page, and nothing is missing.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from pathlib import Path

import httpx
import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import PostStatus
from tests.conftest import fresh_postgres_database
from tests.integration.pipeline_support import (
    assert_each_published_once,
    lose_publish_replies,
    new_client,
    posts_across_pages,
    running_pipeline,
    wait_for,
)
from tests.integration.sandbox_support import TIMEOUT, SandboxClient

logger = logging.getLogger(__name__)

PAGES = 6
POSTS_PER_PAGE = 50
DUE_WINDOW_S = 8.0
CHAOS_S = 25.0
LOST_REPLY_RATE = 0.1


@pytest.mark.timeout(420)
def test_exactly_once_through_kills_and_lost_replies(
    postgres_server_url: str, redis_url: str, sandbox_server: RunningSandbox, tmp_path: Path
) -> None:
    rng = random.Random(20261128)
    with (
        fresh_postgres_database(postgres_server_url) as db,
        running_pipeline(db, redis_url, sandbox_server, tmp_path / "logs") as pipeline,
        httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http,
    ):
        graph = SandboxClient(sandbox_server, http)
        client_id, key = new_client(pipeline, "chaos")
        post_ids = posts_across_pages(
            pipeline,
            graph,
            client_id,
            key,
            pages=PAGES,
            per_page=POSTS_PER_PAGE,
            label="chaos",
            window_s=DUE_WINDOW_S,
            rng=rng,
        )
        every = [i for ids in post_ids.values() for i in ids]
        lose_publish_replies(graph, LOST_REPLY_RATE, times=10_000)

        roles = {
            "dispatcher-1": pipeline.start_dispatcher,
            "dispatcher-2": pipeline.start_dispatcher,
            "worker-1": pipeline.start_worker,
            "worker-2": pipeline.start_worker,
            "worker-3": pipeline.start_worker,
        }
        for name, start in roles.items():
            start(name)
        kills = 0
        deadline = time.monotonic() + CHAOS_S
        while time.monotonic() < deadline:
            time.sleep(0.5 + rng.random() * 1.5)
            victim = rng.choice(sorted(roles))
            pipeline.kill(victim, signal.SIGKILL)
            kills += 1
            time.sleep(rng.random() * 0.5)
            roles[victim](victim)
        graph.control("DELETE", "/faults")
        logger.info("chaos over after %d kills; waiting for the rest", kills)

        def all_done() -> bool:
            return all(p.status == PostStatus.PUBLISHED for p in pipeline.posts(every))

        wait_for(all_done, timeout_s=180, interval_s=0.5, what="every post published")

        assert_each_published_once(pipeline, graph, post_ids)
        lost = sum(1 for c in graph.control("GET", "/calls")["data"] if c.get("dropped"))
        logger.info(
            "%d posts, %d kills, %d replies lost: all published exactly once",
            len(every),
            kills,
            lost,
        )
        assert kills >= 10

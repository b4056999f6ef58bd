"""A real publish moves ``/metrics``: two worker processes, a dispatcher, the API scraping.

The workers (``offpost worker`` subprocesses, Celery on Redis) and the API (in
this process) share ``OFFPOST_METRICS_DIR``; the posts are published on the
Graph sandbox over HTTP. Whichever worker publishes, the API's counters add up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from offpost.graph.sandbox import RunningSandbox, running_sandbox
from offpost.models import PostStatus
from tests.conftest import fresh_postgres_database, sibling_redis_url
from tests.integration.pipeline_support import Pipeline, new_client, running_pipeline, wait_for
from tests.integration.sandbox_support import TIMEOUT, SandboxClient
from tests.integration.test_metrics import promtool_check, samples

pytestmark = pytest.mark.timeout(180)

PUBLISHED = ("offpost_posts_published_total", (("outcome", "published"),))
LATENESS_COUNT = ("offpost_schedule_lateness_seconds_count", (("kind", "one_off"),))
DURATION_COUNT = ("offpost_publish_duration_seconds_count", ())
PUBLISHED_ROWS = ("offpost_posts", (("status", "published"),))


@pytest.fixture
def sandbox_server() -> Iterator[RunningSandbox]:
    with running_sandbox() as server:
        yield server


@pytest.fixture
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path: Path,
) -> Iterator[Pipeline]:
    # A Redis database of its own: no other pipeline's worker takes these messages.
    broker = sibling_redis_url(redis_url, 12)
    metrics_dir = tmp_path / "metrics"
    with (
        fresh_postgres_database(postgres_server_url) as db,
        running_pipeline(
            db, broker, sandbox_server, tmp_path / "logs", OFFPOST_METRICS_DIR=str(metrics_dir)
        ) as pipeline,
    ):
        pipeline.start_worker("worker-1")
        pipeline.start_worker("worker-2")
        pipeline.start_dispatcher()
        yield pipeline


def scrape(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    return samples(response.text)


def test_published_counter_goes_up_after_a_real_publish(
    pipeline: Pipeline, sandbox_server: RunningSandbox
) -> None:
    client_id, key = new_client(pipeline, "metrics-client")
    with httpx.Client(base_url=sandbox_server.url, timeout=TIMEOUT) as http:
        user = SandboxClient(sandbox_server, http).mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    with pipeline.api() as api:
        api.app.state.metrics._cache_s = 0  # type: ignore[attr-defined]  # no stale gauges
        credential_id = pipeline.credential(api, key, user)
        before = scrape(api)
        assert before[PUBLISHED_ROWS] == 0

        ids = pipeline.add_posts(client_id, credential_id, page_id, ["one", "two", "three"])
        pipeline.wait_status(ids, {PostStatus.PUBLISHED}, timeout_s=90)

        # The outcome and the counter are written before the commit: no wait needed,
        # but the scrape may race the last commit's visibility by a hair.
        after = wait_for(
            lambda: (got := scrape(api)).get(PUBLISHED, 0) >= 3 and got,
            timeout_s=20,
            what="three publishes counted",
        )
        assert after[PUBLISHED] == before.get(PUBLISHED, 0) + 3
        assert after[LATENESS_COUNT] == before.get(LATENESS_COUNT, 0) + 3
        assert after[DURATION_COUNT] == before.get(DURATION_COUNT, 0) + 3
        assert after[PUBLISHED_ROWS] == 3
        text = api.get("/metrics").text
    promtool_check(text)

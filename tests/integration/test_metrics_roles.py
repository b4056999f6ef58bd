"""Each role serves its own ``/metrics`` (``OFFPOST_METRICS_PORT``), with no shared directory.

A prefork worker (its pool children are other processes), a dispatcher and a
webhooks worker, each an ``offpost`` subprocess on its own port, as on separate
machines; posts published and failed on the Graph sandbox over HTTP, events
delivered to a receiver. Scraping each port shows its role's counters move.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import PostStatus
from tests.conftest import free_port, fresh_postgres_database, sibling_redis_url
from tests.integration.pipeline_support import Pipeline, new_client, running_pipeline, wait_for
from tests.integration.sandbox_support import SandboxClient
from tests.integration.test_metrics import Samples, promtool_check, samples
from tests.integration.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.timeout(240)

PUBLISHED = ("offpost_posts_published_total", (("outcome", "published"),))
FAILED_368 = ("offpost_posts_failed_total", (("reason", "368"),))
GRAPH_ERRORS_368 = ("offpost_graph_errors_total", (("code", "368"),))
DELIVERED = ("offpost_webhook_deliveries_total", (("outcome", "delivered"),))
TICKS = ("offpost_dispatcher_ticks_total", ())
HANDED_OFF = ("offpost_dispatch_lateness_seconds_count", ())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def ports() -> dict[str, int]:
    return {role: free_port() for role in ("worker", "dispatcher", "webhooks")}


@pytest.fixture
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path: Path,
    ports: dict[str, int],
) -> Iterator[Pipeline]:
    broker = sibling_redis_url(redis_url, 13)
    with (
        fresh_postgres_database(postgres_server_url) as db,
        running_pipeline(
            db,
            broker,
            sandbox_server,
            tmp_path / "logs",
            OFFPOST_METRICS_HOST="127.0.0.1",
            OFFPOST_WEBHOOK_ALLOW_PRIVATE="true",
        ) as pipeline,
    ):
        pipeline.start(
            "worker",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            "worker@%h",
            env={"OFFPOST_METRICS_PORT": str(ports["worker"])},
        )
        pipeline.start(
            "dispatcher", "dispatcher", env={"OFFPOST_METRICS_PORT": str(ports["dispatcher"])}
        )
        pipeline.start(
            "webhooks",
            "webhooks",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            "webhooks@%h",
            env={"OFFPOST_METRICS_PORT": str(ports["webhooks"])},
        )
        yield pipeline


def scrape(port: int) -> Samples | None:
    """The role's samples, or None while it is not listening yet."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    promtool_check(response.text)
    return samples(response.text)


def listening(port: int, role: str) -> Samples:
    """The role's samples once it serves them (a role with nothing counted yet has none)."""
    found: list[Samples] = []

    def served() -> bool:
        got = scrape(port)
        if got is not None:
            found.append(got)
        return got is not None

    wait_for(served, timeout_s=60, what=f"the {role}'s /metrics")
    return found[-1]


def test_every_role_serves_its_own_counters(
    pipeline: Pipeline,
    sandbox_server: RunningSandbox,
    graph: SandboxClient,
    receiver: Receiver,
    ports: dict[str, int],
) -> None:
    before = {role: listening(port, role) for role, port in ports.items()}
    client_id, key = new_client(pipeline, "metrics-roles")
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    with pipeline.api() as api:
        credential_id = pipeline.credential(api, key, user)
        hooked = api.put("/v1/webhook", json={"url": receiver.url}, headers=key)
        assert hooked.status_code == 200, hooked.text
    graph.fault(
        path=f"/{page_id}/feed$",
        method="POST",
        times=1,
        status=400,
        error={"code": 368, "error_subcode": 1346003, "message": "deemed abusive"},
    )
    [failed] = pipeline.add_posts(client_id, credential_id, page_id, ["blocked"])
    pipeline.wait_status([failed], {PostStatus.FAILED}, timeout_s=90)
    published = pipeline.add_posts(client_id, credential_id, page_id, ["one", "two"])
    pipeline.wait_status(published, {PostStatus.PUBLISHED}, timeout_s=90)

    # The worker's pool children counted; its main process serves their sum.
    worker = wait_for(
        lambda: (got := scrape(ports["worker"])) and got.get(PUBLISHED, 0) >= 2 and got,
        timeout_s=30,
        what="the worker's publishes counted",
    )
    assert worker[PUBLISHED] == before["worker"].get(PUBLISHED, 0) + 2
    assert worker[FAILED_368] == before["worker"].get(FAILED_368, 0) + 1
    assert worker[GRAPH_ERRORS_368] == before["worker"].get(GRAPH_ERRORS_368, 0) + 1
    # Each role shows its own work, not the others'.
    assert DELIVERED not in worker
    assert TICKS not in worker

    dispatcher = scrape(ports["dispatcher"])
    assert dispatcher is not None
    assert dispatcher[TICKS] > before["dispatcher"][TICKS]
    assert dispatcher[HANDED_OFF] >= before["dispatcher"].get(HANDED_OFF, 0) + 3
    assert PUBLISHED not in dispatcher

    # Three events (one failed, two published), each delivered once.
    webhooks = wait_for(
        lambda: (got := scrape(ports["webhooks"])) and got.get(DELIVERED, 0) >= 3 and got,
        timeout_s=60,
        what="the deliveries counted",
    )
    assert webhooks[DELIVERED] == before["webhooks"].get(DELIVERED, 0) + 3
    assert len(receiver.received()) == 3
    assert PUBLISHED not in webhooks

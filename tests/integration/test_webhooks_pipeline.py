"""Webhooks end to end: ``offpost worker``, ``offpost webhooks`` and ``offpost dispatcher``
processes, PostgreSQL, Redis, the Graph sandbox over HTTP, and a real HTTP receiver in the
test process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from offpost.graph.sandbox import RunningSandbox
from offpost.models import DeliveryStatus, PostStatus, Webhook, WebhookEvent
from offpost.models.webhook import BREAKER_THRESHOLD
from tests.integration.pipeline_support import (
    Pipeline,
    checked_pipeline,
    new_client,
    wait_for,
)
from tests.integration.sandbox_support import SandboxClient
from tests.integration.webhook_receiver import (
    Received,
    Receiver,
    dripping_receiver,
    running_receiver,
)

pytestmark = pytest.mark.timeout(180)

#: Short webhook backoff so that retries happen within a test.
FAST_WEBHOOKS = {
    "OFFPOST_WEBHOOK_TIMEOUT_S": "3",
    "OFFPOST_WEBHOOK_RETRY_BASE_S": "0.3",
    "OFFPOST_WEBHOOK_RETRY_CAP_S": "1",
    # The receiver listens on 127.0.0.1: only an operator's setting lets webhooks go there.
    "OFFPOST_WEBHOOK_ALLOW_PRIVATE": "true",
}


@pytest.fixture(scope="module")
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("webhook-pipeline-logs")
    with checked_pipeline(
        postgres_server_url, redis_url, sandbox_server, Path(logs), webhooks=True, **FAST_WEBHOOKS
    ) as pipeline:
        yield pipeline
        assert "whsec_" not in pipeline.log_text()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def page(
    pipeline: Pipeline, graph: SandboxClient, receiver: Receiver, request: pytest.FixtureRequest
) -> dict[str, str]:
    """A client with a webhook to ``receiver`` and a one-Page credential."""
    client_id, key = new_client(pipeline, f"hook-{request.node.name}"[:90])
    user = graph.mint_user(pages=1)
    with pipeline.api() as api:
        hook = api.put("/v1/webhook", json={"url": receiver.url}, headers=key)
        assert hook.status_code == 200, hook.text
        credential_id = pipeline.credential(api, key, user)
    return {
        "client_id": client_id,
        "credential_id": credential_id,
        "page_id": user["pages"][0]["id"],
        "user_id": user["user_id"],
        "key": key["Authorization"],
        "secret": hook.json()["secret"],
    }


def api_view(pipeline: Pipeline, page: dict[str, str], path: str) -> object:
    with pipeline.api() as api:
        response = api.get(path, headers={"Authorization": page["key"]})
        assert response.status_code == 200, response.text
        return response.json()


def wait_received(receiver: Receiver, event_type: str, count: int = 1) -> list[Received]:
    return wait_for(
        lambda: got if len(got := receiver.received(event_type)) >= count else None,
        timeout_s=60,
        what=f"{count} {event_type} request(s)",
    )


def assert_no_token(request: Received) -> None:
    # Health fields name tokens ("token": "valid", "user_token_expired_at"); no token is in.
    assert b"EAA" not in request.body
    assert b"access_token" not in request.body
    assert b"page_token" not in request.body


def test_500_500_200_gets_the_event_exactly_once_more_with_the_same_id(
    pipeline: Pipeline, page: dict[str, str], receiver: Receiver
) -> None:
    receiver.answer(500, 500)
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["webhook retries"]
    )
    pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    got = wait_received(receiver, "post.published", 3)
    # Backoff is at most 1 s here and dispatchers tick twice a second: a fourth
    # request would have come by now.
    time.sleep(4)
    assert len(receiver.received()) == 3
    event_ids = {r.headers["offpost-event-id"] for r in got}
    assert len(event_ids) == 1
    [event_id] = event_ids
    assert {r.body for r in got} == {got[0].body}
    assert all(r.signed_by(page["secret"]) for r in got)
    event = got[0].event
    assert event["id"] == event_id
    assert event_id.startswith("evt_")
    assert event["type"] == "post.published"
    assert event["created_at"].endswith("Z")
    assert event["data"] == api_view(pipeline, page, f"/v1/posts/{post_id}")
    assert event["data"]["status"] == "published"
    assert_no_token(got[0])
    with pipeline.sessions() as session:
        row = session.get(WebhookEvent, event_id)
        assert row is not None
        assert (row.status, row.attempts, row.last_status) == (DeliveryStatus.DELIVERED, 3, 200)


def test_a_failed_post_is_reported_with_its_reason(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], receiver: Receiver
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        status=400,
        error={"code": 368, "error_subcode": 1346003, "message": "deemed abusive"},
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["blocked"]
    )
    pipeline.wait_status([post_id], {PostStatus.FAILED})
    [request] = wait_received(receiver, "post.failed")
    assert request.signed_by(page["secret"])
    data = request.event["data"]
    assert data == api_view(pipeline, page, f"/v1/posts/{post_id}")
    assert data["status"] == "failed"
    assert data["last_error"]["code"] == 368
    assert_no_token(request)


def test_a_dead_credential_is_reported_once_for_the_credential_and_for_the_post(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], receiver: Receiver
) -> None:
    graph.control("POST", f"/users/{page['user_id']}/invalidate", {"reason": "password_changed"})
    due = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["dead 1", "dead 2"]
    )
    later = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["parked"], due_in_s=3600
    )
    pipeline.wait_status(due + later, {PostStatus.NEEDS_REAUTH})
    [credential_event] = wait_received(receiver, "credential.needs_reauth")
    data = credential_event.event["data"]
    assert data == api_view(pipeline, page, f"/v1/credentials/{page['credential_id']}")
    assert data["status"] == "needs_reauth"
    assert_no_token(credential_event)
    wait_received(receiver, "post.needs_reauth")
    time.sleep(2)  # any further event would have arrived by now
    post_events = receiver.received("post.needs_reauth")
    # The posts that tried to publish are reported; the parked one is covered
    # by the credential event.
    reported = {r.event["data"]["id"] for r in post_events}
    assert reported <= set(due)
    assert reported
    assert len(post_events) == len(reported)
    assert len(receiver.received("credential.needs_reauth")) == 1
    for request in post_events:
        assert request.event["data"]["status"] == "needs_reauth"
        assert request.signed_by(page["secret"])


def test_a_client_without_a_webhook_gets_no_events(
    pipeline: Pipeline, graph: SandboxClient, request: pytest.FixtureRequest
) -> None:
    client_id, key = new_client(pipeline, f"plain-{request.node.name}"[:90])
    user = graph.mint_user(pages=1)
    with pipeline.api() as api:
        credential_id = pipeline.credential(api, key, user)
    [post_id] = pipeline.add_posts(client_id, credential_id, user["pages"][0]["id"], ["quiet"])
    pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    with pipeline.sessions() as session:
        rows = session.scalars(select(WebhookEvent).where(WebhookEvent.client_id == client_id))
        assert list(rows) == []


def test_a_dripping_receiver_holds_back_no_other_clients_post(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    """Bob's receiver answers a byte every 0.2 s; his events take the webhook workers'
    time, not the publishing workers': Alice's post is published as if Bob did not exist,
    and each of Bob's deliveries ends at its deadline (3 s here), at most two at a time,
    until the breaker pauses his endpoint."""
    with dripping_receiver() as drip_url:
        bob_id, bob_key = new_client(pipeline, "bob-drips")
        bob = graph.mint_user(pages=1)
        with pipeline.api() as api:
            assert api.put("/v1/webhook", json={"url": drip_url}, headers=bob_key).is_success
            bob_credential = pipeline.credential(api, bob_key, bob)
        bob_posts = pipeline.add_posts(
            bob_id, bob_credential, bob["pages"][0]["id"], [f"bob {i}" for i in range(8)]
        )
        pipeline.wait_status(bob_posts, {PostStatus.PUBLISHED})
        # Bob's eight events are being dripped to now.
        [alice_post] = pipeline.add_posts(
            page["client_id"], page["credential_id"], page["page_id"], ["alice, unhindered"]
        )
        pipeline.wait_status([alice_post], {PostStatus.PUBLISHED}, timeout_s=20)

        def bob_paused() -> list[WebhookEvent] | None:
            with pipeline.sessions() as session:
                events = list(
                    session.scalars(select(WebhookEvent).where(WebhookEvent.client_id == bob_id))
                )
                hook = session.scalars(select(Webhook).where(Webhook.client_id == bob_id)).one()
            tried = [e for e in events if e.last_error]
            paused = hook.paused_until is not None and not any(e.lease_expires_at for e in events)
            return tried if paused and len(events) == 8 else None

        # Each delivery ends at its deadline; after BREAKER_THRESHOLD failures in a row
        # (one more if it was already in flight) the endpoint is paused.
        tried = wait_for(bob_paused, timeout_s=60, what="Bob's endpoint paused")
        assert BREAKER_THRESHOLD <= len(tried) <= BREAKER_THRESHOLD + 1
        for event in tried:
            assert event.attempts == 1
            assert "no complete answer within the delivery's 3 s" in (event.last_error or "")
        with pipeline.api() as api:
            health = api.get("/v1/webhook", headers=bob_key).json()["health"]
        assert health["failures_in_a_row"] == len(tried)
        assert health["paused_until"] is not None
        assert health["pending"] == 8
        assert health["in_flight"] == 0

"""Tokens as Graph ages them, with a real worker and dispatcher publishing through the
sandbox over HTTP: the user token runs out (sandbox clock), a role on one Page is lost.

The sandbox clock is this module's own (one sandbox per module), so moving it ahead
by two months disturbs no other test.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from offpost.graph.client import GraphClient, make_http_client
from offpost.graph.sandbox import RunningSandbox
from offpost.models import (
    Credential,
    CredentialStatus,
    EventType,
    PageTokenStatus,
    PostStatus,
    WebhookEvent,
)
from offpost.tokens.expiry import ExpirySweep
from tests.integration.pipeline_support import Pipeline, new_client
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(180)

HOOK = {"url": "https://hooks.example/offpost"}


@pytest.fixture
def sweep(pipeline: Pipeline, sandbox_server: RunningSandbox) -> Iterator[ExpirySweep]:
    http = make_http_client(5.0)
    graph = GraphClient(
        http,
        graph_url=sandbox_server.url,
        version="v26.0",
        app_id=sandbox_server.app_id,
        app_secret=sandbox_server.app_secret,
    )
    yield ExpirySweep(pipeline.sessions, graph, timedelta(hours=72))
    http.close()


def hand_over(
    pipeline: Pipeline, graph: SandboxClient, name: str, pages: int
) -> tuple[str, dict[str, str], dict[str, Any], str]:
    """A client with a webhook hands over a fresh user: (client id, key, user, credential id)."""
    client_id, key = new_client(pipeline, name)
    user = graph.mint_user(pages=pages)
    with pipeline.api() as api:
        assert api.put("/v1/webhook", json=HOOK, headers=key).status_code == 200
        credential_id = pipeline.credential(api, key, user)
    return client_id, key, user, credential_id


def credential(pipeline: Pipeline, credential_id: str) -> Credential:
    with pipeline.sessions() as session:
        found = session.get(Credential, credential_id)
        assert found is not None
        _ = list(found.pages)
        return found


def event_types(pipeline: Pipeline, credential_id: str) -> list[EventType]:
    with pipeline.sessions() as session:
        return list(
            session.scalars(
                select(WebhookEvent.type)
                .where(WebhookEvent.subject_id == credential_id)
                .order_by(WebhookEvent.created_at)
            )
        )


def test_posts_outlive_the_user_token(
    pipeline: Pipeline, graph: SandboxClient, sweep: ExpirySweep
) -> None:
    client_id, key, user, credential_id = hand_over(pipeline, graph, "outlives", pages=1)
    page_id = user["pages"][0]["id"]
    [before] = pipeline.add_posts(client_id, credential_id, page_id, ["before the end"])
    pipeline.wait_status([before], {PostStatus.PUBLISHED})
    # Scheduled while the user token lives, due after it has ended.
    [scheduled] = pipeline.add_posts(
        client_id, credential_id, page_id, ["scheduled before, due after"], due_in_s=4
    )
    now = datetime.fromtimestamp(graph.advance(61 * 86400), UTC)

    [published] = pipeline.wait_status([scheduled], {PostStatus.PUBLISHED})
    assert published.graph_post_id is not None

    assert sweep.run(now).user_token_expired == [credential_id]
    after = credential(pipeline, credential_id)
    assert after.status is CredentialStatus.USER_TOKEN_EXPIRED
    assert [p.token_status for p in after.pages] == [PageTokenStatus.VALID]
    assert event_types(pipeline, credential_id) == [EventType.CREDENTIAL_USER_TOKEN_EXPIRED]

    # A post submitted now is accepted and published.
    with pipeline.api() as api:
        response = api.post(
            "/v1/posts",
            json={"credential_id": credential_id, "target": page_id, "message": "after the end"},
            headers=key,
        )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "scheduled"
    pipeline.wait_status([response.json()["id"]], {PostStatus.PUBLISHED})
    assert len(graph.posts(page_id)) == 3


def test_a_lost_role_parks_only_that_pages_posts_until_a_fresh_login(
    pipeline: Pipeline, graph: SandboxClient
) -> None:
    client_id, key, user, credential_id = hand_over(pipeline, graph, "lost-role", pages=2)
    kept, lost = (page["id"] for page in user["pages"])
    graph.remove_role(user["user_id"], lost)

    [on_lost] = pipeline.add_posts(client_id, credential_id, lost, ["on the lost Page"])
    [on_kept] = pipeline.add_posts(client_id, credential_id, kept, ["on the kept Page"])
    pipeline.wait_status([on_kept], {PostStatus.PUBLISHED})
    [parked] = pipeline.wait_status([on_lost], {PostStatus.NEEDS_REAUTH})
    assert parked.last_error is not None
    assert graph.posts(lost) == []

    after = credential(pipeline, credential_id)
    assert after.status is CredentialStatus.NEEDS_REAUTH
    tokens = {p.page_id: (p.token_status, p.page_token is None) for p in after.pages}
    assert tokens == {kept: (PageTokenStatus.VALID, False), lost: (PageTokenStatus.DEAD, True)}
    assert EventType.CREDENTIAL_NEEDS_REAUTH in event_types(pipeline, credential_id)

    # The other Page goes on publishing, and a new post for the lost one waits.
    [again] = pipeline.add_posts(client_id, credential_id, kept, ["the kept Page goes on"])
    pipeline.wait_status([again], {PostStatus.PUBLISHED})
    with pipeline.api() as api:
        waiting = api.post(
            "/v1/posts",
            json={"credential_id": credential_id, "target": lost, "message": "waits too"},
            headers=key,
        )
        assert waiting.status_code == 201, waiting.text
        assert waiting.json()["status"] == "needs_reauth"

        # The role comes back; the user logs in again and the client hands the token over.
        graph.restore_role(user["user_id"], lost)
        fresh = graph.control("POST", f"/users/{user['user_id']}/tokens")
        renewed = api.post(
            "/v1/credentials", json={"access_token": fresh["access_token"]}, headers=key
        )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["status"] == "active"
    assert {p["id"]: p["token"] for p in renewed.json()["pages"]} == {
        kept: "valid",
        lost: "valid",
    }
    pipeline.wait_status([on_lost, waiting.json()["id"]], {PostStatus.PUBLISHED})
    assert len(graph.posts(lost)) == 2

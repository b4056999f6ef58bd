"""``/v1/webhook`` over HTTP (PostgreSQL, the sandbox), and API-side ``credential.needs_reauth``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from offpost.graph.sandbox import RunningSandbox
from offpost.models import (
    Credential,
    CredentialStatus,
    DeliveryStatus,
    EventType,
    Post,
    PostStatus,
    Webhook,
    WebhookEvent,
    make_engine,
    make_sessionmaker,
)
from offpost.models.webhook_event import insert_event
from offpost.outbox import event_document
from offpost.settings import Settings
from tests.integration.api_support import add_client, api_client, bearer, make_settings
from tests.integration.posts_support import assert_problem
from tests.integration.sandbox_support import SandboxClient


@pytest.fixture
def alice(settings: Settings, api: TestClient) -> dict[str, str]:
    return bearer(add_client(settings, "alice"))


@pytest.fixture
def bob(settings: Settings, api: TestClient) -> dict[str, str]:
    return bearer(add_client(settings, "bob"))


@contextlib.contextmanager
def db(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def events(settings: Settings) -> list[WebhookEvent]:
    with db(settings) as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.created_at)))


#: The health of an endpoint nothing was sent to yet.
QUIET = {
    "pending": 0,
    "next_attempt_at": None,
    "last_attempt_at": None,
    "last_status": None,
    "last_error": None,
    "failures_in_a_row": 0,
    "in_flight": 0,
    "paused_until": None,
}


def test_put_returns_the_secret_once_and_get_shows_only_the_url(
    api: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    url = "https://hooks.example.com/offpost"
    put = api.put("/v1/webhook", json={"url": url}, headers=alice)
    assert put.status_code == 200, put.text
    body = put.json()
    assert set(body) == {"url", "events", "secret"}
    assert body["events"] is None  # every type
    assert body["url"] == url
    assert body["secret"].startswith("whsec_")
    got = api.get("/v1/webhook", headers=alice)
    assert got.status_code == 200
    assert got.json() == {"url": url, "events": None, "health": QUIET}
    # At rest the secret is encrypted, never the plain text.
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT secret FROM webhooks")).scalar_one()
    engine.dispose()
    assert body["secret"] not in stored


def test_a_client_subscribes_to_some_event_types(api: TestClient, alice: dict[str, str]) -> None:
    url = "https://hooks.example.com/some"
    body = {"url": url, "events": ["post.deleted", "post.published", "post.published"]}
    put = api.put("/v1/webhook", json=body, headers=alice)
    assert put.status_code == 200, put.text
    assert put.json()["events"] == ["post.deleted", "post.published"]
    assert api.get("/v1/webhook", headers=alice).json()["events"] == [
        "post.deleted",
        "post.published",
    ]
    bad = api.put("/v1/webhook", json={"url": url, "events": ["post.liked"]}, headers=alice)
    assert_problem(bad, 422, "invalid_request")
    # Setting the URL again without events subscribes to every type again.
    again = api.put("/v1/webhook", json={"url": url}, headers=alice)
    assert again.json()["events"] is None


def test_put_again_rotates_the_secret_and_changes_the_url(
    api: TestClient, alice: dict[str, str]
) -> None:
    first = api.put("/v1/webhook", json={"url": "https://a.example/h"}, headers=alice).json()
    second = api.put("/v1/webhook", json={"url": "https://b.example/h"}, headers=alice).json()
    assert second["secret"] != first["secret"]
    assert api.get("/v1/webhook", headers=alice).json()["url"] == "https://b.example/h"


def test_plain_http_is_refused(api: TestClient, alice: dict[str, str]) -> None:
    for url in ("http://hooks.example.com/h", "http://93.184.216.34/h"):
        body = assert_problem(
            api.put("/v1/webhook", json={"url": url}, headers=alice), 422, "invalid_request", "url"
        )
        assert "https://" in body["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://hooks.example.com/"},
        {"url": "not a url"},
        {"url": ""},
        {},
        {"url": "https://hooks.example.com/", "secret": "mine"},
        {"url": 42},
    ],
)
def test_bad_bodies_are_422(api: TestClient, alice: dict[str, str], body: dict[str, Any]) -> None:
    assert_problem(api.put("/v1/webhook", json=body, headers=alice), 422, "invalid_request")
    assert_problem(api.get("/v1/webhook", headers=alice), 404, "not_found")


def test_every_route_needs_a_key(api: TestClient) -> None:
    assert_problem(api.put("/v1/webhook", json={"url": "https://a.example/"}), 401, "unauthorized")
    assert_problem(api.get("/v1/webhook"), 401, "unauthorized")
    assert_problem(api.delete("/v1/webhook"), 401, "unauthorized")
    bad = {"Authorization": "Bearer nope"}
    assert_problem(api.get("/v1/webhook", headers=bad), 401, "unauthorized")


def test_a_webhook_is_the_clients_own(
    api: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    api.put("/v1/webhook", json={"url": "https://alice.example/h"}, headers=alice)
    assert_problem(api.get("/v1/webhook", headers=bob), 404, "not_found")
    assert_problem(api.delete("/v1/webhook", headers=bob), 404, "not_found")
    api.put("/v1/webhook", json={"url": "https://bob.example/h"}, headers=bob)
    assert api.get("/v1/webhook", headers=alice).json()["url"] == "https://alice.example/h"
    assert api.get("/v1/webhook", headers=bob).json()["url"] == "https://bob.example/h"


def test_delete_removes_it_and_gives_up_pending_events(
    api: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    api.put("/v1/webhook", json={"url": "https://a.example/h"}, headers=alice)
    with db(settings) as session:
        client_id = session.scalar(text("SELECT id FROM clients WHERE name = 'alice'"))
        now = datetime.now(UTC)
        insert_event(
            session,
            client_id=str(client_id),
            event_type=EventType.POST_PUBLISHED,
            subject_id=None,
            payload_for=lambda eid: event_document(eid, EventType.POST_PUBLISHED, now, {}),
            now=now,
        )
        session.commit()
    response = api.delete("/v1/webhook", headers=alice)
    assert response.status_code == 204
    assert_problem(api.get("/v1/webhook", headers=alice), 404, "not_found")
    [event] = events(settings)
    assert event.status == DeliveryStatus.FAILED
    assert event.last_error == "the webhook was removed"


def test_the_openapi_document_lists_the_routes(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert {"put", "get", "delete"} <= set(paths["/v1/webhook"])


def test_a_dead_token_found_by_the_api_parks_posts_and_tells_the_webhook(
    api: TestClient,
    alice: dict[str, str],
    bob: dict[str, str],
    graph: SandboxClient,
    settings: Settings,
) -> None:
    api.put("/v1/webhook", json={"url": "https://a.example/h"}, headers=alice)
    user = graph.mint_user(pages=1)
    cred_id = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    ).json()["id"]
    post = api.post(
        "/v1/posts",
        json={
            "credential_id": cred_id,
            "target": user["pages"][0]["id"],
            "message": "waits for a fresh token",
            "publish_at": "2030-01-01T09:00:00Z",
        },
        headers=alice,
    )
    assert post.status_code == 201, post.text
    graph.control("POST", f"/users/{user['user_id']}/invalidate", {"reason": "password_changed"})
    redirect = {"redirect_uri": "https://client.example/callback"}
    for _ in range(2):
        response = api.post(f"/v1/credentials/{cred_id}/client-code", json=redirect, headers=alice)
        assert_problem(response, 409, "conflict")
    assert api.get(f"/v1/credentials/{cred_id}", headers=alice).json()["status"] == "needs_reauth"
    with db(settings) as session:
        parked = session.get(Post, post.json()["id"])
        assert parked is not None
        assert parked.status == PostStatus.NEEDS_REAUTH
        credential = session.get(Credential, cred_id)
        assert credential is not None
        assert credential.status == CredentialStatus.NEEDS_REAUTH
    # Once each, not once per call: the user token is dead, and so is the Page's token.
    kinds = sorted(e.type for e in events(settings))
    assert kinds == [EventType.CREDENTIAL_NEEDS_REAUTH, EventType.CREDENTIAL_USER_TOKEN_EXPIRED]
    [event] = [e for e in events(settings) if e.type == EventType.CREDENTIAL_NEEDS_REAUTH]
    document = json.loads(event.payload)
    assert document["id"] == event.id
    assert document["data"] == api.get(f"/v1/credentials/{cred_id}", headers=alice).json()
    assert user["access_token"] not in event.payload
    assert "access_token" not in json.dumps(document["data"])
    assert "EAA" not in json.dumps(document["data"])


# Every one of these reached inside the deployment before addresses were checked;
# the last one let a client wipe the sandbox's world through its control routes.
INSIDE = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/",
    "https://[::1]:18001/x",
    "https://127.0.0.1:6379/",
    "https://0.0.0.0:18000/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://[::ffff:127.0.0.1]/",
    "https://localhost/",
    "http://localhost:18001/_sandbox/reset",
]


@pytest.mark.parametrize("url", INSIDE)
def test_a_webhook_inside_the_deployment_is_refused(
    api: TestClient, alice: dict[str, str], url: str
) -> None:
    response = api.put("/v1/webhook", json={"url": url}, headers=alice)
    body = assert_problem(response, 422, "invalid_request", "url")
    assert "offpost does not send webhooks there" in body["detail"]
    assert api.get("/v1/webhook", headers=alice).status_code == 404


def test_the_operator_setting_lets_webhooks_reach_this_machine(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> None:
    settings = make_settings(postgres_url, sandbox_server, redis_url, webhook_allow_private=True)
    with api_client(settings) as api:
        key = bearer(add_client(settings, "dev"))
        for url in ("http://127.0.0.1:9/h", "http://localhost:8080/h", "https://10.0.0.1/h"):
            response = api.put("/v1/webhook", json={"url": url}, headers=key)
            assert response.status_code == 200, response.text


def test_get_shows_how_deliveries_went(
    api: TestClient, alice: dict[str, str], bob: dict[str, str], settings: Settings
) -> None:
    api.put("/v1/webhook", json={"url": "https://a.example/h"}, headers=alice)
    api.put("/v1/webhook", json={"url": "https://b.example/h"}, headers=bob)
    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    with db(settings) as session:
        client_id = str(session.scalar(text("SELECT id FROM clients WHERE name = 'alice'")))
        # Oldest first: delivered, then three whose latest attempt failed, one not tried yet.
        outcomes = [
            (200, None),
            (500, "HTTP 500"),
            (None, "ConnectError: refused"),
            (503, "HTTP 503"),
        ]
        for n, (status_code, error) in enumerate(outcomes):
            event_id = insert_event(
                session,
                client_id=client_id,
                event_type=EventType.POST_PUBLISHED,
                subject_id=None,
                payload_for=lambda eid: event_document(eid, EventType.POST_PUBLISHED, t0, {}),
                now=t0,
            )
            # A Core UPDATE: the ORM would stamp updated_at with the time of the flush.
            session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(
                    attempts=1,
                    last_status=status_code,
                    last_error=error,
                    updated_at=t0 + timedelta(minutes=n),
                    next_attempt_at=t0 + timedelta(hours=1 + n),
                    status=DeliveryStatus.PENDING if error else DeliveryStatus.DELIVERED,
                )
            )
        insert_event(
            session,
            client_id=client_id,
            event_type=EventType.POST_FAILED,
            subject_id=None,
            payload_for=lambda eid: event_document(eid, EventType.POST_FAILED, t0, {}),
            now=t0 + timedelta(minutes=30),
        )
        # The three failed attempts since the delivered one, as the worker counts them.
        session.execute(
            update(Webhook).where(Webhook.client_id == client_id).values(failures_in_a_row=3)
        )
        session.commit()
    health = api.get("/v1/webhook", headers=alice).json()["health"]
    assert health == {
        "pending": 4,
        "next_attempt_at": "2026-12-07T09:30:00Z",
        "last_attempt_at": "2026-12-07T09:03:00Z",
        "last_status": 503,
        "last_error": "HTTP 503",
        "failures_in_a_row": 3,
        "in_flight": 0,
        "paused_until": None,
    }
    # Another client's endpoint is its own.
    assert api.get("/v1/webhook", headers=bob).json()["health"] == QUIET

"""The expiry sweep on PostgreSQL against the Graph sandbox (its clock moved towards expiry).

offpost's own clock is the sweep's ``now`` argument: it is moved by exactly as
much as the sandbox clock, so both sides agree on how close the token is to its end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost.graph.client import GraphClient, make_http_client
from offpost.graph.sandbox import RunningSandbox
from offpost.models import (
    Client,
    Credential,
    CredentialStatus,
    EventType,
    IdempotencyKey,
    Post,
    PostStatus,
    WebhookEvent,
    make_engine,
    make_sessionmaker,
)
from offpost.models.base import utcnow
from offpost.scheduler.housekeeping import Housekeeping
from offpost.settings import Settings
from offpost.tokens.death import ciphertext_if_still, mark_credential_dead
from offpost.tokens.expiry import ExpirySweep
from tests.integration.api_support import add_client, bearer
from tests.integration.sandbox_support import SandboxClient

MARGIN = timedelta(hours=72)
DAY = timedelta(days=1)


@pytest.fixture
def sessions(settings: Settings, api: TestClient) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def graph_client(sandbox_server: RunningSandbox) -> Iterator[GraphClient]:
    http = make_http_client(3.0)
    yield GraphClient(
        http,
        graph_url=sandbox_server.url,
        version="v26.0",
        app_id=sandbox_server.app_id,
        app_secret=sandbox_server.app_secret,
    )
    http.close()


@pytest.fixture
def sweep(sessions: sessionmaker[Session], graph_client: GraphClient) -> ExpirySweep:
    return ExpirySweep(sessions, graph_client, MARGIN)


@dataclass
class Setup:
    key: dict[str, str]
    credential_id: str
    user: dict[str, Any]

    @property
    def page_id(self) -> str:
        return str(self.user["pages"][0]["id"])


@pytest.fixture
def hooked(api: TestClient, settings: Settings, graph: SandboxClient) -> Setup:
    """A client with a webhook and one credential."""
    key = bearer(add_client(settings, "hooked"))
    assert api.put("/v1/webhook", json={"url": "https://hooks.example/h"}, headers=key).is_success
    user = graph.mint_user(pages=1)
    response = api.post("/v1/credentials", json={"access_token": user["access_token"]}, headers=key)
    assert response.status_code == 201, response.text
    return Setup(key=key, credential_id=response.json()["id"], user=user)


def credential(sessions: sessionmaker[Session], credential_id: str) -> Credential:
    with sessions() as session:
        found = session.get(Credential, credential_id)
        assert found is not None
        _ = [p.page_token for p in found.pages]
        return found


def events(sessions: sessionmaker[Session], type_: EventType) -> list[dict[str, Any]]:
    with sessions() as session:
        rows = session.scalars(select(WebhookEvent).where(WebhookEvent.type == type_))
        return [json.loads(row.payload) for row in rows]


def later(graph: SandboxClient, by: timedelta) -> datetime:
    """Move the sandbox clock; offpost's ``now`` is the sandbox's time."""
    return datetime.fromtimestamp(graph.advance(by.total_seconds()), UTC)


def test_a_fresh_credential_is_left_alone(
    sweep: ExpirySweep, hooked: Setup, sessions: sessionmaker[Session]
) -> None:
    result = sweep.run(datetime.now(UTC))
    assert result.checked == []
    assert credential(sessions, hooked.credential_id).status == CredentialStatus.ACTIVE


def test_a_credential_near_its_end_becomes_expiring_once(
    sweep: ExpirySweep,
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    before = credential(sessions, hooked.credential_id)
    graph.control("DELETE", "/calls")
    now = later(graph, timedelta(days=59))
    result = sweep.run(now)
    assert result.expiring == [hooked.credential_id]
    after = credential(sessions, hooked.credential_id)
    assert after.status == CredentialStatus.EXPIRING
    # The re-exchange gave the same token back: nothing better to store.
    assert after.user_token == before.user_token
    calls = [c["path"] for c in graph.control("GET", "/calls")["data"]]
    assert any(p.endswith("/debug_token") for p in calls)
    assert any(p.endswith("/oauth/access_token") for p in calls)
    assert any(p.endswith("/me/accounts") for p in calls)
    [event] = events(sessions, EventType.CREDENTIAL_EXPIRING)
    api_view = api.get(f"/v1/credentials/{hooked.credential_id}", headers=hooked.key).json()
    assert event["data"] == api_view
    assert event["data"]["status"] == "expiring"
    assert "token" not in json.dumps(event["data"])
    # The next daily sweep sees the same expiry: no second event.
    assert sweep.run(later(graph, timedelta(hours=20))).expiring == [hooked.credential_id]
    assert len(events(sessions, EventType.CREDENTIAL_EXPIRING)) == 1


def test_a_fresh_token_from_the_client_makes_it_active_again(
    sweep: ExpirySweep,
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    now = later(graph, timedelta(days=58))
    assert sweep.run(now).expiring == [hooked.credential_id]
    fresh = graph.control("POST", f"/users/{hooked.user['user_id']}/tokens")
    response = api.post(
        "/v1/credentials", json={"access_token": fresh["access_token"]}, headers=hooked.key
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"


def test_a_post_after_the_tokens_end_makes_it_expiring_early(
    sweep: ExpirySweep,
    hooked: Setup,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    response = api.post(
        "/v1/posts",
        json={
            "credential_id": hooked.credential_id,
            "target": hooked.page_id,
            "message": "in 70 days",
            "publish_at": (datetime.now(UTC) + timedelta(days=70)).isoformat(),
        },
        headers=hooked.key,
    )
    assert response.status_code == 201, response.text
    assert sweep.run(datetime.now(UTC)).expiring == [hooked.credential_id]
    assert len(events(sessions, EventType.CREDENTIAL_EXPIRING)) == 1


def test_a_failed_refresh_never_overwrites_the_good_token(
    sweep: ExpirySweep,
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
) -> None:
    before = credential(sessions, hooked.credential_id)
    graph.fault(path="/oauth/access_token$", times=5, status=500, error={"code": 2, "message": "x"})
    result = sweep.run(later(graph, timedelta(days=59)))
    assert result.expiring == [hooked.credential_id]
    after = credential(sessions, hooked.credential_id)
    assert after.user_token == before.user_token
    assert after.expires_at is not None


def test_an_invalidated_user_is_needs_reauth_with_its_posts_parked(
    sweep: ExpirySweep,
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    response = api.post(
        "/v1/posts",
        json={
            "credential_id": hooked.credential_id,
            "target": hooked.page_id,
            "message": "parked",
            "publish_at": (datetime.now(UTC) + timedelta(days=59, hours=12)).isoformat(),
        },
        headers=hooked.key,
    )
    assert response.status_code == 201, response.text
    graph.control(
        "POST", f"/users/{hooked.user['user_id']}/invalidate", {"reason": "password_changed"}
    )
    now = later(graph, timedelta(days=59))
    assert sweep.run(now).dead == [hooked.credential_id]
    assert credential(sessions, hooked.credential_id).status == CredentialStatus.NEEDS_REAUTH
    with sessions() as session:
        post = session.get(Post, response.json()["id"])
        assert post is not None
        assert post.status == PostStatus.NEEDS_REAUTH
    [event] = events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH)
    assert event["data"]["status"] == "needs_reauth"
    assert event["data"]["id"] == hooked.credential_id
    # Dead credentials are not swept again.
    assert sweep.run(now + DAY).checked == []
    assert events(sessions, EventType.CREDENTIAL_EXPIRING) == []


def test_an_expired_token_is_needs_reauth(
    sweep: ExpirySweep, hooked: Setup, graph: SandboxClient, sessions: sessionmaker[Session]
) -> None:
    assert sweep.run(later(graph, timedelta(days=61))).dead == [hooked.credential_id]
    assert len(events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH)) == 1


def test_graph_down_skips_the_credential_until_the_next_sweep(
    sweep: ExpirySweep, hooked: Setup, graph: SandboxClient, sessions: sessionmaker[Session]
) -> None:
    graph.fault(path="/debug_token$", times=1, status=500, error={"code": 2, "message": "down"})
    now = later(graph, timedelta(days=59))
    assert sweep.run(now).skipped == [hooked.credential_id]
    assert credential(sessions, hooked.credential_id).status == CredentialStatus.ACTIVE
    assert sweep.run(now).expiring == [hooked.credential_id]


class CountingSweep:
    def __init__(self) -> None:
        self.runs: list[datetime] = []

    def run(self, now: datetime) -> None:
        self.runs.append(now)


def test_several_dispatchers_run_the_sweep_once_a_day(sessions: sessionmaker[Session]) -> None:
    counting = CountingSweep()
    dispatchers = [
        Housekeeping(sessions, sweep=counting, sweep_in_thread=False)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    now = datetime.now(UTC)
    for tick in range(5):
        for housekeeping in dispatchers:
            housekeeping(now + timedelta(seconds=tick))
    assert counting.runs == [now]
    for housekeeping in dispatchers:
        housekeeping(now + DAY)
    assert counting.runs == [now, now + DAY]


def test_expired_idempotency_keys_are_purged_once_a_day(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        client_id = session.scalars(select(Client.id)).first() or add_test_client(session)
        for key, expires_at in (("old", now - timedelta(minutes=1)), ("live", now + DAY)):
            session.add(
                IdempotencyKey(
                    client_id=client_id,
                    key=key,
                    request_hash="h",
                    expires_at=expires_at,
                    created_at=now,
                )
            )
    dispatchers = [Housekeeping(sessions) for _ in range(2)]
    assert [h.maybe_purge(now) for h in dispatchers] == [1, None]  # one of them, once
    with sessions() as session:
        assert list(session.scalars(select(IdempotencyKey.key))) == ["live"]
    dispatchers[0](now + DAY + timedelta(minutes=1))  # the next day's tick purges again
    with sessions() as session:
        assert list(session.scalars(select(IdempotencyKey.key))) == []


def add_test_client(session: Session) -> str:
    client = Client(name="purge", key_hash="0" * 64)
    session.add(client)
    session.flush()
    return client.id


def test_the_sweep_runs_on_its_own_thread_and_can_be_run_now(
    sessions: sessionmaker[Session], sweep: ExpirySweep, hooked: Setup, graph: SandboxClient
) -> None:
    housekeeping = Housekeeping(sessions, sweep=sweep, sweep_every=timedelta(hours=1))
    now = later(graph, timedelta(days=59))
    assert housekeeping.maybe_sweep(now)
    housekeeping.join(30)
    assert credential(sessions, hooked.credential_id).status == CredentialStatus.EXPIRING
    assert not housekeeping.maybe_sweep(now + timedelta(minutes=59))


def test_a_refresh_that_gains_time_is_stored(
    sessions: sessionmaker[Session], hooked: Setup
) -> None:
    """Graph (mocked here: the sandbox, like Facebook, re-exchanges to the same token)
    hands out a new token with a later expiry: it replaces the old one."""
    now = datetime.now(UTC) + timedelta(days=59)

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/debug_token"):
            expires = int((now + timedelta(days=1)).timestamp())
            return httpx.Response(
                200, json={"data": {"is_valid": True, "type": "USER", "expires_at": expires}}
            )
        if path.endswith("/oauth/access_token"):
            return httpx.Response(200, json={"access_token": "EAAnewer", "expires_in": 60 * 86400})
        if path.endswith("/me/accounts"):
            page = {"id": hooked.page_id, "name": "P", "access_token": "EAApage2", "tasks": []}
            return httpx.Response(200, json={"data": [page]})
        return httpx.Response(404, json={"error": {"code": 100, "message": path}})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = GraphClient(
            http, graph_url="https://graph.test", version="v26.0", app_id="1", app_secret="s"
        )
        result = ExpirySweep(sessions, client, MARGIN).run(now)
    assert result.refreshed == [hooked.credential_id]
    after = credential(sessions, hooked.credential_id)
    assert after.user_token == "EAAnewer"
    assert after.status == CredentialStatus.ACTIVE
    assert after.expires_at is not None
    assert after.expires_at > now + timedelta(days=59)
    assert [p.page_token for p in after.pages] == ["EAApage2"]
    assert events(sessions, EventType.CREDENTIAL_EXPIRING) == []


def test_a_token_found_dead_is_not_held_against_one_the_client_stored_since(
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    """Whoever finds a user token dead (a worker's call, the sweep) marks the credential
    only while it still holds that token: a fresh one stored meanwhile is left alone."""
    old_token = credential(sessions, hooked.credential_id).user_token
    assert old_token is not None
    fresh = graph.control("POST", f"/users/{hooked.user['user_id']}/tokens")
    response = api.post(
        "/v1/credentials", json={"access_token": fresh["access_token"]}, headers=hooked.key
    )
    assert response.status_code == 200, response.text
    with sessions.begin() as session:
        # The worker that held the old token finds it dead only now.
        assert ciphertext_if_still(session, hooked.credential_id, old_token) is None
        current = credential(sessions, hooked.credential_id).user_token
        assert current is not None
        raw = ciphertext_if_still(session, hooked.credential_id, current)
        assert raw is not None
        # A stale ciphertext changes nothing; the stored one marks it dead, once.
        assert not mark_credential_dead(session, hooked.credential_id, utcnow(), expected_token="x")
        assert mark_credential_dead(session, hooked.credential_id, utcnow(), expected_token=raw)
        assert not mark_credential_dead(session, hooked.credential_id, utcnow(), expected_token=raw)
    assert credential(sessions, hooked.credential_id).status == CredentialStatus.NEEDS_REAUTH
    assert len(events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH)) == 1

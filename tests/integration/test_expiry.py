"""The daily token check on PostgreSQL against the Graph sandbox (its clock moved towards expiry).

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
    PageTokenStatus,
    Post,
    PostStatus,
    WebhookEvent,
    make_engine,
    make_sessionmaker,
)
from offpost.models.base import utcnow
from offpost.scheduler.housekeeping import Housekeeping
from offpost.settings import Settings
from offpost.tokens.death import ciphertext_if_still, mark_pages_dead
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


def test_a_fresh_credential_is_checked_and_stays_active(
    sweep: ExpirySweep, hooked: Setup, sessions: sessionmaker[Session]
) -> None:
    now = datetime.now(UTC)
    result = sweep.run(now)
    assert result.checked == result.active == [hooked.credential_id]
    checked = credential(sessions, hooked.credential_id)
    assert checked.status == CredentialStatus.ACTIVE
    assert checked.last_checked_at is not None
    [page] = checked.pages
    assert page.token_status is PageTokenStatus.VALID
    assert page.tasks is not None
    assert "CREATE_CONTENT" in page.tasks
    assert events(sessions, EventType.CREDENTIAL_EXPIRING) == []


def test_the_warnings_come_at_14_3_and_1_days_each_once(
    sweep: ExpirySweep,
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    """A daily check across the user token's last fortnight: three warnings, no more."""
    expires_at = credential(sessions, hooked.credential_id).expires_at
    assert expires_at is not None
    seen: list[str] = []
    statuses: list[CredentialStatus] = []
    for day in range(44, 60):
        now = later(graph, DAY if day > 44 else timedelta(days=44))
        sweep.run(now)
        statuses.append(credential(sessions, hooked.credential_id).status)
        seen = [e["created_at"] for e in events(sessions, EventType.CREDENTIAL_EXPIRING)]
    # 60 days to live: the marks are reached on days 46, 57 and 59.
    assert len(seen) == 3, seen
    assert statuses[:2] == [CredentialStatus.ACTIVE] * 2
    assert set(statuses[2:]) == {CredentialStatus.EXPIRING}
    warnings = events(sessions, EventType.CREDENTIAL_EXPIRING)
    api_view = api.get(f"/v1/credentials/{hooked.credential_id}", headers=hooked.key).json()
    assert warnings[-1]["data"]["status"] == "expiring"
    assert warnings[-1]["data"]["expires_at"] == api_view["expires_at"]
    # What happens on the day, and what to do, in the event itself.
    assert "keep publishing" in warnings[-1]["data"]["advice"]
    assert "log in again" in warnings[-1]["data"]["advice"]
    shown = json.dumps(warnings)
    assert "access_token" not in shown
    assert "EAA" not in shown


def test_a_check_that_ran_late_sends_only_the_nearest_warning(
    sweep: ExpirySweep, hooked: Setup, graph: SandboxClient, sessions: sessionmaker[Session]
) -> None:
    sweep.run(later(graph, timedelta(days=58)))  # two days left: past the 14 and 3 day marks
    sweep.run(later(graph, timedelta(hours=6)))
    [warning] = events(sessions, EventType.CREDENTIAL_EXPIRING)
    assert warning["data"]["status"] == "expiring"


def test_the_user_tokens_end_parks_nothing(
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
            "message": "after the user token's end",
            "publish_at": (datetime.now(UTC) + timedelta(days=70)).isoformat(),
        },
        headers=hooked.key,
    )
    assert response.status_code == 201, response.text
    now = later(graph, timedelta(days=61))
    assert sweep.run(now).user_token_expired == [hooked.credential_id]
    after = credential(sessions, hooked.credential_id)
    assert after.status == CredentialStatus.USER_TOKEN_EXPIRED
    assert after.user_token_dead_at == now
    # The Page token outlives the user token: checked, still valid, still there.
    [page] = after.pages
    assert page.token_status is PageTokenStatus.VALID
    assert page.page_token
    with sessions() as session:
        post = session.get(Post, response.json()["id"])
        assert post is not None
        assert post.status == PostStatus.SCHEDULED
    [event] = events(sessions, EventType.CREDENTIAL_USER_TOKEN_EXPIRED)
    assert event["data"]["status"] == "user_token_expired"
    assert "keep publishing" in event["data"]["advice"]
    # Checked again the next day: the same finding, no second event.
    assert sweep.run(now + DAY).user_token_expired == [hooked.credential_id]
    assert len(events(sessions, EventType.CREDENTIAL_USER_TOKEN_EXPIRED)) == 1
    assert events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH) == []


def test_a_fresh_token_from_the_client_makes_it_active_again(
    sweep: ExpirySweep,
    hooked: Setup,
    graph: SandboxClient,
    sessions: sessionmaker[Session],
    api: TestClient,
) -> None:
    now = later(graph, timedelta(days=61))
    assert sweep.run(now).user_token_expired == [hooked.credential_id]
    fresh = graph.control("POST", f"/users/{hooked.user['user_id']}/tokens")
    response = api.post(
        "/v1/credentials", json={"access_token": fresh["access_token"]}, headers=hooked.key
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    assert response.json()["user_token_expired_at"] is None


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


def test_an_invalidated_user_parks_the_posts_of_its_dead_pages(
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
    # A password change kills the user token and every Page token derived from it.
    graph.control(
        "POST", f"/users/{hooked.user['user_id']}/invalidate", {"reason": "password_changed"}
    )
    now = later(graph, timedelta(days=20))
    assert sweep.run(now).needs_reauth == [hooked.credential_id]
    after = credential(sessions, hooked.credential_id)
    assert after.status == CredentialStatus.NEEDS_REAUTH
    assert [(p.token_status, p.page_token) for p in after.pages] == [(PageTokenStatus.DEAD, None)]
    with sessions() as session:
        post = session.get(Post, response.json()["id"])
        assert post is not None
        assert post.status == PostStatus.NEEDS_REAUTH
    [event] = events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH)
    assert event["data"]["status"] == "needs_reauth"
    assert event["data"]["id"] == hooked.credential_id
    assert [p["token"] for p in event["data"]["pages"]] == ["dead"]
    assert len(events(sessions, EventType.CREDENTIAL_USER_TOKEN_EXPIRED)) == 1
    # Checked again the next day: nothing new to say.
    assert sweep.run(now + DAY).needs_reauth == [hooked.credential_id]
    assert len(events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH)) == 1
    assert events(sessions, EventType.CREDENTIAL_EXPIRING) == []


def test_check_now_answers_the_health_document(
    hooked: Setup, graph: SandboxClient, api: TestClient, settings: Settings
) -> None:
    url = f"/v1/credentials/{hooked.credential_id}"
    checked = api.post(f"{url}/check", headers=hooked.key)
    assert checked.status_code == 200, checked.text
    shown = api.get(url, headers=hooked.key).json()
    assert checked.json() == shown
    assert shown["status"] == "active"
    assert shown["last_checked_at"] is not None
    assert [(p["token"], p["can_post"]) for p in shown["pages"]] == [("valid", True)]
    graph.control(
        "POST", f"/users/{hooked.user['user_id']}/invalidate", {"reason": "password_changed"}
    )
    dead = api.post(f"{url}/check", headers=hooked.key).json()
    assert dead["status"] == "needs_reauth"
    assert [(p["token"], p["can_post"]) for p in dead["pages"]] == [("dead", False)]
    assert "log in again" in dead["advice"]
    assert "access_token" not in json.dumps(dead)
    # Another client cannot check it.
    other = bearer(add_client(settings, "someone-else"))
    assert api.post(f"{url}/check", headers=other).status_code == 404


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
            page = {
                "id": hooked.page_id,
                "name": "P",
                "access_token": "EAApage2",
                "tasks": ["CREATE_CONTENT"],
            }
            return httpx.Response(200, json={"data": [page]})
        return httpx.Response(404, json={"error": {"code": 100, "message": path}})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = GraphClient(
            http, graph_url="https://graph.test", version="v26.0", app_id="1", app_secret="s"
        )
        result = ExpirySweep(sessions, client, MARGIN).run(now)
    assert result.active == [hooked.credential_id]
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
    """Whoever finds a Page token dead (a worker's call, the check) marks it only while the
    credential still holds the user token it tried: a fresh one stored meanwhile wins."""
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
        cid, pages = hooked.credential_id, [hooked.page_id]
        assert mark_pages_dead(session, cid, pages, utcnow(), expected_token="x") == []
        assert mark_pages_dead(session, cid, pages, utcnow(), expected_token=raw) == pages
        assert mark_pages_dead(session, cid, pages, utcnow(), expected_token=raw) == []
    assert credential(sessions, hooked.credential_id).status == CredentialStatus.NEEDS_REAUTH
    assert len(events(sessions, EventType.CREDENTIAL_NEEDS_REAUTH)) == 1

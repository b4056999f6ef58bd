"""Quotas per client over HTTP (docs/quotas.md): real PostgreSQL, Redis, the Graph sandbox.

Each quota is reached and its refusal read as a client would; an override
raises a quota for one client only; racing requests never pass a quota.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from offpost.models import Client, Post, PostStatus
from offpost.settings import Settings
from tests.integration.api_support import (
    add_client,
    api_client,
    bearer,
    make_settings,
    running_api,
)
from tests.integration.posts_support import (
    Account,
    add_posts,
    assert_problem,
    db_session,
    make_account,
)
from tests.integration.sandbox_support import RunningSandbox, SandboxClient

DAY_S = 86_400


@pytest.fixture
def settings(postgres_url: str, sandbox_server: RunningSandbox, redis_url: str) -> Settings:
    """Small defaults, so that each quota is reached in a few requests."""
    return make_settings(
        postgres_url,
        sandbox_server,
        redis_url,
        quota_posts_per_day=3,
        quota_pending_posts=4,
        quota_active_schedules=1,
        quota_occurrences_per_day=24,
    )


@pytest.fixture
def alice(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "alice")


@pytest.fixture
def bob(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "bob")


@pytest.fixture
def admin(settings: Settings, api: TestClient) -> dict[str, str]:
    return bearer(add_client(settings, "ops", admin=True))


def post(api: TestClient, account: Account, count: int = 1) -> httpx.Response:
    if count == 1:
        return api.post("/v1/posts", json=account.body(), headers=account.headers)
    items = [account.body(message=f"post {i}") for i in range(count)]
    return api.post("/v1/posts/batch", json={"posts": items}, headers=account.headers)


def quota_of(response: httpx.Response) -> dict[str, Any]:
    quota: dict[str, Any] = response.json()["quota"]
    return quota


def posts_of(settings: Settings, account: Account) -> int:
    with db_session(settings) as session:
        return len(
            session.scalars(select(Post.id).where(Post.client_id == account.client_id)).all()
        )


def schedule_body(account: Account, cron: str = "0 9 * * *") -> dict[str, Any]:
    return {
        "credential_id": account.credential_id,
        "target": account.page_id,
        "message": "daily",
        "cron": cron,
        "timezone": "UTC",
    }


# --- posts per day ----------------------------------------------------------------------------


def test_posts_per_day_refuses_with_429_retry_after_and_the_quota_named(
    api: TestClient, alice: Account, bob: Account, settings: Settings
) -> None:
    assert post(api, alice).status_code == 201
    assert post(api, alice, 2).status_code == 201
    refused = post(api, alice)
    body = assert_problem(refused, 429, "rate_limited")
    assert quota_of(refused) == {"name": "posts_per_day", "limit": 3, "used": 3}
    assert "posts_per_day quota is 3" in body["detail"]
    # Room comes back when the oldest post is a day old: a little under a day from now.
    assert DAY_S - 120 <= int(refused.headers["retry-after"]) <= DAY_S
    assert posts_of(settings, alice) == 3
    # Another client's day is its own.
    assert post(api, bob, 3).status_code == 201


def test_a_batch_larger_than_the_day_can_never_pass_and_creates_nothing(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    refused = post(api, alice, 4)
    assert_problem(refused, 409, "quota_exceeded")
    assert quota_of(refused)["name"] == "posts_per_day"
    assert "retry-after" not in refused.headers
    assert posts_of(settings, alice) == 0


def test_an_idempotent_replay_counts_nothing(api: TestClient, alice: Account) -> None:
    headers = {**alice.headers, "Idempotency-Key": "once"}
    for _ in range(5):
        response = api.post("/v1/posts", json=alice.body(), headers=headers)
        assert response.status_code == 201, response.text
    assert post(api, alice, 2).status_code == 201


# --- pending posts ----------------------------------------------------------------------------


def test_pending_posts_refuses_with_409_until_one_is_done(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    # Posts that are done (published, failed, canceled) do not count; needs_reauth does.
    # (Created days ago: only the pending quota is in play.)
    days_ago = datetime.now(UTC) - timedelta(days=3)
    add_posts(settings, alice, 3, status=PostStatus.PUBLISHED, created_at=days_ago)
    add_posts(settings, alice, 1, status=PostStatus.NEEDS_REAUTH, created_at=days_ago)
    add_posts(settings, alice, 2, status=PostStatus.SCHEDULED, created_at=days_ago)
    assert post(api, alice).status_code == 201
    refused = post(api, alice)
    body = assert_problem(refused, 409, "quota_exceeded")
    assert quota_of(refused) == {"name": "pending_posts", "limit": 4, "used": 4}
    assert "pending_posts quota is 4" in body["detail"]
    # All or nothing: a batch that would pass it creates no post.
    first = api.get("/v1/posts", params={"status": "scheduled"}, headers=alice.headers)
    canceled = api.delete(f"/v1/posts/{first.json()['posts'][0]['id']}", headers=alice.headers)
    assert canceled.status_code == 200
    assert_problem(post(api, alice, 2), 409, "quota_exceeded")
    assert post(api, alice).status_code == 201


# --- schedules --------------------------------------------------------------------------------


def test_active_schedules_counts_active_ones_only(api: TestClient, alice: Account) -> None:
    first = api.post("/v1/schedules", json=schedule_body(alice), headers=alice.headers)
    assert first.status_code == 201, first.text
    refused = api.post("/v1/schedules", json=schedule_body(alice), headers=alice.headers)
    assert_problem(refused, 409, "quota_exceeded")
    assert quota_of(refused) == {"name": "active_schedules", "limit": 1, "used": 1}
    paused = api.patch(
        f"/v1/schedules/{first.json()['id']}", json={"status": "paused"}, headers=alice.headers
    )
    assert paused.status_code == 200
    second = api.post("/v1/schedules", json=schedule_body(alice), headers=alice.headers)
    assert second.status_code == 201, second.text
    # Resuming the first would make two active ones.
    resumed = api.patch(
        f"/v1/schedules/{first.json()['id']}", json={"status": "active"}, headers=alice.headers
    )
    assert_problem(resumed, 409, "quota_exceeded")
    shown = api.get(f"/v1/schedules/{first.json()['id']}", headers=alice.headers).json()
    assert shown["status"] == "paused"


@pytest.mark.parametrize(
    "cron",
    ["* * * * *", "*/30 * * * *", "*/2 9 * * *"],
    ids=["every minute", "every half hour", "every two minutes for an hour"],
)
def test_a_rule_more_frequent_than_the_quota_is_refused_with_422(
    api: TestClient, alice: Account, cron: str
) -> None:
    refused = api.post("/v1/schedules", json=schedule_body(alice, cron), headers=alice.headers)
    body = assert_problem(refused, 422, "quota_exceeded")
    assert quota_of(refused)["name"] == "occurrences_per_day"
    assert quota_of(refused)["limit"] == 24
    assert "more than 24 posts in a day" in body["detail"]


def test_a_rule_at_the_quota_is_accepted_and_a_change_past_it_refused(
    api: TestClient, alice: Account
) -> None:
    created = api.post(
        "/v1/schedules", json=schedule_body(alice, "0 * * * *"), headers=alice.headers
    )
    assert created.status_code == 201, created.text
    changed = api.patch(
        f"/v1/schedules/{created.json()['id']}",
        json={"cron": "*/2 * * * *"},
        headers=alice.headers,
    )
    assert_problem(changed, 422, "quota_exceeded")
    shown = api.get(f"/v1/schedules/{created.json()['id']}", headers=alice.headers).json()
    assert shown["cron"] == "0 * * * *"


# --- requests per minute, overrides, what a client sees ----------------------------------------


def test_an_override_raises_a_quota_for_one_client_only(
    api: TestClient, alice: Account, bob: Account, admin: dict[str, str]
) -> None:
    own = {"posts_per_day": 5, "pending_posts": 10}
    response = api.patch("/v1/admin/clients/alice", json=own, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["quotas"]["posts_per_day"] == 5
    assert response.json()["own"] == ["pending_posts", "posts_per_day"]
    assert post(api, alice, 5).status_code == 201
    assert quota_of(post(api, alice))["limit"] == 5
    assert post(api, bob, 3).status_code == 201
    assert quota_of(post(api, bob))["limit"] == 3
    # null returns it to the deployment's default.
    reset = api.patch("/v1/admin/clients/alice", json={"posts_per_day": None}, headers=admin)
    assert reset.json()["quotas"]["posts_per_day"] == 3
    assert reset.json()["own"] == ["pending_posts"]


def test_requests_per_minute_is_per_client(
    api: TestClient, alice: Account, bob: Account, admin: dict[str, str]
) -> None:
    set_quota = {"requests_per_minute": 3}
    assert api.patch("/v1/admin/clients/alice", json=set_quota, headers=admin).status_code == 200
    answers = []
    for _ in range(10):
        answers.append(api.get("/v1/quotas", headers=alice.headers))
        if answers[-1].status_code != 200:
            break
    refused = answers[-1]
    # Three per clock minute (alice's credential was one of them, most likely): six at
    # most if the minute turned between two requests.
    assert len(answers) - 1 <= 6
    assert_problem(refused, 429, "rate_limited")
    assert quota_of(refused)["name"] == "requests_per_minute"
    assert quota_of(refused)["limit"] == 3
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert api.get("/v1/quotas", headers=bob.headers).status_code == 200


def test_a_client_reads_its_quotas_and_use(
    api: TestClient, alice: Account, admin: dict[str, str]
) -> None:
    api.patch("/v1/admin/clients/alice", json={"pending_posts": 10}, headers=admin)
    post(api, alice, 2)
    api.post("/v1/schedules", json=schedule_body(alice), headers=alice.headers)
    body = api.get("/v1/quotas", headers=alice.headers).json()
    assert body["quotas"] == {
        "requests_per_minute": 6000,
        "posts_per_day": 3,
        "pending_posts": 10,
        "active_schedules": 1,
        "occurrences_per_day": 24,
    }
    assert body["own"] == ["pending_posts"]
    # The schedule's first occurrence is a pending post too, not one created through the API.
    assert body["usage"] == {"posts_per_day": 2, "pending_posts": 3, "active_schedules": 1}


def test_operators_list_every_client_and_refuse_bad_quotas(
    api: TestClient, alice: Account, bob: Account, admin: dict[str, str]
) -> None:
    post(api, bob, 2)
    listed = api.get("/v1/admin/clients", headers=admin).json()["clients"]
    by_name = {c["name"]: c for c in listed}
    assert set(by_name) == {"alice", "bob", "ops"}
    assert by_name["bob"]["usage"]["posts_per_day"] == 2
    assert by_name["ops"]["is_admin"] is True
    assert all("key" not in field for c in listed for field in c)
    for bad in ({"pending_posts": 0}, {"occurrences_per_day": 1441}, {"colour": 1}):
        answer = api.patch("/v1/admin/clients/alice", json=bad, headers=admin)
        assert_problem(answer, 422, "invalid_request", next(iter(bad)))
    assert_problem(
        api.patch("/v1/admin/clients/nobody", json={"pending_posts": 1}, headers=admin),
        404,
        "not_found",
    )
    by_id = api.patch(f"/v1/admin/clients/{bob.client_id}", json={}, headers=admin)
    assert by_id.json()["name"] == "bob"
    forbidden = api.patch(
        "/v1/admin/clients/alice", json={"pending_posts": 10**6}, headers=alice.headers
    )
    assert_problem(forbidden, 403, "forbidden")
    with db_session(api.app.state.settings) as session:  # type: ignore[attr-defined]
        row = session.scalars(select(Client).where(Client.name == "alice")).one()
        assert row.max_pending_posts is None


# --- racing requests --------------------------------------------------------------------------


@pytest.fixture
def served(settings: Settings, api: TestClient) -> Iterator[str]:
    """The same app under a real server, so that requests really run at once."""
    with running_api(settings) as url:
        yield url


def test_racing_requests_never_pass_a_quota(
    served: str, alice: Account, settings: Settings
) -> None:
    """Eight at once, half with an Idempotency-Key of their own (its row references the
    client, as the posts do: the quota's lock on the client must not deadlock with it)."""
    start = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        headers = {**alice.headers, **({"Idempotency-Key": f"race-{n}"} if n % 2 else {})}
        with httpx.Client(base_url=served, timeout=30) as http:
            start.wait()
            response = http.post("/v1/posts", json=alice.body(), headers=headers)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201] * 3 + [429] * 5
    assert posts_of(settings, alice) == 3


def test_racing_requests_never_pass_a_quota_on_sqlite(
    tmp_path: Path, sandbox_server: RunningSandbox, redis_url: str, graph: SandboxClient
) -> None:
    """SQLite has no row locks: the check takes the database's write lock instead."""
    settings = make_settings(
        f"sqlite:///{tmp_path / 'offpost.db'}", sandbox_server, redis_url, quota_posts_per_day=3
    )
    with api_client(settings) as api:
        account = make_account(api, settings, graph, "sqlite-racer")
    with running_api(settings) as url:
        start = threading.Barrier(6)
        statuses: list[int] = []
        lock = threading.Lock()

        def one() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                start.wait()
                response = http.post("/v1/posts", json=account.body(), headers=account.headers)
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sorted(statuses) == [201] * 3 + [429] * 3
    assert posts_of(settings, account) == 3


def test_a_retry_needs_room_under_pending_posts(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    days_ago = datetime.now(UTC) - timedelta(days=3)
    [failed] = add_posts(settings, alice, 1, status=PostStatus.FAILED, created_at=days_ago)
    add_posts(settings, alice, 4, status=PostStatus.SCHEDULED, created_at=days_ago)
    refused = api.post(f"/v1/posts/{failed}/retry", headers=alice.headers)
    assert_problem(refused, 409, "quota_exceeded")
    assert quota_of(refused) == {"name": "pending_posts", "limit": 4, "used": 4}
    # A post that is not failed still says so, quota or not.
    scheduled = api.get("/v1/posts", params={"status": "scheduled"}, headers=alice.headers)
    other = scheduled.json()["posts"][0]["id"]
    assert_problem(api.post(f"/v1/posts/{other}/retry", headers=alice.headers), 409, "conflict")
    api.delete(f"/v1/posts/{other}", headers=alice.headers)
    retried = api.post(f"/v1/posts/{failed}/retry", headers=alice.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "scheduled"

"""The posts API on SQLite (the embedded ``offpost up`` database): the core flows end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from offpost.graph.sandbox import RunningSandbox
from offpost.models import Post, PostStatus
from offpost.settings import Settings
from tests.integration.api_support import make_settings
from tests.integration.posts_support import (
    Account,
    assert_problem,
    count_posts,
    db_session,
    load,
    make_account,
    set_fields,
)
from tests.integration.sandbox_support import sandbox_client


@pytest.fixture
def settings(sqlite_url: str, sandbox_server: RunningSandbox, redis_url: str) -> Settings:
    return make_settings(sqlite_url, sandbox_server, redis_url)


@pytest.fixture
def alice(api: TestClient, settings: Settings, sandbox_server: RunningSandbox) -> Account:
    with sandbox_client(sandbox_server) as graph:
        return make_account(api, settings, graph, "alice")


def test_create_read_change_cancel(api: TestClient, alice: Account, settings: Settings) -> None:
    created = api.post(
        "/v1/posts",
        json=alice.body(publish_at="2030-06-01T12:00:00+02:00", link="https://example.com"),
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    post = created.json()
    assert post["publish_at"] == "2030-06-01T10:00:00Z"
    assert api.get(f"/v1/posts/{post['id']}", headers=alice.headers).json() == post
    with db_session(settings) as session:
        assert session.scalars(select(Post.id).where(Post.last_error.is_(None))).all() == [
            post["id"]
        ]

    patched = api.patch(
        f"/v1/posts/{post['id']}",
        json={"message": None, "publish_at": "2030-06-02T10:00:00Z"},
        headers=alice.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["message"] is None
    stored = load(settings, post["id"])
    assert stored.due_at == stored.publish_at == datetime(2030, 6, 2, 10, tzinfo=UTC)
    emptied = api.patch(f"/v1/posts/{post['id']}", json={"link": None}, headers=alice.headers)
    assert_problem(emptied, 422, "invalid_request", "link")

    canceled = api.delete(f"/v1/posts/{post['id']}", headers=alice.headers)
    assert canceled.json()["status"] == "canceled"
    assert_problem(
        api.patch(f"/v1/posts/{post['id']}", json={"message": "x"}, headers=alice.headers),
        409,
        "conflict",
    )


def test_retry_and_state_conflicts(api: TestClient, alice: Account, settings: Settings) -> None:
    post_id = api.post("/v1/posts", json=alice.body(), headers=alice.headers).json()["id"]
    assert_problem(api.post(f"/v1/posts/{post_id}/retry", headers=alice.headers), 409, "conflict")
    set_fields(settings, post_id, status=PostStatus.FAILED, attempts=2)
    retried = api.post(f"/v1/posts/{post_id}/retry", headers=alice.headers)
    assert retried.json()["status"] == "scheduled"
    assert load(settings, post_id).max_attempts == 7
    set_fields(settings, post_id, status=PostStatus.PUBLISHED)
    assert_problem(api.delete(f"/v1/posts/{post_id}", headers=alice.headers), 409, "conflict")


def test_batch_list_and_idempotency(api: TestClient, alice: Account, settings: Settings) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    items = [
        alice.body(message=str(i), publish_at=(start + timedelta(minutes=i)).isoformat())
        for i in range(120)
    ]
    headers = {**alice.headers, "Idempotency-Key": "sqlite-batch"}
    first = api.post("/v1/posts/batch", json={"posts": items}, headers=headers)
    assert first.status_code == 201, first.text[:300]
    again = api.post("/v1/posts/batch", json={"posts": items}, headers=headers)
    assert again.json() == first.json()
    assert count_posts(settings) == 120

    items[17]["publish_at"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    refused = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    problem = assert_problem(refused, 422, "invalid_request")
    assert [e["field"] for e in problem["errors"]] == ["posts[17].publish_at"]
    assert count_posts(settings) == 120

    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 50}
    while True:
        page = api.get("/v1/posts", params=params, headers=alice.headers).json()
        seen += [p["message"] for p in page["posts"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    # Newest first: a batch lists back to front.
    assert seen == [str(i) for i in reversed(range(120))]

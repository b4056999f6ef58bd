"""``/v1/admin/*`` over HTTP on a populated database (PostgreSQL, and SQLite for the stats).

The rows are written directly (``admin_support.populate``), so every number the
API answers is checked against rows whose numbers are known.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from offpost.models import Post, PostStatus
from offpost.settings import Settings
from tests.integration.admin_support import (
    EXPECTED_STATS,
    OLD_POSTS,
    TOTAL_POSTS,
    Population,
    make_admin_settings,
    populate,
    queued_messages,
    session_for,
)
from tests.integration.api_support import add_client, api_client, bearer
from tests.integration.posts_support import POST_KEYS, assert_problem

#: Every admin route, with a request that would succeed for an admin.
ADMIN_ROUTES = [
    ("GET", "/v1/admin/posts"),
    ("GET", "/v1/admin/stats"),
    ("GET", "/v1/admin/credentials"),
    ("GET", "/v1/admin/clients"),
    ("PATCH", "/v1/admin/clients/{client}"),
    ("POST", "/v1/admin/posts/{failed}/retry"),
    ("POST", "/v1/admin/posts/{scheduled}/cancel"),
]


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_admin_settings(database_url, redis_url)


@pytest.fixture
def pop(settings: Settings, api: TestClient) -> Population:
    return populate(settings)


@pytest.fixture
def admin(pop: Population) -> dict[str, str]:
    return bearer(pop.admin_key)


def _path(template: str, pop: Population) -> str:
    return template.format(failed=pop.failed_post, scheduled=pop.scheduled_post, client="acme")


# --- who may ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template"), ADMIN_ROUTES)
def test_a_client_key_gets_403(
    api: TestClient, pop: Population, method: str, template: str
) -> None:
    response = api.request(method, _path(template, pop), headers=bearer(pop.client_key))
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "template"), ADMIN_ROUTES)
def test_no_key_gets_401(api: TestClient, pop: Population, method: str, template: str) -> None:
    response = api.request(method, _path(template, pop))
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_forbidden_changes_change_nothing(api: TestClient, pop: Population) -> None:
    for method, template in ADMIN_ROUTES:
        api.request(method, _path(template, pop), headers=bearer(pop.client_key))
    with session_for(api.app.state.settings) as session:  # type: ignore[attr-defined]
        rows = session.execute(
            select(Post.id, Post.status).where(Post.id.in_([pop.failed_post, pop.scheduled_post]))
        )
        statuses = {post_id: status for post_id, status in rows}
    assert statuses == {
        pop.failed_post: PostStatus.FAILED,
        pop.scheduled_post: PostStatus.SCHEDULED,
    }


# --- stats -----------------------------------------------------------------------------------


def test_stats_match_the_rows(api: TestClient, admin: dict[str, str], redis_url: str) -> None:
    with queued_messages(redis_url, 3):
        response = api.get("/v1/admin/stats", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {**EXPECTED_STATS, "queue_depth": 3}


def test_stats_on_an_empty_database(settings: Settings, api: TestClient, redis_url: str) -> None:
    admin = bearer(add_client(settings, "ops", admin=True))
    with queued_messages(redis_url, 0):
        body = api.get("/v1/admin/stats", headers=admin).json()
    assert body == {
        "posts": dict.fromkeys(
            [
                "scheduled",
                "queued",
                "publishing",
                "published",
                "failed",
                "needs_reauth",
                "canceled",
                "deleted",
            ],
            0,
        ),
        "last_hour": {
            "published": 0,
            "failed": 0,
            "lateness_seconds": {"p50": None, "p95": None, "p99": None},
        },
        "top_errors": [],
        "credentials": {"active": 0, "expiring": 0, "user_token_expired": 0, "needs_reauth": 0},
        "queue_depth": 0,
        "due_not_dispatched": 0,
    }


def test_stats_without_a_redis_broker_have_no_queue_depth(
    database_url: str, redis_url: str
) -> None:
    settings = make_admin_settings(database_url, redis_url)
    with api_client(settings) as api:
        pop = populate(settings)
        api.app.state.queue._redis = None  # type: ignore[attr-defined]  # as for a non-Redis broker
        body = api.get("/v1/admin/stats", headers=bearer(pop.admin_key)).json()
    assert body["queue_depth"] is None
    assert body["posts"] == EXPECTED_STATS["posts"]


# --- posts -----------------------------------------------------------------------------------


def test_posts_of_every_client_newest_first_with_their_client(
    api: TestClient, admin: dict[str, str], pop: Population
) -> None:
    body = api.get("/v1/admin/posts", params={"limit": 500}, headers=admin).json()
    posts = body["posts"]
    assert len(posts) == TOTAL_POSTS
    assert body["next_cursor"] is None
    assert set(posts[0]) == POST_KEYS | {"client_id"}
    assert {p["client_id"] for p in posts} == {pop.acme_id, pop.globex_id}
    created = [p["created_at"] for p in posts]
    assert created == sorted(created, reverse=True)


def test_posts_pages_with_a_cursor(api: TestClient, admin: dict[str, str]) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = api.get("/v1/admin/posts", params=params, headers=admin).json()
        seen += [p["id"] for p in body["posts"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == TOTAL_POSTS


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "failed"}, 3),
        ({"status": "canceled"}, 0),
        ({"client": "globex"}, 2),
        ({"target": "page-globex"}, 2),
        ({"client": "acme", "status": "published"}, 12),
    ],
)
def test_posts_filters(
    api: TestClient, admin: dict[str, str], params: dict[str, str], expected: int
) -> None:
    response = api.get("/v1/admin/posts", params={**params, "limit": 500}, headers=admin)
    assert response.status_code == 200, response.text
    posts = response.json()["posts"]
    assert len(posts) == expected
    if "status" in params:
        assert {p["status"] for p in posts} <= {params["status"]}


def test_posts_client_by_id(api: TestClient, admin: dict[str, str], pop: Population) -> None:
    posts = api.get("/v1/admin/posts", params={"client": pop.globex_id}, headers=admin).json()
    assert [p["client_id"] for p in posts["posts"]] == [pop.globex_id] * 2


def test_posts_since(api: TestClient, admin: dict[str, str], pop: Population) -> None:
    since = (pop.now - timedelta(minutes=30)).isoformat()
    posts = api.get("/v1/admin/posts", params={"since": since, "limit": 500}, headers=admin)
    assert len(posts.json()["posts"]) == TOTAL_POSTS - OLD_POSTS - 2  # the failed ones: 59 min


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"client": "nobody"}, "client"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"cursor": "garbage"}, "cursor"),
    ],
)
def test_posts_bad_filters(
    api: TestClient, admin: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = api.get("/v1/admin/posts", params=params, headers=admin)
    body = assert_problem(response, 422, "invalid_request")
    assert [e["field"] for e in body["errors"]] == [field]


def test_posts_bad_status_is_422(api: TestClient, admin: dict[str, str]) -> None:
    response = api.get("/v1/admin/posts", params={"status": "lost"}, headers=admin)
    assert response.status_code == 422


# --- retry and cancel ------------------------------------------------------------------------


def test_retry_any_clients_failed_post(
    api: TestClient, admin: dict[str, str], pop: Population
) -> None:
    before = datetime.now(UTC)
    response = api.post(f"/v1/admin/posts/{pop.failed_post}/retry", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["client_id"] == pop.acme_id
    assert body["last_error"]["code"] == 368  # kept: it says why it failed before
    with session_for(api.app.state.settings) as session:  # type: ignore[attr-defined]
        post = session.get(Post, pop.failed_post)
        assert post is not None
        assert post.due_at >= before - timedelta(seconds=1)
    again = api.post(f"/v1/admin/posts/{pop.failed_post}/retry", headers=admin)
    assert_problem(again, 409, "conflict")


def test_retry_and_cancel_unknown_posts_are_404(api: TestClient, admin: dict[str, str]) -> None:
    for action in ("retry", "cancel"):
        for post_id in ("post_00000000000000000000", "nope"):
            response = api.post(f"/v1/admin/posts/{post_id}/{action}", headers=admin)
            assert_problem(response, 404, "not_found")


def test_cancel_any_clients_post(api: TestClient, admin: dict[str, str], pop: Population) -> None:
    response = api.post(f"/v1/admin/posts/{pop.scheduled_post}/cancel", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    # Canceling again answers the canceled post (as the client route does).
    again = api.post(f"/v1/admin/posts/{pop.scheduled_post}/cancel", headers=admin)
    assert again.status_code == 200
    stats = api.get("/v1/admin/stats", headers=admin).json()
    assert stats["posts"]["canceled"] == 1
    assert stats["due_not_dispatched"] == EXPECTED_STATS["due_not_dispatched"] - 1


def test_cancel_a_published_post_is_409(
    api: TestClient, admin: dict[str, str], pop: Population
) -> None:
    response = api.post(f"/v1/admin/posts/{pop.published_post}/cancel", headers=admin)
    assert_problem(response, 409, "conflict")


def test_retry_a_post_that_is_not_failed_is_409(
    api: TestClient, admin: dict[str, str], pop: Population
) -> None:
    response = api.post(f"/v1/admin/posts/{pop.scheduled_post}/retry", headers=admin)
    assert_problem(response, 409, "conflict")


# --- credentials -----------------------------------------------------------------------------


def test_credentials_expiring_within_hours(
    api: TestClient, admin: dict[str, str], pop: Population
) -> None:
    soon = api.get(
        "/v1/admin/credentials", params={"expiring_within_hours": 6}, headers=admin
    ).json()
    # The deleted one expires sooner but is listed too: the filter is only about time.
    ids = [c["id"] for c in soon["credentials"]]
    assert pop.expiring_credential in ids
    assert {c["fb_user_id"] for c in soon["credentials"]} == {"u2", "u5"}
    by_status = api.get(
        "/v1/admin/credentials", params={"status": "needs_reauth"}, headers=admin
    ).json()
    assert [c["fb_user_id"] for c in by_status["credentials"]] == ["u3"]


def test_admin_routes_are_in_the_openapi_document(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for method, template in ADMIN_ROUTES:
        path = template.replace("{failed}", "{post_id}").replace("{scheduled}", "{post_id}")
        assert method.lower() in paths[path]
    assert "get" in paths["/metrics"]

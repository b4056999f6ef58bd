"""The token store over HTTP: real PostgreSQL (and SQLite), the Graph sandbox over HTTP."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from offpost.api.limits import MemoryRateLimiter, RedisRateLimiter
from offpost.graph.sandbox import RunningSandbox
from offpost.models import Credential, Post, PostStatus, make_engine, make_sessionmaker
from offpost.settings import Settings
from tests.integration.api_support import add_client, api_client, bearer, make_settings
from tests.integration.sandbox_support import SandboxClient

PROBLEM = "application/problem+json"


@pytest.fixture
def alice(settings: Settings, api: TestClient) -> dict[str, str]:
    return bearer(add_client(settings, "alice"))


@contextlib.contextmanager
def db_session(settings: Settings) -> Iterator[Session]:
    """A session on its own engine, disposed afterwards (the app's pool is not ours)."""
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def raw_rows(settings: Settings) -> str:
    """Every row of every table that holds tokens, as text, straight from the database."""
    engine = make_engine(settings.database_url)
    out = []
    with engine.connect() as conn:
        for table in ("credentials", "credential_pages"):
            out += [repr(tuple(row)) for row in conn.execute(text(f"SELECT * FROM {table}"))]
    engine.dispose()
    return "\n".join(out)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return body


def count_credentials(settings: Settings) -> int:
    with db_session(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Credential)) or 0)


def test_intake_stores_encrypted_tokens_and_returns_none(
    api: TestClient,
    alice: dict[str, str],
    graph: SandboxClient,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = graph.mint_user(pages=2)
    with caplog.at_level(logging.DEBUG):
        response = api.post(
            "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
        )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("cred_")
    assert body["fb_user_id"] == user["user_id"]
    assert body["status"] == "active"
    assert "pages_manage_posts" in body["scopes"]
    assert sorted(p["id"] for p in body["pages"]) == sorted(p["id"] for p in user["pages"])
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert body["expires_at"].endswith("Z")
    # A long-lived token lives about 60 days (docs/graph.md).
    assert timedelta(days=59) < expires_at - datetime.now(UTC) < timedelta(days=61)

    with db_session(settings) as session:
        credential = session.scalars(select(Credential)).one()
        long_lived = credential.user_token
        page_tokens = [p.page_token for p in credential.pages]
    assert long_lived
    assert long_lived != user["access_token"]
    assert all(page_tokens)
    secrets = [long_lived, user["access_token"], *page_tokens]
    rows = raw_rows(settings)
    for secret in secrets:
        assert secret not in response.text
        assert secret not in rows
        assert secret not in caplog.text
    assert settings.app_secret is not None
    assert settings.app_secret.get_secret_value() not in caplog.text
    assert "gAAAA" in rows  # Fernet ciphertext is what is stored


def test_every_intake_call_carried_a_valid_proof(
    api: TestClient, alice: dict[str, str], graph: SandboxClient
) -> None:
    graph.control("DELETE", "/calls")
    user = graph.mint_user(pages=1)
    assert (
        api.post(
            "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
        ).status_code
        == 201
    )
    calls = [
        c for c in graph.control("GET", "/calls")["data"] if not c["path"].startswith("/_sandbox")
    ]
    paths = [c["path"] for c in calls]
    assert any(p.endswith("/debug_token") for p in paths)
    assert any(p.endswith("/oauth/access_token") for p in paths)
    assert any(p.endswith("/accounts") for p in paths)
    with_token = [c for c in calls if c.get("token_type")]
    assert with_token, calls
    for call in with_token:
        assert call["proof"] == "valid", call
        assert call["proof_timed"] is True, call


def test_resubmission_renews_the_same_credential_and_resumes_posts(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    first = api.post("/v1/credentials", json={"access_token": user["access_token"]}, headers=alice)
    assert first.status_code == 201
    cred_id = first.json()["id"]
    page_id = user["pages"][0]["id"]
    now = datetime.now(UTC)
    with db_session(settings) as session:
        client_id = session.scalars(select(Credential.client_id)).one()
        session.add_all(
            [
                Post(
                    client_id=client_id,
                    credential_id=cred_id,
                    target=page_id,
                    message="later",
                    publish_at=now + timedelta(days=1),
                    due_at=now + timedelta(days=1),
                    status=PostStatus.NEEDS_REAUTH,
                ),
                Post(
                    client_id=client_id,
                    credential_id=cred_id,
                    target=page_id,
                    message="overdue",
                    publish_at=now - timedelta(hours=1),
                    due_at=now - timedelta(hours=1),
                    status=PostStatus.NEEDS_REAUTH,
                ),
            ]
        )
        session.commit()

    # The user opens the client app again: a fresh short-lived token for the same user.
    second_token = graph.control("POST", f"/users/{user['user_id']}/tokens")["access_token"]
    second = api.post("/v1/credentials", json={"access_token": second_token}, headers=alice)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == cred_id
    assert count_credentials(settings) == 1
    with db_session(settings) as session:
        posts = {p.message: p for p in session.scalars(select(Post))}
    assert {p.status for p in posts.values()} == {PostStatus.SCHEDULED}
    assert posts["later"].due_at == posts["later"].publish_at
    assert posts["overdue"].due_at >= now


def test_another_client_sees_nothing_of_it(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    cred_id = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    ).json()["id"]
    bob = bearer(add_client(settings, "bob"))
    assert api.get("/v1/credentials", headers=bob).json() == {"credentials": []}
    assert_problem(api.get(f"/v1/credentials/{cred_id}", headers=bob), 404, "not_found")
    assert_problem(api.delete(f"/v1/credentials/{cred_id}", headers=bob), 404, "not_found")
    assert_problem(
        api.post(
            f"/v1/credentials/{cred_id}/client-code",
            json={"redirect_uri": "https://a.example/cb"},
            headers=bob,
        ),
        404,
        "not_found",
    )
    # Still there, still active, for its owner.
    assert api.get(f"/v1/credentials/{cred_id}", headers=alice).json()["status"] == "active"


def test_admin_routes_need_an_admin_key(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    assert_problem(api.get("/v1/admin/credentials", headers=alice), 403, "forbidden")
    admin = bearer(add_client(settings, "ops", admin=True))
    user = graph.mint_user(pages=1)
    api.post("/v1/credentials", json={"access_token": user["access_token"]}, headers=alice)
    listed = api.get(
        "/v1/admin/credentials", params={"expiring_within_hours": 24 * 61}, headers=admin
    )
    assert listed.status_code == 200
    assert [c["fb_user_id"] for c in listed.json()["credentials"]] == [user["user_id"]]
    soon = api.get("/v1/admin/credentials", params={"expiring_within_hours": 1}, headers=admin)
    assert soon.json()["credentials"] == []


def test_delete_wipes_tokens_and_cancels_pending_posts(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    cred_id = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    ).json()["id"]
    now = datetime.now(UTC)
    with db_session(settings) as session:
        client_id = session.scalars(select(Credential.client_id)).one()
        for status in (PostStatus.SCHEDULED, PostStatus.PUBLISHED):
            session.add(
                Post(
                    client_id=client_id,
                    credential_id=cred_id,
                    target=user["pages"][0]["id"],
                    message=status.value,
                    publish_at=now,
                    due_at=now,
                    status=status,
                )
            )
        session.commit()
    response = api.delete(f"/v1/credentials/{cred_id}", headers=alice)
    assert response.status_code == 204
    assert response.content == b""
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT user_token, status FROM credentials")).one() == (
            None,
            "deleted",
        )
        assert conn.execute(text("SELECT page_token FROM credential_pages")).scalars().all() == [
            None
        ]
        statuses = {m: s for m, s in conn.execute(text("SELECT message, status FROM posts"))}
    engine.dispose()
    assert statuses == {"scheduled": "canceled", "published": "published"}
    assert api.get(f"/v1/credentials/{cred_id}", headers=alice).json()["status"] == "deleted"


def test_client_code_is_redeemable_by_the_client(
    api: TestClient, alice: dict[str, str], graph: SandboxClient
) -> None:
    user = graph.mint_user(pages=1)
    cred_id = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    ).json()["id"]
    redirect = "https://client.example/callback"
    response = api.post(
        f"/v1/credentials/{cred_id}/client-code", json={"redirect_uri": redirect}, headers=alice
    )
    assert response.status_code == 200, response.text
    code = response.json()["code"]
    # The client redeems it at Graph itself, without the app secret.
    redeemed = graph.get(
        "/oauth/access_token",
        code=code,
        client_id=graph.app_id,
        redirect_uri=redirect,
        machine_id="device-1",
    )
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["machine_id"] == "device-1"
    me = graph.get("/me", redeemed.json()["access_token"])
    assert me.json()["id"] == user["user_id"]
    bad = api.post(
        f"/v1/credentials/{cred_id}/client-code", json={"redirect_uri": "ftp://x"}, headers=alice
    )
    assert_problem(bad, 422, "invalid_request")


# --- bad input: right status and code, nothing stored, still serving ---------------------------


def _other_app_token(graph: SandboxClient) -> str:
    graph.control("POST", "/apps", {"app_id": "999000111", "app_secret": "another-apps-secret"})
    return str(graph.mint_user(pages=1, app_id="999000111")["access_token"])


def _page_token(graph: SandboxClient) -> str:
    user = graph.mint_user(pages=1)
    return graph.page_token(graph.long_lived(user["access_token"]), user["pages"][0]["id"])


@pytest.mark.parametrize(
    ("make_body", "status", "code"),
    [
        (lambda g: {"access_token": "EAAnotarealtokenatall1234567890"}, 422, "invalid_token"),
        (lambda g: {"access_token": _other_app_token(g)}, 422, "invalid_token"),
        (lambda g: {"access_token": _page_token(g)}, 422, "invalid_token"),
        (lambda g: {}, 422, "invalid_request"),
        (lambda g: {"access_token": ""}, 422, "invalid_request"),
        (lambda g: {"access_token": "x" * 5000}, 422, "invalid_request"),
        (lambda g: {"access_token": "EAAx", "scope": "all"}, 422, "invalid_request"),
        (lambda g: ["not", "an", "object"], 422, "invalid_request"),
    ],
    ids=[
        "rejected",
        "other-app",
        "page-token",
        "empty",
        "blank",
        "too-long",
        "unknown-field",
        "not-object",
    ],
)
def test_bad_tokens_and_bodies(
    api: TestClient,
    alice: dict[str, str],
    graph: SandboxClient,
    settings: Settings,
    make_body: Any,
    status: int,
    code: str,
) -> None:
    body = assert_problem(
        api.post("/v1/credentials", json=make_body(graph), headers=alice), status, code
    )
    if code == "invalid_request":
        assert body["errors"], body
    assert count_credentials(settings) == 0
    assert api.get("/healthz").status_code == 200


def test_expired_token_is_rejected(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    graph.advance(2 * 3600)  # short-lived tokens live one hour
    try:
        body = assert_problem(
            api.post("/v1/credentials", json={"access_token": user["access_token"]}, headers=alice),
            422,
            "invalid_token",
        )
    finally:
        graph.control("POST", "/reset")
    assert body["errors"][0]["field"] == "access_token"
    assert user["access_token"] not in str(body)
    assert count_credentials(settings) == 0


def test_malformed_and_huge_bodies(
    api: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    assert_problem(
        api.post("/v1/credentials", content=b"{not json", headers=headers), 422, "invalid_request"
    )
    huge = b'{"access_token": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert_problem(
        api.post("/v1/credentials", content=huge, headers=headers), 413, "payload_too_large"
    )
    assert count_credentials(settings) == 0
    assert api.get("/healthz").status_code == 200


def test_graph_timing_out_is_503_and_stores_nothing(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    graph.fault(path="debug_token", times=1, latency_ms=4000)  # the API's Graph timeout is 2 s
    response = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    )
    assert_problem(response, 503, "graph_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert count_credentials(settings) == 0


def test_graph_erroring_is_503_with_retry_after(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    graph.fault(
        path="accounts",
        times=1,
        status=500,
        error={
            "code": 2,
            "message": "An unexpected error has occurred. Please retry your request later.",
            "is_transient": True,
        },
    )
    response = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    )
    assert_problem(response, 503, "graph_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert count_credentials(settings) == 0


def test_graph_unreachable_is_503(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str, graph: SandboxClient
) -> None:
    settings = make_settings(
        postgres_url, sandbox_server, redis_url, graph_url="http://127.0.0.1:9"
    )
    with api_client(settings) as api:
        key = bearer(add_client(settings, "alice"))
        user = graph.mint_user(pages=1)
        response = api.post(
            "/v1/credentials", json={"access_token": user["access_token"]}, headers=key
        )
        assert_problem(response, 503, "graph_unavailable")
        assert "Retry-After" in response.headers
        assert count_credentials(settings) == 0
        assert api.get("/healthz").status_code == 200


# --- the skeleton: auth, errors, limits, health, OpenAPI ----------------------------------------


def test_authentication_errors(api: TestClient, settings: Settings) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = api.get("/v1/credentials", headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    revoked = add_client(settings, "gone")
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE clients SET revoked_at = CURRENT_TIMESTAMP WHERE name = 'gone'"))
    engine.dispose()
    assert_problem(api.get("/v1/credentials", headers=bearer(revoked)), 401, "unauthorized")


def test_unknown_routes_and_methods_are_problems(api: TestClient, alice: dict[str, str]) -> None:
    assert_problem(api.get("/v1/nothing-here", headers=alice), 404, "not_found")
    assert_problem(api.put("/v1/credentials", headers=alice), 405, "invalid_request")


def fixed_clock() -> Callable[[], float]:
    """A limiter's clock 10 s into a minute of its own, far from now.

    No window ends half-way through a test (a clock minute may end at any time
    on a slow machine), and no other test's counts share it.
    """
    now = float(60 * (10**9 + secrets.randbelow(10**6)) + 10)
    return lambda: now


def test_failed_authentications_are_rate_limited(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> None:
    settings = make_settings(
        postgres_url,
        sandbox_server,
        redis_url,
        auth_failures_per_minute=3,
        rate_limit_per_minute=5,
        broker_url="memory://",
    )
    with api_client(settings) as api:
        assert isinstance(api.app.state.limiter, MemoryRateLimiter)  # type: ignore[attr-defined]
        api.app.state.limiter = MemoryRateLimiter(clock=fixed_clock())  # type: ignore[attr-defined]
        statuses = [
            api.get("/v1/credentials", headers=bearer("wrong")).status_code for _ in range(5)
        ]
        assert statuses[:3] == [401, 401, 401]
        limited = api.get("/v1/credentials", headers=bearer("wrong"))
        assert_problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # This address is slowed now, whatever key it sends; another one is not.
        key = bearer(add_client(settings, "busy"))
        assert_problem(api.get("/v1/credentials", headers=key), 429, "rate_limited")
        elsewhere = TestClient(api.app, client=("198.51.100.1", 40000))
        codes = [elsewhere.get("/v1/credentials", headers=key).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]


def test_rate_limits_are_shared_through_redis(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> None:
    settings = make_settings(postgres_url, sandbox_server, redis_url, rate_limit_per_minute=4)
    upgrade = True
    key = None
    codes = []
    clock = fixed_clock()
    counts = redis.Redis.from_url(settings.broker_url)
    # Two app instances (two API processes) share one allowance.
    try:
        for _ in range(2):
            with api_client(settings, migrate=upgrade) as api:
                state = api.app.state  # type: ignore[attr-defined]
                assert isinstance(state.limiter, RedisRateLimiter)
                state.limiter = RedisRateLimiter(counts, clock=clock)
                key = key or bearer(add_client(settings, "shared"))
                codes += [api.get("/v1/credentials", headers=key).status_code for _ in range(3)]
            upgrade = False
    finally:
        counts.close()
    assert codes.count(200) == 4
    assert codes[4:] == [429, 429]


def test_health_and_readiness(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_fails_without_a_broker(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str
) -> None:
    settings = make_settings(
        postgres_url, sandbox_server, redis_url, broker_url="redis://127.0.0.1:9/0"
    )
    with api_client(settings) as api:
        ready = api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"].startswith("unreachable")
    assert ready.json()["checks"]["database"] == "ok"


def test_openapi_describes_every_route(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/v1/credentials"]) == {"get", "post"}
    assert set(paths["/v1/credentials/{credential_id}"]) == {"get", "delete"}
    assert "post" in paths["/v1/credentials/{credential_id}/client-code"]
    assert "get" in paths["/v1/admin/credentials"]
    assert {"/healthz", "/readyz"} <= set(paths)
    schemas = spec["components"]["schemas"]
    assert {"CredentialCreate", "CredentialOut", "ClientCodeCreate"} <= set(schemas)
    assert "access_token" not in schemas["CredentialOut"]["properties"]


def test_sqlite_intake_works_too(
    sqlite_url: str, sandbox_server: RunningSandbox, redis_url: str, graph: SandboxClient
) -> None:
    settings = make_settings(sqlite_url, sandbox_server, redis_url, broker_url="memory://")
    with api_client(settings) as api:
        key = bearer(add_client(settings, "alice"))
        user = graph.mint_user(pages=1)
        response = api.post(
            "/v1/credentials", json={"access_token": user["access_token"]}, headers=key
        )
        assert response.status_code == 201, response.text
        assert (
            api.get("/v1/credentials", headers=key).json()["credentials"][0]["id"]
            == response.json()["id"]
        )


# --- the grant and the Page tasks ----------------------------------------------------------


@pytest.mark.parametrize(
    "missing",
    [["pages_manage_posts"], ["pages_show_list", "pages_read_engagement"]],
)
def test_a_grant_without_what_offpost_needs_is_refused_naming_it(
    api: TestClient,
    alice: dict[str, str],
    graph: SandboxClient,
    settings: Settings,
    missing: list[str],
) -> None:
    granted = [
        scope
        for scope in (
            "public_profile",
            "pages_show_list",
            "pages_manage_posts",
            "pages_read_engagement",
        )
        if scope not in missing
    ]
    user = graph.mint_user(pages=1, scopes=granted)
    response = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    )
    body = assert_problem(response, 422, "missing_permissions")
    assert body["missing_permissions"] == sorted(
        missing, key=["pages_show_list", "pages_manage_posts", "pages_read_engagement"].index
    )
    for scope in missing:
        assert scope in body["detail"]
    assert user["access_token"] not in response.text
    # The same through a post that carries the token.
    inline = api.post(
        "/v1/posts",
        json={
            "access_token": user["access_token"],
            "target": user["pages"][0]["id"],
            "message": "hello",
        },
        headers=alice,
    )
    assert (
        assert_problem(inline, 422, "missing_permissions")["errors"][0]["field"] == "access_token"
    )
    assert count_credentials(settings) == 0


def test_a_page_without_create_content_takes_no_posts(
    api: TestClient, alice: dict[str, str], graph: SandboxClient
) -> None:
    user = graph.mint_user(pages=2)
    postable, read_only = (page["id"] for page in user["pages"])
    graph.set_tasks(user["user_id"], read_only, ["ANALYZE", "MODERATE"])
    created = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    )
    assert created.status_code == 201, created.text
    pages = {page["id"]: page for page in created.json()["pages"]}
    assert pages[postable]["can_post"] is True
    assert "CREATE_CONTENT" in pages[postable]["tasks"]
    assert pages[read_only]["can_post"] is False
    assert pages[read_only]["tasks"] == ["ANALYZE", "MODERATE"]
    assert pages[read_only]["token"] == "valid"
    credential_id = created.json()["id"]

    def post(target: str) -> httpx.Response:
        return api.post(
            "/v1/posts",
            json={
                "credential_id": credential_id,
                "target": target,
                "message": "hello",
                "publish_at": "2030-01-01T09:00:00Z",
            },
            headers=alice,
        )

    assert post(postable).status_code == 201
    refused = assert_problem(post(read_only), 422, "page_not_postable")
    assert "CREATE_CONTENT" in refused["detail"]
    schedule = api.post(
        "/v1/schedules",
        json={
            "credential_id": credential_id,
            "target": read_only,
            "message": "weekly",
            "rrule": "FREQ=WEEKLY",
            "timezone": "Europe/Berlin",
            "start_at": "2030-01-01T09:00:00Z",
        },
        headers=alice,
    )
    assert_problem(schedule, 422, "page_not_postable")


def test_a_fresh_login_without_a_page_keeps_its_posts_waiting_until_it_is_back(
    api: TestClient, alice: dict[str, str], graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=2)
    kept, lost = (page["id"] for page in user["pages"])
    created = api.post(
        "/v1/credentials", json={"access_token": user["access_token"]}, headers=alice
    ).json()
    post = api.post(
        "/v1/posts",
        json={
            "credential_id": created["id"],
            "target": lost,
            "message": "waits for its Page",
            "publish_at": "2030-01-01T09:00:00Z",
        },
        headers=alice,
    ).json()
    assert post["status"] == "scheduled"

    def login_again() -> dict[str, Any]:
        fresh = graph.control("POST", f"/users/{user['user_id']}/tokens")
        response = api.post(
            "/v1/credentials", json={"access_token": fresh["access_token"]}, headers=alice
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    graph.remove_role(user["user_id"], lost)
    renewed = login_again()
    assert renewed["status"] == "needs_reauth"
    assert {p["id"]: p["token"] for p in renewed["pages"]} == {kept: "valid", lost: "dead"}
    assert api.get(f"/v1/posts/{post['id']}", headers=alice).json()["status"] == "needs_reauth"

    graph.restore_role(user["user_id"], lost)
    back = login_again()
    assert back["status"] == "active"
    assert {p["id"]: p["token"] for p in back["pages"]} == {kept: "valid", lost: "valid"}
    assert api.get(f"/v1/posts/{post['id']}", headers=alice).json()["status"] == "scheduled"

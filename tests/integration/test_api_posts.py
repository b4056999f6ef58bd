"""Creating posts over HTTP: real PostgreSQL, the Graph sandbox over HTTP.

One post, a batch, inline tokens, every validation rule, and ``Idempotency-Key``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from offpost.models import (
    Credential,
    CredentialPage,
    CredentialStatus,
    IdempotencyKey,
    PageTokenStatus,
    Post,
    PostStatus,
    make_engine,
    make_sessionmaker,
    request_hash,
)
from offpost.posts.idempotency import StoredAnswer, run_once
from offpost.settings import Settings
from tests.integration.posts_support import (
    POST_KEYS,
    Account,
    add_posts,
    assert_problem,
    count_posts,
    db_session,
    load,
    make_account,
)
from tests.integration.sandbox_support import SandboxClient


@pytest.fixture
def alice(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "alice")


# --- one post ----------------------------------------------------------------------------------


def test_create_with_a_credential(api: TestClient, alice: Account, settings: Settings) -> None:
    body = alice.body(
        message="Launch day",
        link="https://example.com/launch",
        photo_url="https://cdn.example.com/p.jpg",
        publish_at="2030-12-01T09:00:00+01:00",
    )
    response = api.post("/v1/posts", json=body, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    post = response.json()
    assert set(post) == POST_KEYS
    assert post["id"].startswith("post_")
    assert post["status"] == "scheduled"
    assert post["credential_id"] == alice.credential_id
    assert post["target"] == alice.page_id
    assert (post["message"], post["link"], post["photo_url"]) == (
        "Launch day",
        "https://example.com/launch",
        "https://cdn.example.com/p.jpg",
    )
    assert post["publish_at"] == "2030-12-01T08:00:00Z"
    assert post["attempts"] == 0
    assert post["schedule_id"] is None
    assert post["graph_post_id"] is None
    assert post["published_at"] is None
    assert post["last_error"] is None
    assert post["created_at"].endswith("Z")
    stored = load(settings, post["id"])
    assert stored.publish_at == stored.due_at == datetime(2030, 12, 1, 8, 0, tzinfo=UTC)
    assert stored.client_id == alice.client_id
    assert stored.last_error is None
    assert api.get(f"/v1/posts/{post['id']}", headers=alice.headers).json() == post


def test_last_error_is_sql_null_not_json_null(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    api.post("/v1/posts", json=alice.body(), headers=alice.headers)
    with db_session(settings) as session:
        assert session.scalars(select(Post.id).where(Post.last_error.is_(None))).all()


def test_publish_at_omitted_means_now(api: TestClient, alice: Account, settings: Settings) -> None:
    before = datetime.now(UTC)
    post = api.post("/v1/posts", json=alice.body(), headers=alice.headers).json()
    stored = load(settings, post["id"])
    assert before - timedelta(seconds=1) <= stored.publish_at <= datetime.now(UTC)
    assert stored.due_at == stored.publish_at


def test_publish_at_a_little_in_the_past_is_accepted(api: TestClient, alice: Account) -> None:
    recent = (datetime.now(UTC) - timedelta(minutes=4)).isoformat()
    response = api.post("/v1/posts", json=alice.body(publish_at=recent), headers=alice.headers)
    assert response.status_code == 201, response.text


def test_longest_message_is_accepted(api: TestClient, alice: Account) -> None:
    body = alice.body(message="é" * 63_206)
    response = api.post("/v1/posts", json=body, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert len(response.json()["message"]) == 63_206


def test_create_with_an_inline_token(
    api: TestClient, alice: Account, graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=2)
    body = {"access_token": user["access_token"], "target": user["pages"][1]["id"], "message": "x"}
    response = api.post("/v1/posts", json=body, headers=alice.headers)
    assert response.status_code == 201, response.text
    post = response.json()
    credentials = api.get("/v1/credentials", headers=alice.headers).json()["credentials"]
    taken = [c for c in credentials if c["fb_user_id"] == user["user_id"]]
    assert len(taken) == 1
    assert post["credential_id"] == taken[0]["id"]
    assert user["access_token"] not in response.text
    # The same user's token again renews that credential rather than making a second one.
    again = api.post("/v1/posts", json=body, headers=alice.headers)
    assert again.json()["credential_id"] == taken[0]["id"]


def test_inline_token_rejected_stores_nothing(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    body = {"access_token": "EAAnotarealtokenatall1234567890", "target": "1", "message": "x"}
    assert_problem(
        api.post("/v1/posts", json=body, headers=alice.headers),
        422,
        "invalid_token",
        "access_token",
    )
    assert count_posts(settings) == 0


def test_inline_token_with_a_bad_body_never_reaches_graph(
    api: TestClient, alice: Account, graph: SandboxClient
) -> None:
    user = graph.mint_user(pages=1)
    graph.control("DELETE", "/calls")
    body = {"access_token": user["access_token"], "target": user["pages"][0]["id"]}
    assert_problem(
        api.post("/v1/posts", json=body, headers=alice.headers), 422, "invalid_request", "message"
    )
    calls = [c for c in graph.control("GET", "/calls")["data"] if "_sandbox" not in c["path"]]
    assert calls == []


def test_inline_token_when_graph_is_down(
    api: TestClient, alice: Account, graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    graph.fault(path="debug_token", times=5, status=500, error={"code": 2, "message": "down"})
    body = {"access_token": user["access_token"], "target": user["pages"][0]["id"], "message": "x"}
    response = api.post("/v1/posts", json=body, headers=alice.headers)
    assert_problem(response, 503, "graph_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert count_posts(settings) == 0


def _minutes_ago(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"message": None}, "message"),
        ({"message": "x" * 63_207}, "message"),
        ({"message": "   "}, "message"),
        ({"message": 42}, "message"),
        ({"link": "ftp://example.com/file"}, "link"),
        ({"link": "https://exa mple.com"}, "link"),
        ({"link": "https://example.com/" + "a" * 2100}, "link"),
        ({"link": "example.com"}, "link"),
        ({"photo_url": "javascript:alert(1)"}, "photo_url"),
        ({"photo_url": "https://user:pw@example.com/p.jpg"}, "photo_url"),
        ({"publish_at": "2030-12-01T09:00:00"}, "publish_at"),
        ({"publish_at": "2030-12-01"}, "publish_at"),
        ({"publish_at": 1924992000}, "publish_at"),
        ({"publish_at": "soon"}, "publish_at"),
        ({"publish_at": "9999-12-31T23:00:00-05:00"}, "publish_at"),
        ({"publish_at": "PAST10"}, "publish_at"),
        ({"target": "999999999"}, "target"),
        ({"target": None}, "target"),
        ({"target": "9" * 65}, "target"),
        ({"credential_id": "cred_AAAAAAAAAAAAAAAAAAAA"}, "credential_id"),
        ({"credential_id": "not-an-id"}, "credential_id"),
        ({"credential_id": None}, "credential_id"),
        ({"access_token": "EAAsomething"}, "access_token"),
        ({"colour": "red"}, "colour"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else v,
)
def test_each_rule_is_a_422_naming_the_field(
    api: TestClient, alice: Account, settings: Settings, change: dict[str, Any], field: str
) -> None:
    if change.get("publish_at") == "PAST10":
        change = {"publish_at": _minutes_ago(10)}
    body = alice.body(**{k: v for k, v in change.items() if v is not None})
    for k, v in change.items():
        if v is None:
            body.pop(k, None)
    response = api.post("/v1/posts", json=body, headers=alice.headers)
    problem = assert_problem(response, 422, "invalid_request", field)
    assert problem["detail"]
    assert count_posts(settings) == 0


def test_not_json_and_not_an_object(api: TestClient, alice: Account) -> None:
    headers = {**alice.headers, "Content-Type": "application/json"}
    assert_problem(api.post("/v1/posts", content=b"{oops", headers=headers), 422, "invalid_request")
    assert_problem(
        api.post("/v1/posts", json=[1, 2], headers=alice.headers), 422, "invalid_request"
    )


def test_another_clients_credential_looks_like_no_credential(
    api: TestClient, alice: Account, settings: Settings, graph: SandboxClient
) -> None:
    bob = make_account(api, settings, graph, "bob")
    foreign = api.post(
        "/v1/posts", json=bob.body(credential_id=alice.credential_id), headers=bob.headers
    )
    missing = api.post(
        "/v1/posts",
        json=bob.body(credential_id="cred_AAAAAAAAAAAAAAAAAAAA"),
        headers=bob.headers,
    )
    first = assert_problem(foreign, 422, "invalid_request", "credential_id")
    second = assert_problem(missing, 422, "invalid_request", "credential_id")
    assert first["errors"] == second["errors"]
    assert alice.credential_id not in foreign.text
    assert count_posts(settings) == 0


def test_deleted_credential_is_a_conflict(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    assert api.delete(f"/v1/credentials/{alice.credential_id}", headers=alice.headers).status_code
    response = api.post("/v1/posts", json=alice.body(), headers=alice.headers)
    assert_problem(response, 409, "conflict", "credential_id")
    assert count_posts(settings) == 0


def test_a_post_for_a_page_whose_token_died_is_accepted_as_needs_reauth(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    with db_session(settings) as session:
        session.execute(
            update(CredentialPage)
            .where(CredentialPage.credential_id == alice.credential_id)
            .values(token_status=PageTokenStatus.DEAD, page_token=None)
        )
        session.execute(
            update(Credential)
            .where(Credential.id == alice.credential_id)
            .values(status=CredentialStatus.NEEDS_REAUTH)
        )
        session.commit()
    response = api.post("/v1/posts", json=alice.body(), headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "needs_reauth"
    assert load(settings, response.json()["id"]).status is PostStatus.NEEDS_REAUTH


def test_create_wakes_the_dispatcher(api: TestClient, alice: Account) -> None:
    woken: list[datetime] = []
    api.app.state.wake_dispatcher = woken.append  # type: ignore[attr-defined]
    soon = datetime.now(UTC) + timedelta(minutes=3)
    later = soon + timedelta(hours=1)
    api.post("/v1/posts", json=alice.body(publish_at=soon.isoformat()), headers=alice.headers)
    items = [alice.body(publish_at=later.isoformat()), alice.body(publish_at=soon.isoformat())]
    api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    assert woken == [soon, soon]


def test_a_failing_wake_does_not_fail_the_request(api: TestClient, alice: Account) -> None:
    def broken(_: datetime) -> None:
        raise RuntimeError("dispatcher gone")

    api.app.state.wake_dispatcher = broken  # type: ignore[attr-defined]
    assert api.post("/v1/posts", json=alice.body(), headers=alice.headers).status_code == 201


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_same_key_same_body_answers_the_first_answer(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "order-1"}
    first = api.post("/v1/posts", json=alice.body(message="once"), headers=headers)
    assert first.status_code == 201
    # The post changes afterwards; the replay is still the first answer.
    api.patch(f"/v1/posts/{first.json()['id']}", json={"message": "edited"}, headers=alice.headers)
    # Same body with keys in another order and an explicit null.
    body = {"message": "once", "link": None, **alice.body(message="once")}
    second = api.post("/v1/posts", json=body, headers=headers)
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert count_posts(settings) == 1


def test_same_key_other_body_is_a_conflict(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "order-2"}
    assert api.post("/v1/posts", json=alice.body(), headers=headers).status_code == 201
    other = api.post("/v1/posts", json=alice.body(message="other"), headers=headers)
    assert_problem(other, 409, "conflict")
    # The same key on the batch route is another request too.
    batch = api.post("/v1/posts/batch", json={"posts": [alice.body()]}, headers=headers)
    assert_problem(batch, 409, "conflict")
    assert count_posts(settings) == 1


def test_keys_belong_to_one_client(
    api: TestClient, alice: Account, settings: Settings, graph: SandboxClient
) -> None:
    bob = make_account(api, settings, graph, "bob")
    a = api.post("/v1/posts", json=alice.body(), headers={**alice.headers, "Idempotency-Key": "k"})
    b = api.post("/v1/posts", json=bob.body(), headers={**bob.headers, "Idempotency-Key": "k"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]
    assert b.json()["credential_id"] == bob.credential_id
    assert count_posts(settings) == 2


def test_refused_request_is_not_remembered(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "k-bad"}
    bad = api.post("/v1/posts", json=alice.body(target="999"), headers=headers)
    assert_problem(bad, 422, "invalid_request", "target")
    good = api.post("/v1/posts", json=alice.body(), headers=headers)
    assert good.status_code == 201
    assert count_posts(settings) == 1


def test_expired_key_is_used_afresh(api: TestClient, alice: Account, settings: Settings) -> None:
    headers = {**alice.headers, "Idempotency-Key": "k-old"}
    first = api.post("/v1/posts", json=alice.body(), headers=headers).json()
    with db_session(settings) as session:
        session.execute(
            update(IdempotencyKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    second = api.post("/v1/posts", json=alice.body(message="new"), headers=headers)
    assert second.status_code == 201
    assert second.json()["id"] != first["id"]
    third = api.post("/v1/posts", json=alice.body(message="new"), headers=headers)
    assert third.json() == second.json()
    assert count_posts(settings) == 2


def test_bad_keys(api: TestClient, alice: Account, settings: Settings) -> None:
    long_key = {**alice.headers, "Idempotency-Key": "k" * 256}
    assert_problem(
        api.post("/v1/posts", json=alice.body(), headers=long_key),
        422,
        "invalid_request",
        "Idempotency-Key",
    )
    ok_key = {**alice.headers, "Idempotency-Key": "k" * 255}
    assert api.post("/v1/posts", json=alice.body(), headers=ok_key).status_code == 201
    assert count_posts(settings) == 1


def test_concurrent_duplicate_key_creates_once(settings: Settings, alice: Account) -> None:
    """Two transactions claim one key: the second waits, collides, and replays the first."""
    engine = make_engine(settings.database_url, encryption_keys=settings.encryption_key_list())
    sessions = make_sessionmaker(engine)
    digest = request_hash("POST", "/v1/posts", {"m": 1})
    now = datetime.now(UTC)
    first_claimed = threading.Event()
    release_first = threading.Event()
    results: dict[str, tuple[StoredAnswer, bool]] = {}

    def work(name: str) -> StoredAnswer:
        post_id = add_posts_in(sessions_by_name[name], alice, name)
        if name == "first":
            first_claimed.set()
            release_first.wait(10)
        return StoredAnswer(201, {"id": post_id})

    sessions_by_name = {"first": sessions(), "second": sessions()}

    def run(name: str) -> None:
        results[name] = run_once(
            sessions_by_name[name],
            client_id=alice.client_id,
            key="same",
            request_hash=digest,
            now=now,
            work=lambda: work(name),
        )

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert first_claimed.wait(10)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second claim must wait for the first transaction"
    release_first.set()
    first.join(10)
    second.join(10)
    for session in sessions_by_name.values():
        session.close()
    engine.dispose()
    assert results["first"][1] is False
    assert results["second"] == (results["first"][0], True)
    with db_session(settings) as session:
        assert session.scalars(select(Post.message)).all() == ["first"]


def add_posts_in(session: Any, account: Account, message: str) -> str:
    now = datetime.now(UTC)
    post = Post(
        client_id=account.client_id,
        credential_id=account.credential_id,
        target=account.page_id,
        message=message,
        publish_at=now,
        due_at=now,
    )
    session.add(post)
    session.flush()
    return post.id


# --- batch -------------------------------------------------------------------------------------


def test_batch_of_1000_in_input_order(api: TestClient, alice: Account, settings: Settings) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    items = [
        alice.body(message=f"post {i}", publish_at=(start + timedelta(minutes=i)).isoformat())
        for i in range(1000)
    ]
    response = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    assert response.status_code == 201, response.text[:500]
    posts = response.json()["posts"]
    assert [p["message"] for p in posts] == [f"post {i}" for i in range(1000)]
    assert len({p["id"] for p in posts}) == 1000
    assert all(set(p) == POST_KEYS and p["status"] == "scheduled" for p in posts)
    assert count_posts(settings) == 1000
    # The answer is what was stored.
    for sample in (posts[0], posts[517], posts[999]):
        assert api.get(f"/v1/posts/{sample['id']}", headers=alice.headers).json() == sample
    stored = load(settings, posts[517]["id"])
    assert stored.due_at == stored.publish_at == start + timedelta(minutes=517)


def test_batch_of_1001_is_refused(api: TestClient, alice: Account, settings: Settings) -> None:
    items = [alice.body() for _ in range(1001)]
    response = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    assert_problem(response, 422, "invalid_request", "posts")
    assert count_posts(settings) == 0


def test_one_bad_item_refuses_the_batch(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    items = [alice.body(message=f"post {i}") for i in range(40)]
    items[17]["publish_at"] = _minutes_ago(60)
    response = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    problem = assert_problem(response, 422, "invalid_request")
    assert [e["field"] for e in problem["errors"]] == ["posts[17].publish_at"]
    assert count_posts(settings) == 0


def test_batch_reports_every_bad_item(api: TestClient, alice: Account, settings: Settings) -> None:
    items = [alice.body(message=f"post {i}") for i in range(30)]
    items[3]["target"] = "not-her-page"
    items[17]["publish_at"] = _minutes_ago(60)
    items[20]["credential_id"] = "cred_AAAAAAAAAAAAAAAAAAAA"
    del items[25]["message"]
    response = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    fields = {e["field"] for e in assert_problem(response, 422, "invalid_request")["errors"]}
    assert fields == {
        "posts[3].target",
        "posts[17].publish_at",
        "posts[20].credential_id",
        "posts[25].message",
    }
    # Malformed items (schema errors) are all named too.
    items = [alice.body() for _ in range(30)]
    items[2]["link"] = "ftp://x"
    items[29]["publish_at"] = "2030-01-01T00:00:00"
    response = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    fields = {e["field"] for e in assert_problem(response, 422, "invalid_request")["errors"]}
    assert fields == {"posts[2].link", "posts[29].publish_at"}
    assert count_posts(settings) == 0


def test_batch_with_inline_tokens(
    api: TestClient, alice: Account, graph: SandboxClient, settings: Settings
) -> None:
    user = graph.mint_user(pages=1)
    inline = {"access_token": user["access_token"], "target": user["pages"][0]["id"]}
    items = [alice.body(), {**inline, "message": "a"}, {**inline, "message": "b"}]
    response = api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers)
    assert response.status_code == 201, response.text
    posts = response.json()["posts"]
    assert posts[0]["credential_id"] == alice.credential_id
    assert posts[1]["credential_id"] == posts[2]["credential_id"] != alice.credential_id
    bad = [alice.body(), {"access_token": "EAAnotatoken0000000", "target": "1", "message": "x"}]
    response = api.post("/v1/posts/batch", json={"posts": bad}, headers=alice.headers)
    assert_problem(response, 422, "invalid_token", "posts[1].access_token")
    assert count_posts(settings) == 3


def test_batch_idempotency(api: TestClient, alice: Account, settings: Settings) -> None:
    headers = {**alice.headers, "Idempotency-Key": "batch-1"}
    body = {"posts": [alice.body(message=str(i)) for i in range(50)]}
    first = api.post("/v1/posts/batch", json=body, headers=headers)
    second = api.post("/v1/posts/batch", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert count_posts(settings) == 50
    body["posts"][49]["message"] = "changed"
    assert_problem(api.post("/v1/posts/batch", json=body, headers=headers), 409, "conflict")
    assert count_posts(settings) == 50


def test_existing_posts_untouched_by_a_refused_batch(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    add_posts(settings, alice, 3)
    items = [alice.body(), alice.body(link="nope")]
    assert_problem(
        api.post("/v1/posts/batch", json={"posts": items}, headers=alice.headers),
        422,
        "invalid_request",
    )
    assert count_posts(settings) == 3


# --- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_documents_the_posts_routes(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    paths = doc["paths"]
    create = paths["/v1/posts"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PostCreate"
    )
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PostOut"
    )
    assert {"401", "409", "422", "503"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert paths["/v1/posts/batch"]["post"]["responses"]["201"]
    assert {"get", "post"} <= set(paths["/v1/posts"])
    assert {"get", "patch", "delete"} <= set(paths["/v1/posts/{post_id}"])
    assert "404" in paths["/v1/posts/{post_id}"]["patch"]["responses"]
    assert "409" in paths["/v1/posts/{post_id}/retry"]["post"]["responses"]
    assert "get" in paths["/v1/posts/{post_id}/attempts"]
    schemas = doc["components"]["schemas"]
    assert set(schemas["PostOut"]["properties"]) == POST_KEYS
    assert {"PostBatchCreate", "PostUpdate", "PostList", "AttemptList"} <= set(schemas)

"""Reading and changing posts over HTTP: lists, PATCH, DELETE, retry, attempts, isolation.

Real PostgreSQL; states a worker would set are written directly into the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from offpost.graph.sandbox import RunningSandbox
from offpost.models import Attempt, AttemptOutcome, PostStatus
from offpost.models.post import DEFAULT_MAX_ATTEMPTS
from offpost.settings import Settings
from tests.integration.api_support import api_client, make_settings
from tests.integration.posts_support import (
    Account,
    add_posts,
    assert_problem,
    db_session,
    load,
    make_account,
    set_fields,
)
from tests.integration.sandbox_support import SandboxClient, sandbox_client

ERROR = {"code": 368, "subcode": 1390008, "message": "blocked", "fbtrace_id": "AbC"}


@pytest.fixture
def graph(sandbox_server: RunningSandbox) -> Iterator[SandboxClient]:
    with sandbox_client(sandbox_server) as client:
        yield client


@pytest.fixture
def settings(postgres_url: str, sandbox_server: RunningSandbox, redis_url: str) -> Settings:
    return make_settings(postgres_url, sandbox_server, redis_url)


@pytest.fixture
def api(settings: Settings, graph: SandboxClient) -> Iterator[TestClient]:
    with api_client(settings) as client:
        yield client


@pytest.fixture
def alice(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "alice")


def _create(api: TestClient, account: Account, **fields: object) -> dict[str, object]:
    response = api.post("/v1/posts", json=account.body(**fields), headers=account.headers)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


# --- isolation ---------------------------------------------------------------------------------


def test_another_clients_post_is_404_everywhere(
    api: TestClient, alice: Account, settings: Settings, graph: SandboxClient
) -> None:
    post_id = str(_create(api, alice)["id"])
    set_fields(settings, post_id, status=PostStatus.FAILED)
    bob = make_account(api, settings, graph, "bob")
    h = bob.headers
    assert_problem(api.get(f"/v1/posts/{post_id}", headers=h), 404, "not_found")
    assert_problem(api.get(f"/v1/posts/{post_id}/attempts", headers=h), 404, "not_found")
    assert_problem(
        api.patch(f"/v1/posts/{post_id}", json={"message": "mine"}, headers=h), 404, "not_found"
    )
    assert_problem(api.delete(f"/v1/posts/{post_id}", headers=h), 404, "not_found")
    assert_problem(api.post(f"/v1/posts/{post_id}/retry", headers=h), 404, "not_found")
    assert api.get("/v1/posts", headers=h).json() == {"posts": [], "next_cursor": None}
    # Untouched for its owner.
    post = api.get(f"/v1/posts/{post_id}", headers=alice.headers).json()
    assert (post["status"], post["message"]) == ("failed", "hello")


@pytest.mark.parametrize(
    "post_id", ["post_AAAAAAAAAAAAAAAAAAAA", "nope", "cred_AAAAAAAAAAAAAAAAAAAA"]
)
def test_unknown_ids_are_404(api: TestClient, alice: Account, post_id: str) -> None:
    assert_problem(api.get(f"/v1/posts/{post_id}", headers=alice.headers), 404, "not_found")
    assert_problem(api.delete(f"/v1/posts/{post_id}", headers=alice.headers), 404, "not_found")


def test_no_key_is_401(api: TestClient) -> None:
    assert_problem(api.get("/v1/posts"), 401, "unauthorized")
    assert_problem(api.post("/v1/posts", json={}), 401, "unauthorized")


# --- listing -----------------------------------------------------------------------------------


def test_pages_walk_every_post_once_newest_first(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    ids = []
    for i in range(23):
        # Pairs share created_at: the id breaks the tie, and no post is lost or repeated.
        ids += add_posts(settings, alice, 1, created_at=base + timedelta(seconds=i // 2))
    ids += [
        str(p["id"])
        for p in api.post(
            "/v1/posts/batch",
            json={"posts": [alice.body() for _ in range(9)]},
            headers=alice.headers,
        ).json()["posts"]
    ]
    seen: list[dict[str, str]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/posts", params=params, headers=alice.headers).json()
        assert len(page["posts"]) <= 7
        seen += page["posts"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert sorted(p["id"] for p in seen) == sorted(ids)
    assert len(seen) == 32
    keys = [(p["created_at"], p["id"]) for p in seen]
    stored = {p_id: load(settings, p_id).created_at for p_id in ids}
    order = [(stored[p["id"]], p["id"]) for p in seen]
    assert order == sorted(order, reverse=True)
    assert keys  # the batch's last item is the newest
    assert seen[0]["id"] == ids[-1]


def test_filters_combine_with_pagination(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    failed = add_posts(settings, alice, 6, status=PostStatus.FAILED)
    add_posts(settings, alice, 5, status=PostStatus.SCHEDULED)
    add_posts(settings, alice, 4, status=PostStatus.FAILED, target="other-page")
    seen: list[str] = []
    params: dict[str, str | int] = {"status": "failed", "target": alice.page_id, "limit": 4}
    while True:
        page = api.get("/v1/posts", params=params, headers=alice.headers).json()
        assert all(p["status"] == "failed" and p["target"] == alice.page_id for p in page["posts"])
        seen += [p["id"] for p in page["posts"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(failed)
    assert (
        api.get("/v1/posts", params={"schedule_id": "sched_x"}, headers=alice.headers).json()[
            "posts"
        ]
        == []
    )
    everything = api.get("/v1/posts", params={"limit": 500}, headers=alice.headers).json()
    assert len(everything["posts"]) == 15
    assert everything["next_cursor"] is None
    default = api.get("/v1/posts", headers=alice.headers).json()
    assert len(default["posts"]) == 15


def test_default_limit_is_50(api: TestClient, alice: Account, settings: Settings) -> None:
    add_posts(settings, alice, 51)
    page = api.get("/v1/posts", headers=alice.headers).json()
    assert len(page["posts"]) == 50
    assert page["next_cursor"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_422(
    api: TestClient, alice: Account, params: dict[str, object], field: str
) -> None:
    response = api.get("/v1/posts", params=params, headers=alice.headers)
    assert_problem(response, 422, "invalid_request", field)


def test_a_tampered_cursor_is_422(api: TestClient, alice: Account, settings: Settings) -> None:
    add_posts(settings, alice, 3)
    cursor = api.get("/v1/posts", params={"limit": 1}, headers=alice.headers).json()["next_cursor"]
    assert api.get("/v1/posts", params={"cursor": cursor}, headers=alice.headers).status_code == 200
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    response = api.get("/v1/posts", params={"cursor": flipped}, headers=alice.headers)
    assert_problem(response, 422, "invalid_request", "cursor")


# --- PATCH -------------------------------------------------------------------------------------


def test_patch_a_scheduled_post_moves_due_at(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    post = _create(api, alice, link="https://example.com/a")
    woken: list[datetime] = []
    api.app.state.wake_dispatcher = woken.append  # type: ignore[attr-defined]
    later = datetime(2031, 1, 1, 9, 0, tzinfo=UTC)
    response = api.patch(
        f"/v1/posts/{post['id']}",
        json={"message": "new text", "publish_at": "2031-01-01T10:00:00+01:00"},
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["message"] == "new text"
    assert changed["link"] == "https://example.com/a"
    assert changed["publish_at"] == "2031-01-01T09:00:00Z"
    stored = load(settings, str(post["id"]))
    assert stored.publish_at == stored.due_at == later
    assert woken == [later]
    assert api.get(f"/v1/posts/{post['id']}", headers=alice.headers).json() == changed


def test_patch_may_clear_a_field_while_content_remains(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    post = _create(api, alice, link="https://example.com/a")
    response = api.patch(f"/v1/posts/{post['id']}", json={"message": None}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["message"] is None
    # Now the link is the only content: clearing it too would leave nothing.
    gone = api.patch(f"/v1/posts/{post['id']}", json={"link": None}, headers=alice.headers)
    assert_problem(gone, 422, "invalid_request", "link")
    everything = api.patch(
        f"/v1/posts/{post['id']}",
        json={"message": None, "link": None, "photo_url": None},
        headers=alice.headers,
    )
    assert_problem(everything, 422, "invalid_request", "message")
    assert load(settings, str(post["id"])).link == "https://example.com/a"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"publish_at": "2030-01-01T09:00:00"}, "publish_at"),
        ({"publish_at": None}, "publish_at"),
        ({"publish_at": "PAST"}, "publish_at"),
        ({"link": "ftp://x"}, "link"),
        ({"message": "x" * 63_207}, "message"),
        ({"target": "123"}, "target"),
        ({}, "body"),
    ],
)
def test_patch_validates_like_create(
    api: TestClient, alice: Account, settings: Settings, body: dict[str, object], field: str
) -> None:
    post = _create(api, alice)
    if body.get("publish_at") == "PAST":
        body = {"publish_at": (datetime.now(UTC) - timedelta(minutes=6)).isoformat()}
    response = api.patch(f"/v1/posts/{post['id']}", json=body, headers=alice.headers)
    assert_problem(response, 422, "invalid_request", field)
    assert load(settings, str(post["id"])).message == "hello"


@pytest.mark.parametrize("status", [PostStatus.FAILED, PostStatus.NEEDS_REAUTH])
def test_patch_failed_and_needs_reauth_posts(
    api: TestClient, alice: Account, settings: Settings, status: PostStatus
) -> None:
    post_id = str(_create(api, alice)["id"])
    old_due = datetime(2029, 1, 1, tzinfo=UTC)
    set_fields(settings, post_id, status=status, due_at=old_due)
    later = datetime(2031, 1, 1, tzinfo=UTC)
    response = api.patch(
        f"/v1/posts/{post_id}",
        json={"message": "fixed", "publish_at": later.isoformat()},
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == status.value
    stored = load(settings, post_id)
    assert stored.message == "fixed"
    assert stored.publish_at == later
    # A failed post becomes due again only through retry; needs_reauth follows publish_at.
    assert stored.due_at == (old_due if status is PostStatus.FAILED else later)


@pytest.mark.parametrize(
    "status",
    [PostStatus.QUEUED, PostStatus.PUBLISHING, PostStatus.PUBLISHED, PostStatus.CANCELED],
)
def test_patch_is_409_once_the_post_left_the_editable_states(
    api: TestClient, alice: Account, settings: Settings, status: PostStatus
) -> None:
    post_id = str(_create(api, alice)["id"])
    set_fields(settings, post_id, status=status)
    response = api.patch(f"/v1/posts/{post_id}", json={"message": "late"}, headers=alice.headers)
    assert_problem(response, 409, "conflict")
    assert load(settings, post_id).message == "hello"


# --- DELETE ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [PostStatus.SCHEDULED, PostStatus.QUEUED, PostStatus.FAILED, PostStatus.NEEDS_REAUTH],
)
def test_delete_cancels(
    api: TestClient, alice: Account, settings: Settings, status: PostStatus
) -> None:
    post_id = str(_create(api, alice)["id"])
    set_fields(settings, post_id, status=status)
    response = api.delete(f"/v1/posts/{post_id}", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert load(settings, post_id).status is PostStatus.CANCELED
    again = api.delete(f"/v1/posts/{post_id}", headers=alice.headers)
    assert again.status_code == 200
    assert again.json() == response.json()


@pytest.mark.parametrize("status", [PostStatus.PUBLISHING, PostStatus.PUBLISHED])
def test_delete_is_409_once_publishing(
    api: TestClient, alice: Account, settings: Settings, status: PostStatus
) -> None:
    post_id = str(_create(api, alice)["id"])
    set_fields(settings, post_id, status=status)
    assert_problem(api.delete(f"/v1/posts/{post_id}", headers=alice.headers), 409, "conflict")
    assert load(settings, post_id).status is status


# --- while an earlier attempt may have published the post --------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (PostStatus.SCHEDULED, True),
        (PostStatus.QUEUED, True),
        (PostStatus.FAILED, False),
        (PostStatus.NEEDS_REAUTH, False),
    ],
)
def test_edit_and_cancel_are_409_outcome_unknown_while_the_post_may_be_live(
    api: TestClient, alice: Account, settings: Settings, status: PostStatus, retry_after: bool
) -> None:
    post_id = str(_create(api, alice)["id"])
    due = datetime.now(UTC) + timedelta(seconds=30)
    set_fields(
        settings,
        post_id,
        status=status,
        due_at=due,
        reconcile_since=datetime.now(UTC) - timedelta(seconds=5),
        attempts=1,
    )
    cancel = api.delete(f"/v1/posts/{post_id}", headers=alice.headers)
    body = assert_problem(cancel, 409, "outcome_unknown")
    assert "may have published it" in body["detail"]
    assert ("Retry-After" in cancel.headers) is retry_after
    if retry_after:
        # The next attempt, which reads the Page first, is due in about 30 s.
        assert 30 <= int(cancel.headers["Retry-After"]) <= 40
    if status is not PostStatus.QUEUED:  # a queued post is not editable anyway
        edit = api.patch(f"/v1/posts/{post_id}", json={"message": "new"}, headers=alice.headers)
        assert_problem(edit, 409, "outcome_unknown")
    post = load(settings, post_id)
    assert (post.status, post.message) == (status, "hello")


def test_once_the_outcome_is_known_the_post_can_be_edited_and_canceled_again(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    post_id = str(_create(api, alice)["id"])
    set_fields(settings, post_id, reconcile_since=datetime.now(UTC))
    assert_problem(
        api.delete(f"/v1/posts/{post_id}", headers=alice.headers), 409, "outcome_unknown"
    )
    set_fields(settings, post_id, reconcile_since=None)  # a worker read the Page: nothing there
    edit = api.patch(f"/v1/posts/{post_id}", json={"message": "new"}, headers=alice.headers)
    assert edit.status_code == 200, edit.text
    assert api.delete(f"/v1/posts/{post_id}", headers=alice.headers).json()["status"] == "canceled"


# --- retry -------------------------------------------------------------------------------------


def test_retry_a_failed_post(api: TestClient, alice: Account, settings: Settings) -> None:
    post_id = str(_create(api, alice, publish_at="2031-01-01T00:00:00Z")["id"])
    set_fields(
        settings, post_id, status=PostStatus.FAILED, attempts=5, max_attempts=5, last_error=ERROR
    )
    woken: list[datetime] = []
    api.app.state.wake_dispatcher = woken.append  # type: ignore[attr-defined]
    before = datetime.now(UTC)
    response = api.post(f"/v1/posts/{post_id}/retry", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["last_error"] == ERROR
    assert body["attempts"] == 5
    stored = load(settings, post_id)
    assert before - timedelta(seconds=1) <= stored.due_at <= datetime.now(UTC)
    assert stored.publish_at == datetime(2031, 1, 1, tzinfo=UTC)
    assert stored.max_attempts == 5 + DEFAULT_MAX_ATTEMPTS
    assert woken == [stored.due_at]


@pytest.mark.parametrize(
    "status",
    [
        PostStatus.SCHEDULED,
        PostStatus.QUEUED,
        PostStatus.PUBLISHING,
        PostStatus.PUBLISHED,
        PostStatus.NEEDS_REAUTH,
        PostStatus.CANCELED,
    ],
)
def test_retry_is_409_unless_failed(
    api: TestClient, alice: Account, settings: Settings, status: PostStatus
) -> None:
    post_id = str(_create(api, alice)["id"])
    set_fields(settings, post_id, status=status)
    assert_problem(api.post(f"/v1/posts/{post_id}/retry", headers=alice.headers), 409, "conflict")
    assert load(settings, post_id).status is status


# --- attempts ----------------------------------------------------------------------------------


def test_attempts_in_order_with_their_errors(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    post_id = str(_create(api, alice)["id"])
    t0 = datetime(2030, 5, 1, 9, 0, tzinfo=UTC)
    with db_session(settings) as session:
        session.add_all(
            [
                Attempt(post_id=post_id, number=3, started_at=t0 + timedelta(minutes=10)),
                Attempt(
                    post_id=post_id,
                    number=1,
                    started_at=t0,
                    finished_at=t0 + timedelta(seconds=2),
                    outcome=AttemptOutcome.RETRY,
                    http_status=500,
                    error_code="2",
                    error_subcode=None,
                    error_message="Service temporarily unavailable",
                    fbtrace_id="Trace1",
                ),
                Attempt(
                    post_id=post_id,
                    number=2,
                    started_at=t0 + timedelta(minutes=1),
                    finished_at=t0 + timedelta(minutes=1, seconds=30),
                    outcome=AttemptOutcome.RETRY,
                    error_code="timeout",
                    error_message="no reply within 30 s",
                ),
            ]
        )
        session.commit()
    response = api.get(f"/v1/posts/{post_id}/attempts", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "attempts": [
            {
                "number": 1,
                "started_at": "2030-05-01T09:00:00Z",
                "finished_at": "2030-05-01T09:00:02Z",
                "outcome": "retry",
                "error": {
                    "code": 2,
                    "subcode": None,
                    "message": "Service temporarily unavailable",
                    "fbtrace_id": "Trace1",
                },
            },
            {
                "number": 2,
                "started_at": "2030-05-01T09:01:00Z",
                "finished_at": "2030-05-01T09:01:30Z",
                "outcome": "retry",
                "error": {
                    "code": "timeout",
                    "subcode": None,
                    "message": "no reply within 30 s",
                    "fbtrace_id": None,
                },
            },
            {
                "number": 3,
                "started_at": "2030-05-01T09:10:00Z",
                "finished_at": None,
                "outcome": None,
                "error": None,
            },
        ]
    }
    other = str(_create(api, alice)["id"])
    assert api.get(f"/v1/posts/{other}/attempts", headers=alice.headers).json() == {"attempts": []}

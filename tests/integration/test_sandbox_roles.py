"""Sandbox Page roles over HTTP: tasks per user and Page, publishing without CREATE_CONTENT,
a role taken away (its Page tokens die with 190/492) and given back."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.sandbox_support import SandboxClient, error_of

FULL_CONTROL = ["ANALYZE", "ADVERTISE", "MODERATE", "CREATE_CONTENT", "MANAGE"]
ROLE_LOST_MESSAGE = (
    "The user must be an administrator, editor, or moderator of the page in order to "
    "impersonate it. If the page business requires Two Factor Authentication, the user "
    "also needs to enable Two Factor Authentication."
)
PUBLISH_MESSAGE = (
    "(#200) If posting to a page, requires both pages_read_engagement and "
    "pages_manage_posts as an admin with sufficient administrative permission"
)


def _signed_in(graph: SandboxClient, pages: int = 1, **body: Any) -> tuple[dict[str, Any], str]:
    """A fresh user and their long-lived user token."""
    user = graph.mint_user(pages=pages, **body)
    return user, graph.long_lived(user["access_token"])


def _tokens_by_page(graph: SandboxClient, user_token: str) -> dict[str, str]:
    return {entry["id"]: entry["access_token"] for entry in graph.accounts(user_token)}


def _assert_role_lost(error: dict[str, Any]) -> None:
    assert (error["code"], error["error_subcode"], error["type"]) == (190, 492, "OAuthException")
    assert error["message"] == ROLE_LOST_MESSAGE


def _assert_publish_refused(response: httpx.Response) -> None:
    assert response.status_code == 403
    error = error_of(response)
    assert (error["code"], error["type"], error["message"]) == (
        200,
        "OAuthException",
        PUBLISH_MESSAGE,
    )
    assert "error_subcode" not in error


# --- tasks ------------------------------------------------------------------------------


def test_accounts_list_each_users_own_tasks_per_page(graph: SandboxClient) -> None:
    owner, owner_token = _signed_in(graph, pages=1)
    analyst, analyst_token = _signed_in(graph, pages=2, page_tasks=["MODERATE", "ANALYZE"])
    assert [page["tasks"] for page in owner["pages"]] == [FULL_CONTROL]
    # Stored in Graph's order, whatever order they were given in.
    assert [page["tasks"] for page in analyst["pages"]] == [["ANALYZE", "MODERATE"]] * 2

    assert [entry["tasks"] for entry in graph.accounts(owner_token)] == [FULL_CONTROL]
    first, second = (page["id"] for page in analyst["pages"])
    changed = graph.set_tasks(analyst["user_id"], second, ["CREATE_CONTENT", "ANALYZE"])
    assert changed == {
        "user_id": analyst["user_id"],
        "page_id": second,
        "tasks": ["ANALYZE", "CREATE_CONTENT"],
    }
    assert {entry["id"]: entry["tasks"] for entry in graph.accounts(analyst_token)} == {
        first: ["ANALYZE", "MODERATE"],
        second: ["ANALYZE", "CREATE_CONTENT"],
    }


def test_publishing_needs_the_create_content_task(graph: SandboxClient) -> None:
    user, user_token = _signed_in(graph, page_tasks=["ANALYZE", "MODERATE"])
    page_id = user["pages"][0]["id"]
    page_token = _tokens_by_page(graph, user_token)[page_id]

    _assert_publish_refused(graph.post(f"/{page_id}/feed", page_token, message="hello"))
    _assert_publish_refused(
        graph.post(f"/{page_id}/photos", page_token, url="https://example.com/a.jpg")
    )
    assert graph.posts(page_id) == []
    # The token itself is sound: it reads, and debug_token calls it valid.
    assert graph.get(f"/{page_id}/feed", page_token).status_code == 200
    assert graph.debug(page_token).json()["data"]["is_valid"] is True

    graph.set_tasks(user["user_id"], page_id, ["ANALYZE", "MODERATE", "CREATE_CONTENT"])
    assert graph.post(f"/{page_id}/feed", page_token, message="hello").status_code == 200
    assert [post["message"] for post in graph.posts(page_id)] == ["hello"]


def test_taking_create_content_away_stops_the_same_token_publishing(
    graph: SandboxClient,
) -> None:
    page_id, page_token, user = graph.publisher()
    assert graph.post(f"/{page_id}/feed", page_token, message="before").status_code == 200
    graph.set_tasks(user["user_id"], page_id, ["ANALYZE"])
    _assert_publish_refused(graph.post(f"/{page_id}/feed", page_token, message="after"))
    assert [post["message"] for post in graph.posts(page_id)] == ["before"]


def test_task_routes_refuse_unknown_tasks_pages_and_roles(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    other_page = graph.mint_user(pages=1)["pages"][0]["id"]

    def status(method: str, path: str, body: dict[str, Any] | None = None) -> int:
        return graph.http.request(method, f"/_sandbox{path}", json=body).status_code

    tasks_path = f"/users/{user['user_id']}/pages/{page_id}/tasks"
    assert status("POST", "/users", {"page_tasks": ["CREATE-CONTENT"]}) == 422
    assert status("POST", "/users", {"page_tasks": []}) == 422
    assert status("PUT", tasks_path, {"tasks": ["POST"]}) == 422
    assert status("PUT", tasks_path, {"tasks": []}) == 422
    assert status("PUT", f"/users/1/pages/{page_id}/tasks", {"tasks": ["MANAGE"]}) == 404
    assert status("PUT", f"/users/{user['user_id']}/pages/1/tasks", {"tasks": ["MANAGE"]}) == 404
    no_role = f"/users/{user['user_id']}/pages/{other_page}"
    assert status("PUT", f"{no_role}/tasks", {"tasks": ["MANAGE"]}) == 409
    assert status("DELETE", no_role) == 409
    # Nothing changed on the way.
    assert graph.accounts(user["access_token"])[0]["tasks"] == FULL_CONTROL


# --- a role taken away and given back -----------------------------------------------------


def test_removing_the_role_kills_that_pages_tokens_only(graph: SandboxClient) -> None:
    user, long_token = _signed_in(graph, pages=2)
    lost, kept = (page["id"] for page in user["pages"])
    short_page_token = graph.page_token(user["access_token"], lost)
    page_tokens = _tokens_by_page(graph, long_token)

    result = graph.remove_role(user["user_id"], lost)
    assert result == {
        "user_id": user["user_id"],
        "page_id": lost,
        "subcode": 492,
        "invalidated_tokens": 2,
    }

    for token in (page_tokens[lost], short_page_token):
        _assert_role_lost(error_of(graph.get(f"/{lost}", token)))
        posted = graph.post(f"/{lost}/feed", token, message="after removal")
        assert posted.status_code == 400
        _assert_role_lost(error_of(posted))
        data = graph.debug(token).json()["data"]
        assert data["is_valid"] is False
        assert data["error"] == {"code": 190, "subcode": 492, "message": ROLE_LOST_MESSAGE}
    assert graph.posts(lost) == []

    # The Page left the user's list and the user token cannot derive its token again.
    assert [entry["id"] for entry in graph.accounts(long_token)] == [kept]
    assert "access_token" not in graph.get(f"/{lost}", long_token, fields="access_token").json()
    user_data = graph.debug(long_token).json()["data"]
    assert user_data["is_valid"] is True
    assert {"scope": "pages_show_list", "target_ids": [kept]} in user_data["granular_scopes"]

    # The user's session and their other Page are untouched.
    assert graph.get("/me", long_token).status_code == 200
    assert graph.accounts(long_token)[0]["access_token"] == page_tokens[kept]
    assert graph.post(f"/{kept}/feed", page_tokens[kept], message="still here").status_code == 200


def test_giving_the_role_back_derives_a_new_working_token(graph: SandboxClient) -> None:
    user, long_token = _signed_in(graph, pages=1)
    page_id = user["pages"][0]["id"]
    old_token = _tokens_by_page(graph, long_token)[page_id]
    graph.remove_role(user["user_id"], page_id)

    restored = graph.restore_role(user["user_id"], page_id)
    assert restored == {"user_id": user["user_id"], "page_id": page_id, "tasks": FULL_CONTROL}
    [entry] = graph.accounts(long_token)
    assert (entry["id"], entry["tasks"]) == (page_id, FULL_CONTROL)
    new_token = entry["access_token"]
    assert new_token != old_token
    assert graph.post(f"/{page_id}/feed", new_token, message="back").status_code == 200
    assert graph.debug(new_token).json()["data"]["is_valid"] is True
    # The removal's victims stay dead, however the Page token is asked for.
    _assert_role_lost(error_of(graph.get(f"/{page_id}", old_token)))
    assert graph.page_token(long_token, page_id) == new_token


def test_a_role_given_back_with_fewer_tasks_cannot_publish(graph: SandboxClient) -> None:
    user, long_token = _signed_in(graph, pages=1)
    page_id = user["pages"][0]["id"]
    graph.remove_role(user["user_id"], page_id)
    graph.restore_role(user["user_id"], page_id, ["ANALYZE"])
    [entry] = graph.accounts(long_token)
    assert entry["tasks"] == ["ANALYZE"]
    _assert_publish_refused(graph.post(f"/{page_id}/feed", entry["access_token"], message="x"))


def test_a_shared_page_keeps_the_other_persons_token(graph: SandboxClient) -> None:
    owner, owner_token = _signed_in(graph, pages=1)
    page_id = owner["pages"][0]["id"]
    editor, editor_token = _signed_in(graph, pages=0)
    assert graph.accounts(editor_token) == []
    graph.restore_role(editor["user_id"], page_id, ["CREATE_CONTENT"])
    editor_page_token = _tokens_by_page(graph, editor_token)[page_id]
    owner_page_token = _tokens_by_page(graph, owner_token)[page_id]
    assert graph.post(f"/{page_id}/feed", editor_page_token, message="one").status_code == 200

    graph.remove_role(editor["user_id"], page_id)
    _assert_role_lost(error_of(graph.post(f"/{page_id}/feed", editor_page_token, message="two")))
    assert graph.post(f"/{page_id}/feed", owner_page_token, message="three").status_code == 200
    assert [post["message"] for post in graph.posts(page_id)] == ["one", "three"]

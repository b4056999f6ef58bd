"""Sandbox Pages and posts over HTTP: accounts paging, publishing rules, reading feeds, versions."""

from __future__ import annotations

import time

import pytest

from tests.integration.sandbox_support import SandboxClient, error_of


def test_accounts_pages_with_cursors_and_next_links(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=5)
    token = graph.long_lived(user["access_token"])
    first = graph.get("/me/accounts", token, limit=2).json()
    entry = first["data"][0]
    assert set(entry) == {"access_token", "category", "category_list", "name", "id", "tasks"}
    assert "CREATE_CONTENT" in entry["tasks"]
    assert first["paging"]["cursors"]["after"]

    seen = [page["id"] for page in first["data"]]
    next_url = first["paging"].get("next")
    while next_url:
        body = graph.http.get(next_url).json()
        seen += [page["id"] for page in body["data"]]
        next_url = body["paging"].get("next")
    assert seen == [page["id"] for page in user["pages"]]

    by_user_id = graph.get(f"/{user['user_id']}/accounts", token, fields="name", limit=10).json()
    assert [set(page) for page in by_user_id["data"]] == [{"name", "id"}] * 5
    assert "next" not in by_user_id["paging"]


def test_accounts_requires_pages_show_list(graph: SandboxClient) -> None:
    token = graph.mint_user(scopes=["public_profile", "pages_manage_posts"])["access_token"]
    response = graph.get("/me/accounts", token)
    assert response.status_code == 403
    assert error_of(response)["code"] == 200


def test_page_token_publishes_and_feed_reads_newest_first(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    first = graph.post(f"/{page_id}/feed", page_token, message="first")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    post_id = first.json()["id"]
    assert post_id.startswith(f"{page_id}_")
    assert post_id.split("_")[1].isdigit()
    graph.advance(60)
    graph.post(f"/{page_id}/feed", page_token, message="second", link="https://example.com/a")

    listed = graph.posts(page_id)
    assert [(post["message"], post.get("link")) for post in listed] == [
        ("first", None),
        ("second", "https://example.com/a"),
    ]
    assert listed[0]["created_time"].endswith("+0000")

    feed = graph.get(f"/{page_id}/feed", page_token, fields="id,message,link,created_time")
    assert [post["message"] for post in feed.json()["data"]] == ["second", "first"]
    middle = int(time.time()) + 30
    older = graph.get(f"/{page_id}/posts", page_token, until=middle).json()["data"]
    newer = graph.get(f"/{page_id}/posts", page_token, since=middle).json()["data"]
    assert ([p["message"] for p in older], [p["message"] for p in newer]) == (["first"], ["second"])
    one = graph.get(f"/{page_id}/feed", page_token, limit=1).json()
    assert len(one["data"]) == 1
    assert "next" in one["paging"]


def test_photo_post(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    body = graph.post(
        f"/{page_id}/photos", page_token, url="https://example.com/cat.jpg", caption="cat"
    ).json()
    assert body["id"].isdigit()
    assert body["post_id"].startswith(f"{page_id}_")
    assert graph.posts(page_id)[0]["message"] == "cat"


def test_user_token_cannot_publish(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    response = graph.post(f"/{page_id}/feed", user["access_token"], message="as the user")
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == 200
    assert error["message"].startswith("(#200) ")
    assert graph.posts(page_id) == []


@pytest.mark.parametrize(
    "params",
    [{}, {"message": "x" * 63_207}, {"message": "hi", "scheduled_publish_time": "1"}],
    ids=["empty", "too-long", "scheduled-but-published"],
)
def test_publish_rejects_bad_parameters(graph: SandboxClient, params: dict[str, str]) -> None:
    page_id, page_token, _ = graph.publisher()
    response = graph.post(f"/{page_id}/feed", page_token, **params)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == 100
    assert error["message"].startswith("(#100) ")


def test_scheduled_post_window(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    now = int(time.time())
    too_soon = graph.post(
        f"/{page_id}/feed",
        page_token,
        message="soon",
        published="false",
        scheduled_publish_time=now + 300,
    )
    assert error_of(too_soon)["code"] == 100
    ok = graph.post(
        f"/{page_id}/feed",
        page_token,
        message="later",
        published="false",
        scheduled_publish_time=now + 3600,
    )
    assert ok.status_code == 200
    assert graph.posts(page_id)[0]["scheduled_publish_time"] == now + 3600
    assert graph.get(f"/{page_id}/feed", page_token).json()["data"] == []


def test_duplicate_detection_can_be_switched_off(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    assert graph.post(f"/{page_id}/feed", page_token, message="same").status_code == 200
    duplicate = graph.post(f"/{page_id}/feed", page_token, message="same")
    assert duplicate.status_code == 400
    assert error_of(duplicate)["code"] == 506
    assert error_of(duplicate)["message"] == "(#506) Duplicate status message"

    graph.settings(duplicate_detection=False)
    assert graph.post(f"/{page_id}/feed", page_token, message="same").status_code == 200
    assert len(graph.posts(page_id)) == 2


def test_json_body_and_read_after_write_fields(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    response = graph.http.post(
        f"/v26.0/{page_id}/feed",
        json={
            "message": "json body",
            "access_token": page_token,
            "fields": "id,permalink_url",
            **graph.proof(page_token),
        },
    )
    body = response.json()
    assert body["permalink_url"] == f"https://www.facebook.com/{body['id']}"


@pytest.mark.parametrize("prefix", ["/v3.1", "/v25.0", ""])
def test_any_version_prefix_and_the_version_header(graph: SandboxClient, prefix: str) -> None:
    user = graph.mint_user()
    token = user["access_token"]
    response = graph.http.get(f"{prefix}/me", params={"access_token": token, **graph.proof(token)})
    assert response.json() == {"id": user["user_id"], "name": user["name"]}
    assert response.headers["facebook-api-version"] == (prefix.lstrip("/") or "v26.0")


def test_unknown_objects_and_edges(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    unknown = error_of(graph.get("/999999", page_token))
    assert (unknown["code"], unknown["error_subcode"], unknown["type"]) == (
        100,
        33,
        "GraphMethodException",
    )
    assert error_of(graph.get(f"/{page_id}/nothing", page_token))["code"] == 100
    assert error_of(graph.get(f"/{page_id}/feed"))["code"] == 104
    assert error_of(graph.get("/me"))["code"] == 2500

"""Meta's own Python SDKs, pointed at the graph: if they disagree with it, the sandbox is wrong.

facebook-sdk 3.1.0 has no ``app_secret`` argument (that came later on its
master branch), so its calls pass ``appsecret_proof`` explicitly, as its
``**args`` allow; facebook-business adds its untimed proof to every call itself.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Iterator
from typing import Any

import facebook
import pytest
import requests
from facebook_business.adobjects.page import Page
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.exceptions import FacebookRequestError

from tests.integration.sandbox_support import SandboxClient

# --- facebook-sdk (mobolic) ---------------------------------------------------------------


@pytest.fixture
def graph_api(monkeypatch: pytest.MonkeyPatch, graph: SandboxClient) -> Iterator[Any]:
    """``facebook.GraphAPI`` for a token, sending to the sandbox; sessions closed afterwards."""
    monkeypatch.setattr(facebook, "FACEBOOK_GRAPH_URL", graph.url + "/")
    sessions: list[requests.Session] = []

    def make(token: str) -> facebook.GraphAPI:
        session = requests.Session()
        sessions.append(session)
        return facebook.GraphAPI(access_token=token, version="3.1", timeout=5, session=session)

    yield make
    for session in sessions:
        session.close()


def test_facebook_sdk_exchanges_debugs_lists_and_publishes(
    graph: SandboxClient, graph_api: Any
) -> None:
    user = graph.mint_user(pages=2)

    extended = graph_api(user["access_token"]).extend_access_token(graph.app_id, graph.app_secret)
    long_token = extended["access_token"]
    assert long_token != user["access_token"]
    assert 5_184_000 - 5 <= int(extended["expires_in"]) <= 5_184_000

    info = graph_api(long_token).debug_access_token(long_token, graph.app_id, graph.app_secret)[
        "data"
    ]
    assert info["is_valid"] is True
    assert info["type"] == "USER"
    assert info["user_id"] == user["user_id"]

    accounts = graph_api(long_token).get_connections("me", "accounts", **graph.proof(long_token))
    assert {page["id"] for page in accounts["data"]} == {p["id"] for p in user["pages"]}
    page = accounts["data"][0]

    page_token = page["access_token"]
    result = graph_api(page_token).put_object(
        page["id"], "feed", message="hello from facebook-sdk", **graph.proof(page_token)
    )
    assert result["id"].startswith(page["id"] + "_")
    assert [post["message"] for post in graph.posts(page["id"])] == ["hello from facebook-sdk"]


@pytest.mark.parametrize(
    ("proof", "message"),
    [
        ({"appsecret_proof": "0" * 64}, "Invalid appsecret_proof provided in the API argument"),
        ({}, "API calls from the server require an appsecret_proof argument"),
    ],
    ids=["forged", "missing"],
)
def test_facebook_sdk_sees_proof_errors(
    graph: SandboxClient, graph_api: Any, proof: dict[str, str], message: str
) -> None:
    token = graph.mint_user()["access_token"]
    with pytest.raises(facebook.GraphAPIError) as caught:
        graph_api(token).get_connections("me", "accounts", **proof)
    assert caught.value.code == 100
    assert caught.value.message == message
    assert caught.value.type == "GraphMethodException"


def test_facebook_sdk_sees_expired_token_after_clock_moves(
    graph: SandboxClient, graph_api: Any
) -> None:
    token = graph.mint_user()["access_token"]
    assert graph_api(token).get_object("me", **graph.proof(token))["id"]
    graph.advance(3601)
    with pytest.raises(facebook.GraphAPIError) as caught:
        graph_api(token).get_object("me", **graph.proof(token))
    assert caught.value.code == 190
    assert caught.value.result["error"]["error_subcode"] == 463
    assert caught.value.message.startswith("Error validating access token: Session has expired on")


# --- facebook-business ---------------------------------------------------------------------


@pytest.fixture
def ads_api(monkeypatch: pytest.MonkeyPatch, graph: SandboxClient) -> Iterator[Any]:
    """``FacebookAdsApi.init(...)`` against the sandbox; returns the default api."""
    monkeypatch.setattr(FacebookSession, "GRAPH", graph.url)
    monkeypatch.setattr(FacebookAdsApi, "_default_api", None)
    apis: list[FacebookAdsApi] = []

    def init(token: str, app_secret: str | None = None) -> FacebookAdsApi:
        FacebookAdsApi.init(
            graph.app_id,
            app_secret or graph.app_secret,
            token,
            api_version="v26.0",
            timeout=5,
            crash_log=False,
        )
        api = FacebookAdsApi.get_default_api()
        apis.append(api)
        return api

    yield init
    for api in apis:
        api._session.requests.close()


def test_facebook_business_exchanges_debugs_lists_and_publishes(
    graph: SandboxClient, ads_api: Any
) -> None:
    user = graph.mint_user(pages=1)
    short_token = user["access_token"]

    exchanged = ads_api(short_token).call(
        "GET",
        ("oauth", "access_token"),
        {
            "grant_type": "fb_exchange_token",
            "client_id": graph.app_id,
            "client_secret": graph.app_secret,
            "fb_exchange_token": short_token,
        },
    )
    long_token = exchanged.json()["access_token"]
    assert exchanged.headers()["facebook-api-version"] == "v26.0"

    debug = ads_api(graph.app_token).call("GET", ("debug_token",), {"input_token": long_token})
    assert debug.json()["data"]["is_valid"] is True

    accounts = ads_api(long_token).call("GET", ("me", "accounts")).json()
    page = accounts["data"][0]
    assert page["id"] == user["pages"][0]["id"]

    published = ads_api(page["access_token"]).call(
        "POST", (page["id"], "feed"), {"message": "hello from facebook-business"}
    )
    assert published.json()["id"].startswith(page["id"] + "_")
    assert graph.posts(page["id"])[0]["message"] == "hello from facebook-business"
    proofs = [call["proof"] for call in graph.control("GET", "/calls")["data"]]
    assert proofs == ["valid"] * 4


def test_facebook_business_sees_forged_proof(graph: SandboxClient, ads_api: Any) -> None:
    token = graph.mint_user()["access_token"]
    api = ads_api(token, app_secret="not-the-app-secret")
    with pytest.raises(FacebookRequestError) as caught:
        api.call("GET", ("me",))
    assert caught.value.api_error_code() == 100
    assert (
        caught.value.api_error_message() == "Invalid appsecret_proof provided in the API argument"
    )
    assert caught.value.http_status() == 400


def test_facebook_business_publishes_photos_and_videos(graph: SandboxClient, ads_api: Any) -> None:
    """Page.create_photo (unpublished), create_feed with attached_media (which the SDK sends
    as one JSON array), create_video by URL, and a multipart ``source`` through api.call.
    The example.com URLs are placeholders the sandbox does not fetch."""
    page_id, page_token, _ = graph.publisher()
    api = ads_api(page_token)
    page = Page(page_id, api=api)

    photo_ids = [
        page.create_photo(params={"url": f"https://example.com/{n}.jpg", "published": False})["id"]
        for n in range(2)
    ]
    post = page.create_feed(
        params={
            "message": "two photos from facebook-business",
            "attached_media": [{"media_fbid": photo_id} for photo_id in photo_ids],
        }
    )
    feed = graph.get(f"/{page_id}/feed", page_token, fields="id,attachments").json()["data"]
    assert feed[0]["id"] == post["id"]
    subs = feed[0]["attachments"]["data"][0]["subattachments"]["data"]
    assert [sub["target"]["id"] for sub in subs] == photo_ids

    by_url = page.create_video(
        params={"file_url": "https://example.com/clip.mp4", "title": "By URL"}
    )
    uploaded = api.call(
        "POST",
        (page_id, "videos"),
        {"title": "Uploaded"},
        files={"source": io.BytesIO(b"\x00\x00\x00\x18ftypmp42")},
    ).json()
    videos = graph.control("GET", f"/pages/{page_id}/videos")["data"]
    assert [(v["id"], v["title"], v["published"]) for v in videos] == [
        (by_url["id"], "By URL", True),
        (uploaded["id"], "Uploaded", True),
    ]
    assert videos[1]["file_size"] == 12
    calls = graph.control("GET", "/calls")["data"]
    assert {call["proof"] for call in calls if call["token_type"] == "PAGE"} == {"valid"}


def test_facebook_business_publishes_a_reel(graph: SandboxClient, ads_api: Any) -> None:
    """Page.create_video_reel starts and finishes a Reel; the SDK has no call for the
    upload host between the two, so its bytes go over plain HTTP, as Meta's guide shows."""
    page_id, page_token, _ = graph.publisher()
    api = ads_api(page_token)
    page = Page(page_id, api=api)
    started = page.create_video_reel(params={"upload_phase": "start"})
    video_id, upload_url = started["video_id"], started["upload_url"]
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)
    proof = hmac.new(graph.app_secret.encode(), page_token.encode(), hashlib.sha256).hexdigest()
    uploaded = graph.http.post(
        upload_url,
        params={"appsecret_proof": proof},
        headers={
            "Authorization": f"OAuth {page_token}",
            "offset": "0",
            "file_size": str(len(data)),
        },
        content=data,
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json() == {"success": True}
    # The SDK parses the answer as an AdVideo; the sandbox's state shows what it did.
    page.create_video_reel(
        params={
            "upload_phase": "finish",
            "video_id": video_id,
            "video_state": "PUBLISHED",
            "description": "a reel from facebook-business",
        }
    )
    [reel] = graph.control("GET", f"/pages/{page_id}/videos")["data"]
    assert (reel["id"], reel["kind"], reel["published"]) == (video_id, "reel", True)
    assert reel["bytes_received"] == len(data)
    assert reel["sha256"] == hashlib.sha256(data).hexdigest()
    listed = page.get_video_reels(fields=["id", "description"])
    assert [(r["id"], r["description"]) for r in listed] == [
        (video_id, "a reel from facebook-business")
    ]


def test_facebook_business_batch(graph: SandboxClient, ads_api: Any) -> None:
    """FacebookAdsApi.new_batch(): one ``POST /v26.0/`` whose items run with the session's
    token and proof; each callback gets its item's answer."""
    page_id, page_token, _ = graph.publisher()
    api = ads_api(page_token)
    batch = api.new_batch()
    done: list[Any] = []
    failed: list[Any] = []
    for text in ("first from a batch", "second from a batch"):
        batch.add("POST", (page_id, "feed"), {"message": text}, success=done.append)
    batch.add("GET", (page_id, "nothing"), failure=failed.append)
    assert batch.execute() is None

    assert [response.json()["id"] for response in done] == [
        post["id"] for post in graph.posts(page_id)
    ]
    assert [response.status() for response in failed] == [400]
    batch_calls = [call for call in graph.control("GET", "/calls")["data"] if call["batch_id"]]
    assert [call["batch_index"] for call in batch_calls] == [0, 1, 2, None]
    assert {call["proof"] for call in batch_calls} == {"valid"}

"""Posts and schedules with photos, a video or a Reel, over HTTP: real PostgreSQL, the
Graph sandbox over HTTP, uploads through ``POST /v1/media``.

Every rule a media post meets at creation, each refusal naming its field; the
uploads each post and schedule occurrence uses, recorded for retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from offpost.graph.sandbox import RunningSandbox
from offpost.models import MediaUse, Post
from offpost.settings import Settings
from tests.conftest import free_port
from tests.integration.api_support import api_client, make_settings
from tests.integration.media_files import mp4, png
from tests.integration.posts_support import (
    POST_KEYS,
    Account,
    assert_problem,
    db_session,
    load,
    make_account,
)
from tests.integration.sandbox_support import SandboxClient

LATER = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)


@pytest.fixture
def alice(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "alice")


def upload(api: TestClient, account: Account, data: bytes, name: str = "f") -> str:
    response = api.post(
        "/v1/media",
        files={"file": (name, data, "application/octet-stream")},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def uses(settings: Settings, **owner: str) -> list[str]:
    with db_session(settings) as session:
        column = MediaUse.post_id if "post_id" in owner else MediaUse.schedule_id
        value = owner.get("post_id") or owner.get("schedule_id")
        return sorted(session.scalars(select(MediaUse.media_id).where(column == value)))


def test_photos_by_url_and_upload_are_kept_and_answered(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    media_id = upload(api, alice, png(), "a.png")
    photos = [{"url": "https://cdn.example.com/1.jpg"}, {"media_id": media_id}]
    response = api.post("/v1/posts", json=alice.body(photos=photos), headers=alice.headers)
    assert response.status_code == 201, response.text
    post = response.json()
    assert set(post) == POST_KEYS
    assert post["photos"] == [
        {"url": "https://cdn.example.com/1.jpg", "media_id": None},
        {"url": None, "media_id": media_id},
    ]
    assert post["video"] is None
    assert post["reel"] is None
    stored = load(settings, post["id"])
    assert stored.media == {"photos": photos}
    assert stored.media_kind == "photos"
    assert uses(settings, post_id=post["id"]) == [media_id]
    # The upload is in use: it cannot be deleted while the post is pending.
    refused = api.delete(f"/v1/media/{media_id}", headers=alice.headers)
    assert_problem(refused, 409, "conflict")


def test_a_video_and_a_reel_carry_their_text(api: TestClient, alice: Account) -> None:
    video = {"url": "https://cdn.example.com/v.mp4", "title": "Launch", "description": "Watch"}
    response = api.post(
        "/v1/posts", json=alice.body(message=None, video=video), headers=alice.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["video"] == {**video, "media_id": None}
    reel = {"media_id": upload(api, alice, mp4(duration_ms=15_000), "r.mp4")}
    response = api.post(
        "/v1/posts", json=alice.body(message="our reel", reel=reel), headers=alice.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["reel"] == {
        "url": None,
        "media_id": reel["media_id"],
        "description": None,
    }


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"photo_url": "https://e.com/a.jpg", "photos": [{"url": "https://e.com/b.jpg"}]},
            "photos",
            "only one of photo_url, photos",
        ),
        (
            {"video": {"url": "https://e.com/v.mp4"}, "reel": {"url": "https://e.com/r.mp4"}},
            "reel",
            "only one of",
        ),
        (
            {
                "link": "https://e.com",
                "photos": [{"url": "https://e.com/1.jpg"}, {"url": "https://e.com/2.jpg"}],
            },
            "link",
            "cannot carry a link",
        ),
        (
            {"link": "https://e.com", "video": {"url": "https://e.com/v.mp4"}},
            "link",
            "cannot carry a link",
        ),
        (
            {"message": "text", "video": {"url": "https://e.com/v.mp4", "description": "twice"}},
            "video.description",
            "give the text once",
        ),
        (
            {"message": None, "video": {"url": "https://e.com/v.mp4"}},
            "video.description",
            "needs a text",
        ),
        ({"photos": []}, "photos", "at least 1"),
        (
            {"photos": [{"url": f"https://e.com/{i}.jpg"} for i in range(11)]},
            "photos",
            "at most 10",
        ),
        (
            {"photos": [{"url": "https://e.com/1.jpg", "media_id": "med_x"}]},
            "photos[0]",
            "exactly one of url and media_id",
        ),
        ({"reel": {}}, "reel", "exactly one of url and media_id"),
        (
            {"photos": [{"media_id": "med_00000000000000000000"}]},
            "photos[0].media_id",
            "no such media",
        ),
    ],
)
def test_bad_media_are_refused_naming_the_field(
    api: TestClient, alice: Account, fields: dict[str, Any], field: str, words: str
) -> None:
    response = api.post("/v1/posts", json=alice.body(**fields), headers=alice.headers)
    body = assert_problem(response, 422, "invalid_request")
    assert any(e["field"].startswith(field) and words in e["message"] for e in body["errors"]), body


def test_uploads_must_be_the_clients_own_of_the_right_kind(
    api: TestClient, alice: Account, settings: Settings, graph: SandboxClient
) -> None:
    bob = make_account(api, settings, graph, "bob")
    bobs = upload(api, bob, png())
    image = upload(api, alice, png())
    cases = [
        ({"photos": [{"media_id": bobs}]}, "photos[0].media_id", "no such media"),
        ({"video": {"media_id": image}}, "video.media_id", "is image, not video"),
    ]
    for fields, field, words in cases:
        response = api.post("/v1/posts", json=alice.body(**fields), headers=alice.headers)
        body = assert_problem(response, 422, "invalid_request", field)
        assert words in str(body["errors"])


@pytest.mark.parametrize(
    ("video", "words"),
    [
        ({"duration_ms": 2_000}, "too short"),
        ({"duration_ms": 120_000}, "too long"),
        ({"width": 1920, "height": 1080}, "not 9:16"),
        ({"width": 360, "height": 640}, "too small"),
        ({"fps": 12}, "frame rate"),
    ],
)
def test_a_reel_upload_outside_meta_limits_is_refused_before_scheduling(
    api: TestClient, alice: Account, video: dict[str, int], words: str
) -> None:
    media_id = upload(api, alice, mp4(**video), "reel.mp4")
    response = api.post(
        "/v1/posts", json=alice.body(reel={"media_id": media_id}), headers=alice.headers
    )
    body = assert_problem(response, 422, "invalid_request", "reel.media_id")
    assert words in str(body["errors"])


def test_a_posts_media_cannot_be_changed(api: TestClient, alice: Account) -> None:
    created = api.post(
        "/v1/posts", json=alice.body(video={"url": "https://e.com/v.mp4"}), headers=alice.headers
    )
    assert created.status_code == 201, created.text
    response = api.patch(
        f"/v1/posts/{created.json()['id']}",
        json={"video": {"url": "https://e.com/other.mp4"}},
        headers=alice.headers,
    )
    body = assert_problem(response, 422, "invalid_request", "video")
    assert "cancel the post" in body["detail"]
    # A video by URL keeps a text: it is how a lost answer is found on the Page.
    refused = api.patch(
        f"/v1/posts/{created.json()['id']}", json={"message": None}, headers=alice.headers
    )
    assert (
        "how offpost finds the video" in assert_problem(refused, 422, "invalid_request")["detail"]
    )
    # Photos' text can go: the post keeps its media when its message is cleared.
    photos = [{"url": "https://e.com/1.jpg"}, {"url": "https://e.com/2.jpg"}]
    with_photos = api.post("/v1/posts", json=alice.body(photos=photos), headers=alice.headers)
    cleared = api.patch(
        f"/v1/posts/{with_photos.json()['id']}", json={"message": None}, headers=alice.headers
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["message"] is None
    assert len(cleared.json()["photos"]) == 2


def test_a_batch_mixes_kinds(api: TestClient, alice: Account, settings: Settings) -> None:
    media_id = upload(api, alice, mp4(width=1920, height=1080), "v.mp4")
    posts = [
        alice.body(message="text only"),
        alice.body(photos=[{"url": "https://e.com/1.jpg"}, {"url": "https://e.com/2.jpg"}]),
        alice.body(video={"media_id": media_id}),
    ]
    response = api.post("/v1/posts/batch", json={"posts": posts}, headers=alice.headers)
    assert response.status_code == 201, response.text
    answered = response.json()["posts"]
    assert [len(p["photos"] or []) for p in answered] == [0, 2, 0]
    assert answered[2]["video"]["media_id"] == media_id
    assert uses(settings, post_id=answered[2]["id"]) == [media_id]
    bad = [alice.body(), alice.body(reel={"url": "https://e.com/r.mp4"}, link="https://e.com")]
    refused = api.post("/v1/posts/batch", json={"posts": bad}, headers=alice.headers)
    assert_problem(refused, 422, "invalid_request", "posts[1].link")


def test_a_schedules_occurrences_carry_its_photos(
    api: TestClient, alice: Account, settings: Settings
) -> None:
    media_id = upload(api, alice, png())
    body = {
        "credential_id": alice.credential_id,
        "target": alice.page_id,
        "message": "daily {date}",
        "photos": [{"url": "https://e.com/1.jpg"}, {"media_id": media_id}],
        "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
        "timezone": "Europe/Berlin",
        "start_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    response = api.post("/v1/schedules", json=body, headers=alice.headers)
    assert response.status_code == 201, response.text
    schedule = response.json()
    assert len(schedule["photos"]) == 2
    assert uses(settings, schedule_id=schedule["id"]) == [media_id]
    with db_session(settings) as session:
        made = list(session.scalars(select(Post).where(Post.schedule_id == schedule["id"])))
    assert made
    assert all(p.media == {"photos": body["photos"]} and p.media_kind == "photos" for p in made)
    assert all(uses(settings, post_id=p.id) == [media_id] for p in made)


def test_a_reel_schedule_may_not_outrun_the_pages_budget(api: TestClient, alice: Account) -> None:
    body = {
        "credential_id": alice.credential_id,
        "target": alice.page_id,
        "message": "reel",
        "reel": {"url": "https://e.com/r.mp4"},
        "cron": "*/30 * * * *",
        "timezone": "UTC",
    }
    response = api.post("/v1/schedules", json=body, headers=alice.headers)
    body_out = assert_problem(response, 422, "invalid_request", "reel")
    assert "30" in body_out["detail"]
    hourly = api.post("/v1/schedules", json={**body, "cron": "0 * * * *"}, headers=alice.headers)
    assert hourly.status_code == 201, hourly.text


def test_a_store_that_fails_answers_503_with_retry_after(
    postgres_url: str, sandbox_server: RunningSandbox, redis_url: str, graph: SandboxClient
) -> None:
    """An S3 endpoint nobody answers on: the upload is refused as a passing outage, not
    a 500, and names no key."""
    settings = make_settings(
        postgres_url,
        sandbox_server,
        redis_url,
        media_store="s3",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_access_key_id="offpost-test-key",
        s3_secret_access_key="offpost-test-secret-value",
    )
    with api_client(settings) as api:
        carol = make_account(api, settings, graph, "carol")
        response = api.post(
            "/v1/media",
            files={"file": ("p.png", png(), "application/octet-stream")},
            headers=carol.headers,
        )
    body = assert_problem(response, 503, "media_store_unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "offpost-test-secret-value" not in response.text
    assert "offpost-test-key" not in response.text
    assert body["detail"] == "the media store is unavailable; try again shortly"

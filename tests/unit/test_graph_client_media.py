"""GraphClient's media calls over httpx.MockTransport: what goes out, what comes back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from offpost.graph.errors import GraphError, GraphMalformedResponseError, GraphRejectedError
from offpost.graph.proof import appsecret_proof
from tests.unit.test_graph_client import (
    APP_SECRET,
    NOW_S,
    PAGE_TOKEN,
    Handler,
    MakeClient,
    form,
    ok,
    query,
    timed_proof,
)

UPLOAD_URL = "https://graph.test/video-upload/v25.0/42"


def multipart(request: httpx.Request) -> dict[str, Any]:
    """The fields of a multipart body: text as str, files as (filename, bytes)."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    fields: dict[str, Any] = {}
    for part in request.content.split(b"--" + boundary)[1:-1]:
        head, _, body = part.strip(b"\r\n").partition(b"\r\n\r\n")
        disposition = head.decode().split("\r\n")[0]
        name = disposition.split('name="')[1].split('"')[0]
        if 'filename="' in disposition:
            fields[name] = (disposition.split('filename="')[1].split('"')[0], body)
        else:
            fields[name] = body.decode()
    return fields


def refuse(status: int, error: dict[str, Any]) -> Handler:
    return lambda request: httpx.Response(status, json={"error": error})


# --- photos -----------------------------------------------------------------------------


def test_upload_photo_by_url_is_a_form(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "555"}))
    result = client.upload_photo(
        "7", PAGE_TOKEN, url="https://cdn.test/a.jpg", published=False, temporary=True
    )
    assert (recorder.last.method, recorder.last.url.path) == ("POST", "/v25.0/7/photos")
    assert form(recorder.last) == {
        "url": ["https://cdn.test/a.jpg"],
        "published": ["false"],
        "temporary": ["true"],
    }
    assert (result.id, result.post_id) == ("555", None)


def test_upload_photo_bytes_go_as_multipart_source(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "555", "post_id": "7_1"}))
    result = client.upload_photo(
        "7",
        PAGE_TOKEN,
        data=b"\xff\xd8jpeg",
        filename="cat.jpg",
        content_type="image/jpeg",
        caption="Cat",
    )
    fields = multipart(recorder.last)
    assert fields == {"caption": "Cat", "source": ("cat.jpg", b"\xff\xd8jpeg")}
    assert b"Content-Type: image/jpeg" in recorder.last.content
    # The token and its proof stay in the query, never in the body.
    assert query(recorder.last)["access_token"] == PAGE_TOKEN
    assert PAGE_TOKEN.encode() not in recorder.last.content
    assert (result.id, result.post_id) == ("555", "7_1")


@pytest.mark.parametrize("sources", [{}, {"url": "https://x/a.jpg", "data": b"x"}])
def test_upload_photo_needs_exactly_one_source(
    make_client: MakeClient, sources: dict[str, Any]
) -> None:
    client, recorder = make_client(lambda r: ok({"id": "1"}))
    with pytest.raises(ValueError, match="exactly one"):
        client.upload_photo("7", PAGE_TOKEN, **sources)
    assert recorder.requests == []


def test_publish_feed_attaches_media_by_index(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "7_9"}))
    result = client.publish_feed("7", PAGE_TOKEN, message="Two", attached_media=["11", "12"])
    assert form(recorder.last) == {
        "message": ["Two"],
        "attached_media[0]": ['{"media_fbid": "11"}'],
        "attached_media[1]": ['{"media_fbid": "12"}'],
    }
    assert result.id == "7_9"
    # Photos alone make a post.
    client.publish_feed("7", PAGE_TOKEN, attached_media=["13"])
    assert form(recorder.last) == {"attached_media[0]": ['{"media_fbid": "13"}']}


@pytest.mark.parametrize(
    ("media", "problem"),
    [(["1"] * 11, "at most 10"), ("123", "not one string"), (["1", ""], "empty id")],
)
def test_publish_feed_refuses_bad_attached_media(
    make_client: MakeClient, media: Any, problem: str
) -> None:
    client, recorder = make_client(lambda r: ok({"id": "x"}))
    with pytest.raises(ValueError, match=problem):
        client.publish_feed("7", PAGE_TOKEN, message="hi", attached_media=media)
    assert recorder.requests == []


def test_page_posts_reads_the_media_of_each_post(make_client: MakeClient) -> None:
    def target(media_type: str, media_id: str) -> dict[str, Any]:
        return {"media_type": media_type, "target": {"id": media_id}}

    album = {
        **target("album", "7_1"),
        "subattachments": {"data": [target("photo", "21"), target("photo", "22")]},
    }
    posts = [
        {"id": "7_1", "created_time": "2026-11-28T17:00:00+0000", "attachments": {"data": [album]}},
        {
            "id": "7_2",
            "created_time": "2026-11-28T17:00:00+0000",
            "attachments": {"data": [target("photo", "23")]},
        },
        {
            "id": "7_3",
            "created_time": "2026-11-28T17:00:00+0000",
            "attachments": {"data": [target("video", "24")]},
        },
        {
            "id": "7_4",
            "created_time": "2026-11-28T17:00:00+0000",
            "attachments": {"data": [target("share", "x")]},
        },
        {"id": "7_5", "created_time": "2026-11-28T17:00:00+0000", "attachments": "nonsense"},
    ]
    client, recorder = make_client(lambda r: ok({"data": posts}))
    result = client.page_posts("7", PAGE_TOKEN)
    assert [p.media_ids for p in result.posts] == [("21", "22"), ("23",), ("24",), (), ()]
    assert "attachments{" in query(recorder.last)["fields"]


def test_page_photos_lists_uploaded_photos(make_client: MakeClient) -> None:
    since = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    photos = [
        {"id": "2", "created_time": "2026-11-28T17:05:00+0000", "name": "Cat"},
        {"id": "1", "created_time": "2026-11-28T16:00:00+0000"},
    ]
    client, recorder = make_client(lambda r: ok({"data": photos}))
    result = client.page_photos("7", PAGE_TOKEN, since=since)
    assert recorder.last.url.path == "/v25.0/7/photos"
    params = query(recorder.last)
    assert (params["type"], params["fields"], params["since"]) == (
        "uploaded",
        "id,created_time,name",
        str(int(since.timestamp())),
    )
    assert [(p.id, p.name, p.published) for p in result.photos] == [("2", "Cat", None)]


# --- videos -----------------------------------------------------------------------------


def test_videos_go_to_graph_video_on_facebook(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda r: ok({"id": "99"}), graph_url="https://graph.facebook.com"
    )
    result = client.publish_video("7", PAGE_TOKEN, file_url="https://cdn.test/v.mp4", title="T")
    assert str(recorder.last.url).startswith("https://graph-video.facebook.com/v25.0/7/videos?")
    assert form(recorder.last) == {"file_url": ["https://cdn.test/v.mp4"], "title": ["T"]}
    assert (result.id, result.post_id) == ("99", None)
    # Other calls stay on graph.facebook.com; a sandbox gets its video calls itself.
    client.delete_object("99", PAGE_TOKEN)
    assert recorder.last.url.host == "graph.facebook.com"
    sandbox, on_sandbox = make_client(lambda r: ok({"id": "99"}))
    sandbox.publish_video("7", PAGE_TOKEN, data=b"mp4", title="T")
    assert on_sandbox.last.url.host == "graph.test"
    assert multipart(on_sandbox.last) == {"title": "T", "source": ("video.mp4", b"mp4")}


def test_resumable_upload_round_trip(make_client: MakeClient) -> None:
    replies = iter(
        [
            {"video_id": "42", "upload_session_id": "s1", "start_offset": "0", "end_offset": "4"},
            {"start_offset": "4", "end_offset": "6"},
            {"success": True},
        ]
    )
    client, recorder = make_client(lambda r: ok(next(replies)))
    session = client.video_upload_start("7", PAGE_TOKEN, file_size=6)
    assert (
        session.video_id,
        session.upload_session_id,
        session.start_offset,
        session.end_offset,
    ) == (
        "42",
        "s1",
        0,
        4,
    )
    assert form(recorder.last) == {"upload_phase": ["start"], "file_size": ["6"]}
    window = client.video_upload_transfer(
        "7", PAGE_TOKEN, upload_session_id="s1", start_offset=0, chunk=b"abcd"
    )
    assert (window.start_offset, window.end_offset, window.accepted, window.done) == (
        4,
        6,
        True,
        False,
    )
    assert multipart(recorder.last) == {
        "upload_phase": "transfer",
        "upload_session_id": "s1",
        "start_offset": "0",
        "video_file_chunk": ("chunk", b"abcd"),
    }
    assert client.video_upload_finish(
        "7", PAGE_TOKEN, upload_session_id="s1", title="T", description="D"
    )
    assert form(recorder.last) == {
        "upload_phase": ["finish"],
        "upload_session_id": ["s1"],
        "title": ["T"],
        "description": ["D"],
    }


def test_a_chunk_at_the_wrong_offset_gives_the_expected_window(make_client: MakeClient) -> None:
    error = {
        "message": "(#6001) offset",
        "code": 6001,
        "error_subcode": 1363037,
        "error_data": {"start_offset": 4, "end_offset": "6"},
    }
    client, _ = make_client(refuse(400, error))
    window = client.video_upload_transfer(
        "7", PAGE_TOKEN, upload_session_id="s1", start_offset=0, chunk=b"abcd"
    )
    assert (window.start_offset, window.end_offset, window.accepted) == (4, 6, False)


@pytest.mark.parametrize(
    "error",
    [
        {"message": "(#100) Invalid upload_session_id", "code": 100},
        {"message": "no data", "code": 6001, "error_subcode": 1363037},
    ],
)
def test_other_transfer_errors_raise(make_client: MakeClient, error: dict[str, Any]) -> None:
    client, _ = make_client(refuse(400, error))
    with pytest.raises(GraphError):
        client.video_upload_transfer(
            "7", PAGE_TOKEN, upload_session_id="s1", start_offset=0, chunk=b"abcd"
        )


def test_page_videos_and_reels(make_client: MakeClient) -> None:
    items = [
        {
            "id": "1",
            "title": "T",
            "description": "D",
            "created_time": "2026-11-28T17:05:00+0000",
            "status": {"video_status": "ready"},
        },
        {"id": "2", "updated_time": "2026-11-28T17:05:00+0000"},
    ]
    client, recorder = make_client(lambda r: ok({"data": items}))
    result = client.page_videos("7", PAGE_TOKEN, reels=True)
    assert recorder.last.url.path == "/v25.0/7/video_reels"
    assert query(recorder.last)["fields"] == "id,title,description,created_time,status"
    assert [(v.id, v.title, v.description, v.status) for v in result.videos] == [
        ("1", "T", "D", "ready"),
        ("2", None, None, None),
    ]
    assert result.videos[1].created_time is None
    client.page_videos("7", PAGE_TOKEN)
    assert recorder.last.url.path == "/v25.0/7/videos"


@pytest.mark.parametrize("key", ["bytes_transfered", "bytes_transferred"])
def test_video_status_reads_both_spellings(make_client: MakeClient, key: str) -> None:
    status = {
        "video_status": "uploading",
        "uploading_phase": {"status": "in_progress", key: 50002},
        "processing_phase": {"status": "not_started"},
        "publishing_phase": {"status": "not_started", "publish_status": "draft"},
    }
    client, recorder = make_client(lambda r: ok({"status": status, "id": "42"}))
    result = client.video_status("42", PAGE_TOKEN)
    assert (recorder.last.url.path, query(recorder.last)["fields"]) == ("/v25.0/42", "status")
    assert (
        result.video_status,
        result.uploading_status,
        result.bytes_transferred,
        result.processing_status,
        result.publishing_status,
        result.publish_status,
    ) == ("uploading", "in_progress", 50002, "not_started", "not_started", "draft")


def test_delete_object(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"success": True}))
    assert client.delete_object("555", PAGE_TOKEN) is True
    assert (recorder.last.method, recorder.last.url.path) == ("DELETE", "/v25.0/555")


# --- reels ------------------------------------------------------------------------------


def test_reel_start_and_finish(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"video_id": "42", "upload_url": UPLOAD_URL}))
    reel = client.reel_start("7", PAGE_TOKEN)
    assert (reel.video_id, reel.upload_url) == ("42", UPLOAD_URL)
    assert form(recorder.last) == {"upload_phase": ["start"]}
    finisher, recorder = make_client(lambda r: ok({"success": True}))
    assert finisher.reel_finish("7", PAGE_TOKEN, video_id="42", description="hi")
    assert form(recorder.last) == {
        "upload_phase": ["finish"],
        "video_id": ["42"],
        "video_state": ["PUBLISHED"],
        "description": ["hi"],
    }


def test_reel_upload_sends_the_token_in_the_header_and_the_proof_in_the_query(
    make_client: MakeClient,
) -> None:
    client, recorder = make_client(lambda r: ok({"success": True}))
    client.reel_upload(UPLOAD_URL, PAGE_TOKEN, data=b"rest", offset=6, file_size=10)
    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/video-upload/v25.0/42")
    assert request.headers["authorization"] == f"OAuth {PAGE_TOKEN}"
    assert (request.headers["offset"], request.headers["file_size"]) == ("6", "10")
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.content == b"rest"
    params = query(request)
    assert "access_token" not in params
    assert params["appsecret_proof"] == timed_proof(PAGE_TOKEN, APP_SECRET, NOW_S)

    client.reel_upload(UPLOAD_URL, PAGE_TOKEN, file_url="https://cdn.test/r.mp4")
    assert recorder.last.headers["file_url"] == "https://cdn.test/r.mp4"
    assert "offset" not in recorder.last.headers


@pytest.mark.parametrize(
    ("graph_url", "rupload_url", "upload_url", "allowed"),
    [
        (
            "https://graph.facebook.com",
            None,
            "https://rupload.facebook.com/video-upload/v25.0/1",
            True,
        ),
        (
            "https://graph.facebook.com",
            None,
            "http://rupload.facebook.com/video-upload/v25.0/1",
            False,
        ),
        (
            "https://graph.facebook.com",
            None,
            "https://graph.facebook.com/video-upload/v25.0/1",
            False,
        ),
        ("https://graph.facebook.com", None, "https://evil.test/video-upload/v25.0/1", False),
        (
            "https://graph.facebook.com",
            None,
            "https://rupload.facebook.com.evil.test/video-upload/1",
            False,
        ),
        ("https://graph.facebook.com", None, "https://rupload.facebook.com/v25.0/1", False),
        ("http://sandbox:8001", None, "http://sandbox:8001/video-upload/v26.0/1", True),
        ("http://sandbox:8001", None, "http://sandbox:8002/video-upload/v26.0/1", False),
        ("http://sandbox:8001", None, "https://rupload.facebook.com/video-upload/v26.0/1", True),
        ("https://graph.facebook.com", "https://up.test", "https://up.test/video-upload/1", True),
        (
            "https://graph.facebook.com",
            "https://up.test",
            "https://rupload.facebook.com/video-upload/1",
            False,
        ),
    ],
)
def test_reel_upload_sends_the_token_only_to_the_upload_host(
    make_client: MakeClient, graph_url: str, rupload_url: str | None, upload_url: str, allowed: bool
) -> None:
    client, recorder = make_client(
        lambda r: ok({"success": True}), graph_url=graph_url, rupload_url=rupload_url
    )
    if allowed:
        client.reel_upload(upload_url, PAGE_TOKEN, data=b"x")
        assert len(recorder.requests) == 1
    else:
        with pytest.raises(ValueError) as caught:
            client.reel_upload(upload_url, PAGE_TOKEN, data=b"x")
        assert PAGE_TOKEN not in str(caught.value)
        assert recorder.requests == []


def test_reel_upload_without_success_leaves_the_outcome_unknown(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({}))
    with pytest.raises(GraphMalformedResponseError) as caught:
        client.reel_upload(UPLOAD_URL, PAGE_TOKEN, data=b"x")
    assert caught.value.outcome_unknown


def test_rupload_errors_are_classified_without_the_token(make_client: MakeClient) -> None:
    error = {
        "message": "Request starting offset is invalid",
        "type": "OffsetInvalidError",
        "code": 100,
    }
    client, _ = make_client(refuse(400, error))
    with pytest.raises(GraphRejectedError) as caught:
        client.reel_upload(UPLOAD_URL, PAGE_TOKEN, data=b"x", offset=3)
    assert caught.value.type == "OffsetInvalidError"
    broken, _ = make_client(lambda r: httpx.Response(502, text=f"proxy saw {PAGE_TOKEN}"))
    with pytest.raises(GraphError) as failed:
        broken.reel_upload(UPLOAD_URL, PAGE_TOKEN, data=b"x")
    assert PAGE_TOKEN not in str(failed.value)
    assert "POST /video-upload/v25.0/42" in str(failed.value)


def test_a_large_upload_is_not_cut_short_by_the_reply_deadline(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline bounds the reply; the time spent sending the body does not count."""
    ticks = iter([0.0, 100.0])
    monkeypatch.setattr("offpost.graph.client.time.monotonic", lambda: next(ticks, 101.0))
    client, recorder = make_client(lambda r: ok({"success": True}), deadline_s=5.0)
    client.reel_upload(UPLOAD_URL, PAGE_TOKEN, data=b"x" * (5 * 1024 * 1024))
    assert len(recorder.last.content) == 5 * 1024 * 1024


def test_the_untimed_proof_on_rupload(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"success": True}), appsecret_time=False)
    client.reel_upload(UPLOAD_URL, PAGE_TOKEN, data=b"x")
    assert query(recorder.last) == {"appsecret_proof": appsecret_proof(APP_SECRET, PAGE_TOKEN)}

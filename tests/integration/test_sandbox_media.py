"""Media publishing against the sandbox over HTTP, through GraphClient: photos, multi-photo
posts, Page videos (one request and resumable), reels (rupload), deletes — and faults on each.

Hosted media are served by a local HTTP server, so the sandbox fetches real bytes and the
tests can check exactly what arrived (size and SHA-256).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from offpost.graph.client import GraphClient, make_http_client
from offpost.graph.errors import GraphError, GraphPermissionError, GraphRejectedError
from offpost.graph.sandbox import RunningSandbox
from tests.integration.media_files import serving_files
from tests.integration.sandbox_support import SandboxClient, error_of

PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
VIDEO = bytes((i * 7) % 251 for i in range(300_000))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def files_url() -> Iterator[str]:
    """A local HTTP server: :data:`PHOTO` at ``/cat.jpg``, :data:`VIDEO` at ``/clip.mp4``."""
    with serving_files() as files:
        files.put("cat.jpg", PHOTO)
        files.put("clip.mp4", VIDEO)
        yield files.url


@pytest.fixture
def client(sandbox_server: RunningSandbox) -> Iterator[GraphClient]:
    http = make_http_client(10.0)
    yield GraphClient(
        http,
        graph_url=sandbox_server.url,
        version="v26.0",
        app_id=sandbox_server.app_id,
        app_secret=sandbox_server.app_secret,
    )
    http.close()


def photos(graph: SandboxClient, page_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = graph.control("GET", f"/pages/{page_id}/photos")["data"]
    return data


def videos(graph: SandboxClient, page_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = graph.control("GET", f"/pages/{page_id}/videos")["data"]
    return data


# --- photos ---------------------------------------------------------------------------


def test_photo_by_url_and_by_bytes(
    graph: SandboxClient, client: GraphClient, files_url: str
) -> None:
    page_id, token, _ = graph.publisher()
    by_url = client.upload_photo(page_id, token, url=f"{files_url}/cat.jpg", caption="cat")
    assert by_url.post_id is not None
    assert by_url.post_id.startswith(f"{page_id}_")
    by_bytes = client.upload_photo(
        page_id, token, data=PHOTO, filename="cat.jpg", content_type="image/jpeg", published=False
    )
    assert by_bytes.post_id is None

    state = {photo["id"]: photo for photo in photos(graph, page_id)}
    assert (state[by_url.id]["size"], state[by_url.id]["sha256"]) == (len(PHOTO), sha(PHOTO))
    assert state[by_url.id]["origin"] == "url"
    assert (state[by_bytes.id]["size"], state[by_bytes.id]["sha256"]) == (len(PHOTO), sha(PHOTO))
    assert (state[by_bytes.id]["published"], state[by_bytes.id]["filename"]) == (False, "cat.jpg")
    # Only the published one is a story; only it is listed.
    assert [p.id for p in client.page_posts(page_id, token).posts] == [by_url.post_id]
    assert [p.id for p in client.page_photos(page_id, token).photos] == [by_url.id]
    assert client.page_posts(page_id, token).posts[0].media_ids == (by_url.id,)


def test_unreachable_photo_url_is_324(
    graph: SandboxClient, client: GraphClient, files_url: str
) -> None:
    page_id, token, _ = graph.publisher()
    for url in (f"{files_url}/missing.jpg", "ftp://127.0.0.1/cat.jpg"):
        with pytest.raises(GraphError) as caught:
            client.upload_photo(page_id, token, url=url)
        assert (caught.value.code, caught.value.message) == (
            324,
            "(#324) Missing or invalid image file",
        )
    assert photos(graph, page_id) == []


def test_multi_photo_post(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    ids = [
        client.upload_photo(page_id, token, data=PHOTO + bytes([n]), published=False).id
        for n in range(3)
    ]
    result = client.publish_feed(page_id, token, message="three cats", attached_media=ids)

    post = client.page_posts(page_id, token).posts[0]
    assert (post.id, post.message, post.media_ids) == (result.id, "three cats", tuple(ids))
    raw = graph.get(f"/{page_id}/feed", token, fields="id,attachments{media_type}").json()
    album = raw["data"][0]["attachments"]["data"][0]
    assert album["media_type"] == "album"
    assert [sub["target"]["id"] for sub in album["subattachments"]["data"]] == ids
    assert {photo["attached_to"] for photo in photos(graph, page_id)} == {result.id}
    # Without attachments in fields, Graph's feed does not show them.
    assert "attachments" not in graph.get(f"/{page_id}/feed", token).json()["data"][0]


def test_attached_media_must_be_an_unattached_unpublished_photo_of_the_page(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    other_page, other_token, _ = graph.publisher()
    foreign = client.upload_photo(other_page, other_token, data=PHOTO, published=False).id
    published = client.upload_photo(page_id, token, data=PHOTO, caption="live").id
    attached = client.upload_photo(page_id, token, data=PHOTO, published=False).id
    client.publish_feed(page_id, token, message="first", attached_media=[attached])
    fresh = client.upload_photo(page_id, token, data=PHOTO, published=False).id

    for bad, why in (
        (foreign, "is not a photo of this Page"),
        (published, "is a published photo"),
        (attached, "is already attached to a post"),
        ("123", "is not a photo of this Page"),
    ):
        with pytest.raises(GraphRejectedError) as caught:
            client.publish_feed(page_id, token, message="again", attached_media=[fresh, bad])
        assert caught.value.code == 100
        assert caught.value.message == f"(#100) attached_media[1] media_fbid {bad} {why}"
    # Nothing was attached by the refused calls.
    assert next(p for p in photos(graph, page_id) if p["id"] == fresh)["attached_to"] is None
    with pytest.raises(ValueError, match="at most 10"):
        client.publish_feed(page_id, token, attached_media=[fresh] * 11)


def test_delete_an_unpublished_photo(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    photo_id = client.upload_photo(page_id, token, data=PHOTO, published=False).id
    assert client.delete_object(photo_id, token) is True
    assert photos(graph, page_id)[0]["deleted"] is True
    with pytest.raises(GraphRejectedError) as caught:
        client.publish_feed(page_id, token, message="x", attached_media=[photo_id])
    assert caught.value.code == 100
    # Gone for Graph: a second delete is Graph's "does not exist".
    with pytest.raises(GraphRejectedError) as again:
        client.delete_object(photo_id, token)
    assert again.value.subcode == 33


def test_delete_needs_the_owning_pages_token(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    _, other_token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="mine").id
    with pytest.raises(GraphPermissionError):
        client.delete_object(post_id, other_token)
    assert client.delete_object(post_id, token) is True
    assert client.page_posts(page_id, token).posts == ()


# --- videos ---------------------------------------------------------------------------


def test_video_by_url_and_by_bytes(
    graph: SandboxClient, client: GraphClient, files_url: str
) -> None:
    page_id, token, _ = graph.publisher()
    by_url = client.publish_video(
        page_id, token, file_url=f"{files_url}/clip.mp4", title="Clip", description="by url"
    )
    by_bytes = client.publish_video(page_id, token, data=VIDEO[:1000], title="Short")

    state = {video["id"]: video for video in videos(graph, page_id)}
    assert (state[by_url.id]["file_size"], state[by_url.id]["sha256"]) == (len(VIDEO), sha(VIDEO))
    assert state[by_bytes.id]["sha256"] == sha(VIDEO[:1000])
    listed = client.page_videos(page_id, token)
    assert [(v.id, v.title, v.status) for v in listed.videos] == [
        (by_bytes.id, "Short", "ready"),
        (by_url.id, "Clip", "ready"),
    ]
    assert listed.videos[1].description == "by url"
    # Each published video is a feed post showing it.
    assert [p.media_ids for p in client.page_posts(page_id, token).posts] == [
        (by_bytes.id,),
        (by_url.id,),
    ]
    with pytest.raises(GraphError) as caught:
        client.publish_video(page_id, token, file_url=f"{files_url}/nothing.mp4")
    assert caught.value.code == 389


def test_resumable_video_survives_a_lost_transfer_reply(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    graph.settings(video_chunk_bytes=100_000)
    session = client.video_upload_start(page_id, token, file_size=len(VIDEO))
    assert (session.start_offset, session.end_offset) == (0, 100_000)

    # The first chunk arrives, its reply is lost.
    graph.fault(path="/videos$", method="POST", after_effect=True, drop_response=True)
    with pytest.raises(GraphError) as lost:
        client.video_upload_transfer(
            page_id,
            token,
            upload_session_id=session.upload_session_id,
            start_offset=0,
            chunk=VIDEO[:100_000],
        )
    assert lost.value.outcome_unknown
    assert videos(graph, page_id)[0]["bytes_received"] == 100_000

    # Sending it again is harmless: the same window comes back.
    window = client.video_upload_transfer(
        page_id,
        token,
        upload_session_id=session.upload_session_id,
        start_offset=0,
        chunk=VIDEO[:100_000],
    )
    assert (window.start_offset, window.end_offset, window.accepted) == (100_000, 200_000, True)
    # A chunk at a wrong offset is refused, naming the offsets expected.
    wrong = client.video_upload_transfer(
        page_id,
        token,
        upload_session_id=session.upload_session_id,
        start_offset=250_000,
        chunk=VIDEO[250_000:],
    )
    assert (wrong.start_offset, wrong.end_offset, wrong.accepted) == (100_000, 200_000, False)
    while not window.done:
        window = client.video_upload_transfer(
            page_id,
            token,
            upload_session_id=session.upload_session_id,
            start_offset=window.start_offset,
            chunk=VIDEO[window.start_offset : window.end_offset],
        )
    assert (window.start_offset, window.end_offset) == (len(VIDEO), len(VIDEO))

    assert client.video_upload_finish(
        page_id, token, upload_session_id=session.upload_session_id, title="Long", description="d"
    )
    video = videos(graph, page_id)[0]
    assert (video["sha256"], video["published"], video["title"]) == (sha(VIDEO), True, "Long")
    assert [v.id for v in client.page_videos(page_id, token).videos] == [session.video_id]
    assert client.video_status(session.video_id, token).video_status == "ready"


def test_wrong_offset_error_is_graphs_1363037(graph: SandboxClient) -> None:
    page_id, token, _ = graph.publisher()
    start = graph.post(f"/{page_id}/videos", token, upload_phase="start", file_size=10).json()
    response = graph.http.post(
        f"/v26.0/{page_id}/videos",
        data={
            "upload_phase": "transfer",
            "upload_session_id": start["upload_session_id"],
            "start_offset": "5",
            "access_token": token,
            **graph.proof(token),
        },
        files={"video_file_chunk": ("c", b"12345")},
    )
    error = error_of(response)
    assert (error["error_subcode"], error["error_data"]) == (
        1363037,
        {"start_offset": 0, "end_offset": 10},
    )
    finish = graph.post(
        f"/{page_id}/videos",
        token,
        upload_phase="finish",
        upload_session_id=start["upload_session_id"],
    )
    assert error_of(finish)["code"] == 100


# --- reels ----------------------------------------------------------------------------


def test_reel_with_a_lost_upload_reply(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    reel = client.reel_start(page_id, token)
    assert reel.upload_url == f"{graph.url}/video-upload/v26.0/{reel.video_id}"
    before = client.video_status(reel.video_id, token)
    assert (before.video_status, before.bytes_transferred) == ("uploading", 0)

    graph.fault(path="video-upload", method="POST", after_effect=True, drop_response=True)
    with pytest.raises(GraphError) as lost:
        client.reel_upload(reel.upload_url, token, data=VIDEO)
    assert lost.value.outcome_unknown

    status = client.video_status(reel.video_id, token)
    assert (status.video_status, status.uploading_status, status.bytes_transferred) == (
        "upload_complete",
        "complete",
        len(VIDEO),
    )
    assert client.reel_finish(page_id, token, video_id=reel.video_id, description="a reel")
    done = client.video_status(reel.video_id, token)
    assert (done.video_status, done.publish_status) == ("ready", "published")
    assert [
        (v.id, v.description) for v in client.page_videos(page_id, token, reels=True).videos
    ] == [(reel.video_id, "a reel")]
    assert videos(graph, page_id)[0]["sha256"] == sha(VIDEO)
    # A reel is not a /videos video.
    assert client.page_videos(page_id, token).videos == ()


def test_reel_upload_resumes_at_the_bytes_received(
    graph: SandboxClient, client: GraphClient, files_url: str
) -> None:
    page_id, token, _ = graph.publisher()
    reel = client.reel_start(page_id, token)
    # The first part only (a connection broken mid-body keeps what arrived the same way).
    with pytest.raises(GraphRejectedError) as partial:
        client.reel_upload(reel.upload_url, token, data=VIDEO[:1000], file_size=len(VIDEO))
    assert partial.value.type == "PartialRequestError"
    offset = client.video_status(reel.video_id, token).bytes_transferred
    assert offset == 1000
    with pytest.raises(GraphRejectedError) as bad_offset:
        client.reel_upload(reel.upload_url, token, data=VIDEO[10:], offset=10)
    assert bad_offset.value.message == "Request starting offset is invalid"
    client.reel_upload(reel.upload_url, token, data=VIDEO[offset:], offset=offset)
    assert videos(graph, page_id)[0]["sha256"] == sha(VIDEO)

    hosted = client.reel_start(page_id, token)
    client.reel_upload(hosted.upload_url, token, file_url=f"{files_url}/clip.mp4")
    assert client.video_status(hosted.video_id, token).bytes_transferred == len(VIDEO)


def test_the_31st_reel_in_24_hours_is_refused(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()

    def publish(n: int) -> str:
        reel = client.reel_start(page_id, token)
        client.reel_upload(reel.upload_url, token, data=b"reel %d" % n)
        client.reel_finish(page_id, token, video_id=reel.video_id)
        return reel.video_id

    for n in range(30):
        publish(n)
    with pytest.raises(GraphError) as caught:
        publish(30)
    assert caught.value.code == 9
    graph.advance(86_401)
    publish(31)


def test_reel_upload_refuses_other_hosts_and_needs_a_proof(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    reel = client.reel_start(page_id, token)
    for url in (
        f"https://evil.example/video-upload/v26.0/{reel.video_id}",
        f"{graph.url}/{reel.video_id}",
    ):
        with pytest.raises(ValueError):
            client.reel_upload(url, token, data=b"x")

    headers = {"Authorization": f"OAuth {token}", "offset": "0", "file_size": "3"}
    path = f"/video-upload/v26.0/{reel.video_id}"
    missing = graph.http.post(path, headers=headers, content=b"abc")
    assert error_of(missing)["message"] == (
        "API calls from the server require an appsecret_proof argument"
    )
    forged = graph.http.post(
        path, params={"appsecret_proof": "0" * 64}, headers=headers, content=b"abc"
    )
    assert error_of(forged)["message"] == "Invalid appsecret_proof provided in the API argument"
    assert client.video_status(reel.video_id, token).bytes_transferred == 0
    good = graph.http.post(path, params=graph.proof(token), headers=headers, content=b"abc")
    assert good.json() == {"success": True}
    calls = [c for c in graph.control("GET", "/calls")["data"] if "video-upload" in c["path"]]
    assert [c["proof"] for c in calls] == ["absent", "invalid", "valid"]
    assert all(c["page_id"] == page_id for c in calls[2:])
    assert "x-business-use-case-usage" in good.headers


# --- faults on every new path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/photos$", "POST"),
        ("/photos$", "GET"),
        ("/videos$", "POST"),
        ("/videos$", "GET"),
        ("/video_reels$", "POST"),
        ("/video_reels$", "GET"),
        ("video-upload", "POST"),
        (r"^/\d+$", "GET"),
        (r"^/\d+$", "DELETE"),
    ],
)
def test_faults_strike_every_media_path(
    graph: SandboxClient, client: GraphClient, path: str, method: str
) -> None:
    page_id, token, _ = graph.publisher()
    reel = client.reel_start(page_id, token)
    photo_id = client.upload_photo(page_id, token, data=PHOTO, published=False).id
    graph.fault(path=path, method=method, status=503, error={"code": 2, "message": "injected"})
    calls: dict[tuple[str, str], Callable[[], object]] = {
        ("/photos$", "POST"): lambda: client.upload_photo(page_id, token, data=PHOTO),
        ("/photos$", "GET"): lambda: client.page_photos(page_id, token),
        ("/videos$", "POST"): lambda: client.publish_video(page_id, token, data=b"v"),
        ("/videos$", "GET"): lambda: client.page_videos(page_id, token),
        ("/video_reels$", "POST"): lambda: client.reel_start(page_id, token),
        ("/video_reels$", "GET"): lambda: client.page_videos(page_id, token, reels=True),
        ("video-upload", "POST"): lambda: client.reel_upload(reel.upload_url, token, data=b"r"),
        (r"^/\d+$", "GET"): lambda: client.video_status(reel.video_id, token),
        (r"^/\d+$", "DELETE"): lambda: client.delete_object(photo_id, token),
    }
    with pytest.raises(GraphError) as caught:
        calls[(path, method)]()
    assert (caught.value.code, caught.value.message, caught.value.http_status) == (
        2,
        "injected",
        503,
    )
    assert graph.control("GET", "/faults")["data"] == []


def test_rupload_reply_can_be_cut_and_delayed(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    reel = client.reel_start(page_id, token)
    graph.fault(path="video-upload", truncate_bytes=3)
    with pytest.raises(GraphError) as cut:
        client.reel_upload(reel.upload_url, token, data=b"abc")
    assert cut.value.outcome_unknown
    # The upload happened; only its reply was cut off.
    assert client.video_status(reel.video_id, token).bytes_transferred == 3


def test_media_calls_are_metered_against_the_page(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    result = client.upload_photo(page_id, token, data=PHOTO)
    assert [b.object_id for b in result.usage.business] == [page_id]
    reel = client.reel_start(page_id, token)
    client.reel_upload(reel.upload_url, token, data=b"abc")
    calls = graph.control("GET", "/calls")["data"]
    assert [c["page_id"] for c in calls[-3:]] == [page_id] * 3

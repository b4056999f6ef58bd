"""Posts with several photos, a video or a Reel, published exactly once.

Everything is real: the posts and uploads go through the HTTP API, uploads are
kept in SeaweedFS over S3, a real Celery worker publishes them to the Graph
sandbox over HTTP, and hosted media are fetched by the sandbox from a local HTTP
server. Lost replies are injected at each step of each multi-step kind; after
each, the Page holds exactly one post, nothing half-made is visible, and what a
failed post uploaded is removed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from offpost.graph.sandbox import RunningSandbox
from offpost.media.store import make_media_store
from offpost.models import AttemptOutcome, Post, PostStatus, PostStep, StepKind, StepOutcome
from offpost.workers.leftovers import Remover, remove_leftovers
from tests.integration.media_files import FileServer, mp4, png, serving_files, sha256
from tests.integration.media_support import S3Server
from tests.integration.pipeline_support import Pipeline, serving_pipeline, wait_for
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(240)

#: The chunks the sandbox asks resumable video uploads for (Graph's are megabytes).
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    with serving_files() as server:
        yield server


@pytest.fixture(scope="module")
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    s3_server: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """A worker and a dispatcher whose media store is an S3 bucket of SeaweedFS."""
    logs = Path(tmp_path_factory.mktemp("media-pipeline-logs"))
    with serving_pipeline(
        postgres_server_url,
        redis_url,
        sandbox_server,
        logs,
        OFFPOST_MEDIA_STORE="s3",
        OFFPOST_S3_ENDPOINT_URL=s3_server.url,
        OFFPOST_S3_BUCKET=f"offpost-{secrets.token_hex(4)}",
        OFFPOST_S3_ACCESS_KEY_ID=s3_server.access_key_id,
        OFFPOST_S3_SECRET_ACCESS_KEY=s3_server.secret_access_key,
    ) as running:
        yield running
        text = running.log_text()
        assert sandbox_server.app_secret not in text
        assert s3_server.secret_access_key not in text


# -- helpers ---------------------------------------------------------------------------


def upload(pipeline: Pipeline, page: dict[str, str], data: bytes, name: str) -> str:
    with pipeline.api() as api:
        response = api.post(
            "/v1/media",
            files={"file": (name, data, "application/octet-stream")},
            headers={"Authorization": page["key"]},
        )
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == sha256(data)
    return str(response.json()["id"])


def create(pipeline: Pipeline, page: dict[str, str], **content: Any) -> str:
    body = {"credential_id": page["credential_id"], "target": page["page_id"], **content}
    with pipeline.api() as api:
        response = api.post("/v1/posts", json=body, headers={"Authorization": page["key"]})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def published(pipeline: Pipeline, post_id: str) -> Post:
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED}, timeout_s=90)
    return post


def steps(pipeline: Pipeline, post_id: str) -> list[PostStep]:
    with pipeline.sessions() as session:
        return list(
            session.scalars(
                select(PostStep)
                .where(PostStep.post_id == post_id)
                .order_by(PostStep.started_at, PostStep.id)
            )
        )


def live_posts(graph: SandboxClient, page_id: str) -> list[dict[str, Any]]:
    return [p for p in graph.posts(page_id) if not p.get("deleted")]


def photos(graph: SandboxClient, page_id: str) -> list[dict[str, Any]]:
    return list(graph.control("GET", f"/pages/{page_id}/photos")["data"])


def videos(graph: SandboxClient, page_id: str) -> list[dict[str, Any]]:
    return list(graph.control("GET", f"/pages/{page_id}/videos")["data"])


def add_reels(
    pipeline: Pipeline,
    page: dict[str, str],
    url: str,
    times: list[datetime],
    *,
    published: bool = False,
    **values: Any,
) -> None:
    """Reel posts of the Page at ``times`` (published then, with ``published``)."""
    with pipeline.sessions.begin() as session:
        for at in times:
            if published:
                values |= {"published_at": at, "graph_post_id": f"reel-{secrets.token_hex(6)}"}
            session.add(
                Post(
                    client_id=page["client_id"],
                    credential_id=page["credential_id"],
                    target=page["page_id"],
                    media={"reel": {"url": url}},
                    media_kind="reel",
                    publish_at=at,
                    due_at=at,
                    **values,
                )
            )


def lose_reply(graph: SandboxClient, path: str, **match: Any) -> None:
    """The call takes effect and its reply never arrives."""
    graph.fault(path=path, method="POST", times=1, after_effect=True, drop_response=True, **match)


# -- several photos --------------------------------------------------------------------


def test_photos_by_url_and_upload_become_one_post_of_all(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    first, second, third = png(), png(), png()
    urls = [files.put(f"{secrets.token_hex(4)}.png", data) for data in (first, second)]
    media_id = upload(pipeline, page, third, "third.png")
    post_id = create(
        pipeline,
        page,
        message="three photos",
        photos=[{"url": urls[0]}, {"url": urls[1]}, {"media_id": media_id}],
    )
    post = published(pipeline, post_id)
    [on_page] = live_posts(graph, page["page_id"])
    assert post.graph_post_id == on_page["id"]
    assert on_page["message"] == "three photos"
    uploaded = photos(graph, page["page_id"])
    assert [p["sha256"] for p in uploaded] == [sha256(first), sha256(second), sha256(third)]
    assert all(p["attached_to"] == on_page["id"] and not p["published"] for p in uploaded)
    assert [s.kind for s in steps(pipeline, post_id)] == [StepKind.PHOTO] * 3
    assert [a.outcome for a in pipeline.attempts(post_id)] == [AttemptOutcome.PUBLISHED]


def test_a_lost_photo_reply_costs_one_unseen_upload_and_one_post(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    datas = [png(), png()]
    urls = [files.put(f"{secrets.token_hex(4)}.png", d) for d in datas]
    # The second photo's upload happens, but its reply is lost.
    lose_reply(graph, f"/{page['page_id']}/photos$")
    post_id = create(pipeline, page, photos=[{"url": url} for url in urls])
    post = published(pipeline, post_id)
    [on_page] = live_posts(graph, page["page_id"])
    assert post.graph_post_id == on_page["id"]
    uploaded = photos(graph, page["page_id"])
    attached = [p for p in uploaded if p["attached_to"] == on_page["id"]]
    assert sorted(p["sha256"] for p in attached) == sorted(sha256(d) for d in datas)
    # The lost upload made a photo no reply named: unpublished, never on the Page.
    lost = [p for p in uploaded if p["attached_to"] is None]
    assert len(lost) == 1
    assert not lost[0]["published"]
    outcomes = [(s.kind, s.outcome) for s in steps(pipeline, post_id)]
    assert (StepKind.PHOTO, StepOutcome.NOT_FOUND) in outcomes


def test_a_lost_feed_reply_is_reconciled_by_its_photos(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    urls = [files.put(f"{secrets.token_hex(4)}.png", png()) for _ in range(2)]
    lose_reply(graph, f"/{page['page_id']}/feed$")
    post_id = create(pipeline, page, message="lost, then found", photos=[{"url": u} for u in urls])
    post = published(pipeline, post_id)
    [on_page] = live_posts(graph, page["page_id"])
    assert post.graph_post_id == on_page["id"]
    assert [a.outcome for a in pipeline.attempts(post_id)] == [
        AttemptOutcome.RETRY,
        AttemptOutcome.RECONCILED,
    ]
    # The photos were uploaded once: reconciling reuses nothing and uploads nothing.
    assert len(photos(graph, page["page_id"])) == 2


def test_a_failed_post_removes_the_photos_it_uploaded(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    urls = [files.put(f"{secrets.token_hex(4)}.png", png()) for _ in range(3)]
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        status=400,
        error={"code": 100, "message": "Invalid parameter"},
    )
    post_id = create(pipeline, page, message="refused", photos=[{"url": u} for u in urls])
    [post] = pipeline.wait_status([post_id], {PostStatus.FAILED}, timeout_s=60)
    assert post.last_error is not None
    assert post.last_error["code"] == 100
    assert live_posts(graph, page["page_id"]) == []
    uploaded = photos(graph, page["page_id"])
    assert len(uploaded) == 3
    assert all(p["deleted"] for p in uploaded)
    removals = [s for s in steps(pipeline, post_id) if s.kind is StepKind.REMOVE]
    assert sorted(s.graph_id or "" for s in removals) == sorted(p["id"] for p in uploaded)
    assert all(s.outcome is StepOutcome.DONE for s in removals)


# -- video -----------------------------------------------------------------------------


def test_a_video_by_url_whose_reply_is_lost_is_found_on_the_page(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    data = mp4(width=1920, height=1080)
    url = files.put(f"{secrets.token_hex(4)}.mp4", data)
    lose_reply(graph, f"/{page['page_id']}/videos$")
    post_id = create(
        pipeline, page, video={"url": url, "title": "Launch", "description": "our launch video"}
    )
    post = published(pipeline, post_id)
    [video] = [v for v in videos(graph, page["page_id"]) if not v["deleted"]]
    assert post.graph_post_id == video["id"]
    assert video["sha256"] == sha256(data)
    assert video["title"] == "Launch"
    assert len(live_posts(graph, page["page_id"])) == 1
    assert [a.outcome for a in pipeline.attempts(post_id)] == [
        AttemptOutcome.RETRY,
        AttemptOutcome.RECONCILED,
    ]


def test_a_large_upload_resumes_after_a_lost_chunk_reply(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.settings(video_chunk_bytes=CHUNK)
    data = mp4(width=1280, height=720, mdat_bytes=5 * CHUNK)
    media_id = upload(pipeline, page, data, "big.mp4")
    # The first transfer arrives; its reply does not.
    lose_reply(graph, f"/{page['page_id']}/videos$", params={"upload_phase": "transfer"})
    post_id = create(pipeline, page, message="a long one", video={"media_id": media_id})
    post = published(pipeline, post_id)
    [video] = videos(graph, page["page_id"])
    assert post.graph_post_id == video["id"]
    assert video["sha256"] == sha256(data)
    assert video["bytes_received"] == len(data)
    kinds = [s.kind for s in steps(pipeline, post_id)]
    assert kinds.count(StepKind.VIDEO_START) == 1
    assert kinds.count(StepKind.VIDEO_TRANSFER) >= 6  # five and more chunks, one sent twice
    assert len(live_posts(graph, page["page_id"])) == 1
    # The client sees the upload's progress: every chunk, the lost one sent again.
    with pipeline.api() as api:
        answer = api.get(f"/v1/posts/{post_id}/steps", headers={"Authorization": page["key"]})
    assert answer.status_code == 200, answer.text
    chunks = [s for s in answer.json()["steps"] if s["kind"] == "video_transfer"]
    assert chunks[0]["outcome"] == "unknown"
    assert chunks[1]["bytes"] == chunks[0]["bytes"]
    assert chunks[-1]["bytes"][1] == len(data)
    assert all(c["outcome"] == "done" for c in chunks[1:])


# -- reel ------------------------------------------------------------------------------


def test_a_reel_whose_upload_and_finish_replies_are_lost_is_published_once(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    data = mp4(duration_ms=15_000, width=1080, height=1920)
    media_id = upload(pipeline, page, data, "reel.mp4")
    lose_reply(graph, "video-upload")
    lose_reply(graph, f"/{page['page_id']}/video_reels$", params={"upload_phase": "finish"})
    post_id = create(pipeline, page, reel={"media_id": media_id, "description": "a reel"})
    post = published(pipeline, post_id)
    [reel] = videos(graph, page["page_id"])
    assert reel["kind"] == "reel"
    assert post.graph_post_id == reel["id"]
    assert reel["sha256"] == sha256(data)
    assert reel["published"]
    # A Reel lives in the Page's Reels, not as a feed post.
    assert live_posts(graph, page["page_id"]) == []
    outcomes = [(s.kind, s.outcome) for s in steps(pipeline, post_id)]
    assert (StepKind.REEL_START, StepOutcome.DONE) in outcomes
    assert [a.outcome for a in pipeline.attempts(post_id)][-1] == AttemptOutcome.RECONCILED


def test_a_reel_over_the_pages_daily_budget_is_refused_naming_the_next_free_time(
    pipeline: Pipeline, page: dict[str, str], files: FileServer
) -> None:
    url = files.put(f"{secrets.token_hex(4)}.mp4", mp4())
    start = datetime.now(UTC) + timedelta(days=2)
    add_reels(pipeline, page, url, [start + timedelta(minutes=10 * i) for i in range(30)])
    body = {
        "credential_id": page["credential_id"],
        "target": page["page_id"],
        "reel": {"url": url},
        "publish_at": (start + timedelta(hours=6)).isoformat(),
    }
    with pipeline.api() as api:
        refused = api.post("/v1/posts", json=body, headers={"Authorization": page["key"]})
        assert refused.status_code == 422, refused.text
        free = (start + timedelta(days=1)).astimezone(UTC)
        assert free.isoformat().replace("+00:00", "Z")[:16] in refused.json()["detail"]
        body["publish_at"] = (start + timedelta(days=1, minutes=1)).isoformat()
        accepted = api.post("/v1/posts", json=body, headers={"Authorization": page["key"]})
        assert accepted.status_code == 201, accepted.text


def test_lost_start_and_finish_replies_of_a_resumable_upload_publish_one_video(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    data = mp4(width=1280, height=720, mdat_bytes=3 * CHUNK)
    media_id = upload(pipeline, page, data, "twice-lost.mp4")
    lose_reply(graph, f"/{page['page_id']}/videos$", params={"upload_phase": "start"})
    lose_reply(graph, f"/{page['page_id']}/videos$", params={"upload_phase": "finish"})
    post_id = create(pipeline, page, message="started twice", video={"media_id": media_id})
    post = published(pipeline, post_id)
    shown = [v for v in videos(graph, page["page_id"]) if v["published"]]
    assert [v["id"] for v in shown] == [post.graph_post_id]
    assert shown[0]["sha256"] == sha256(data)
    # The start whose reply was lost left an empty upload no reply named, never shown.
    unseen = [v for v in videos(graph, page["page_id"]) if not v["published"]]
    assert len(unseen) == 1
    assert unseen[0]["bytes_received"] == 0
    assert len(live_posts(graph, page["page_id"])) == 1
    outcomes = [(s.kind, s.outcome) for s in steps(pipeline, post_id)]
    assert (StepKind.VIDEO_START, StepOutcome.NOT_FOUND) in outcomes
    assert [a.outcome for a in pipeline.attempts(post_id)][-1] == AttemptOutcome.RECONCILED


def test_a_hosted_reel_whose_start_reply_is_lost_is_published_once(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    data = mp4(duration_ms=20_000)
    url = files.put(f"{secrets.token_hex(4)}.mp4", data)
    lose_reply(graph, f"/{page['page_id']}/video_reels$", params={"upload_phase": "start"})
    post_id = create(pipeline, page, message="hosted reel", reel={"url": url})
    post = published(pipeline, post_id)
    reels = videos(graph, page["page_id"])
    [shown] = [v for v in reels if v["published"]]
    assert shown["id"] == post.graph_post_id
    assert shown["sha256"] == sha256(data)
    assert shown["description"] == "hosted reel"
    assert len(reels) == 2  # the lost start's empty Reel, never published


def test_one_uploaded_photo_goes_in_one_request_and_a_small_video_resumably(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    photo, video = png(), mp4(width=1920, height=1080)
    photo_post = create(
        pipeline,
        page,
        message="one photo",
        photos=[{"media_id": upload(pipeline, page, photo, "one.png")}],
    )
    video_post = create(
        pipeline,
        page,
        video={"media_id": upload(pipeline, page, video, "v.mp4"), "description": "a clip"},
    )
    published(pipeline, photo_post)
    published(pipeline, video_post)
    [shown_photo] = photos(graph, page["page_id"])
    assert shown_photo["sha256"] == sha256(photo)
    assert shown_photo["published"]
    [shown_video] = videos(graph, page["page_id"])
    assert shown_video["sha256"] == sha256(video)
    # Even a small upload goes resumably: Graph names the video before any byte is sent.
    assert shown_video["upload_session_id"] is not None
    assert sorted(p["message"] for p in live_posts(graph, page["page_id"])) == [
        "a clip",
        "one photo",
    ]
    assert steps(pipeline, photo_post) == []
    assert [s.kind for s in steps(pipeline, video_post)] == [
        StepKind.VIDEO_START,
        StepKind.VIDEO_TRANSFER,
    ]


def test_an_upload_changed_in_the_store_fails_cleanly_and_removes_what_it_made(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    good = png()
    media_id = upload(pipeline, page, good, "changed.png")
    # Someone changes the stored bytes (same length): the checksum no longer matches.
    store = make_media_store(pipeline.settings)
    store.delete(media_id)
    store.write(media_id, 0, bytes(len(good)))
    url = files.put(f"{secrets.token_hex(4)}.png", png())
    post_id = create(pipeline, page, photos=[{"url": url}, {"media_id": media_id}])
    [post] = pipeline.wait_status([post_id], {PostStatus.FAILED}, timeout_s=60)
    assert post.last_error is not None
    assert post.last_error["code"] == "media_corrupt"
    assert media_id in post.last_error["message"]
    assert live_posts(graph, page["page_id"]) == []
    # The first photo went up before the second was read: it is removed.
    [first] = photos(graph, page["page_id"])
    assert first["deleted"]


def test_a_reel_waits_while_the_page_published_30_in_a_day(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    url = files.put(f"{secrets.token_hex(4)}.mp4", mp4())
    now = datetime.now(UTC)
    oldest = now - timedelta(hours=23)
    add_reels(
        pipeline,
        page,
        url,
        [oldest + timedelta(minutes=i) for i in range(30)],
        status=PostStatus.PUBLISHED,
        published=True,
    )
    # Created through another way than the API (say, before the Page's other posts):
    # the worker's own check holds it.
    [post_id] = pipeline.add_posts(
        page["client_id"],
        page["credential_id"],
        page["page_id"],
        ["the 31st"],
        media={"reel": {"url": url}},
        media_kind="reel",
    )

    def waiting() -> Post | None:
        [post] = pipeline.posts([post_id])
        put_off = post.status is PostStatus.SCHEDULED and post.due_at > now + timedelta(minutes=30)
        return post if put_off else None

    post = wait_for(waiting, timeout_s=60, what="the Reel put off")
    assert abs((post.due_at - (oldest + timedelta(days=1))).total_seconds()) < 1
    assert post.attempts == 0
    assert pipeline.attempts(post_id) == []
    assert videos(graph, page["page_id"]) == []


def test_a_refused_final_call_that_did_publish_is_adopted_not_cleaned_up(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], files: FileServer
) -> None:
    """Graph made the feed post and answered a permanent error: before removing the
    photos (which would strip a live post), the worker looks, and adopts the post."""
    urls = [files.put(f"{secrets.token_hex(4)}.png", png()) for _ in range(2)]
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        after_effect=True,
        status=400,
        error={"code": 100, "message": "Invalid parameter"},
    )
    post_id = create(
        pipeline, page, message="made, then refused", photos=[{"url": u} for u in urls]
    )
    post = published(pipeline, post_id)
    [on_page] = live_posts(graph, page["page_id"])
    assert post.graph_post_id == on_page["id"]
    assert all(not p["deleted"] for p in photos(graph, page["page_id"]))
    assert not [s for s in steps(pipeline, post_id) if s.kind is StepKind.REMOVE]
    assert [a.outcome for a in pipeline.attempts(post_id)] == [AttemptOutcome.RECONCILED]


def test_a_finish_graph_does_not_confirm_is_looked_for_not_repeated(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    data = mp4(width=1280, height=720)
    media_id = upload(pipeline, page, data, "unconfirmed.mp4")
    graph.fault(
        path=f"/{page['page_id']}/videos$",
        method="POST",
        params={"upload_phase": "finish"},
        times=1,
        after_effect=True,
        status=200,
        body='{"success": false}',
        content_type="application/json",
    )
    post_id = create(pipeline, page, message="finished after all", video={"media_id": media_id})
    post = published(pipeline, post_id)
    [video] = videos(graph, page["page_id"])
    assert post.graph_post_id == video["id"]
    assert [a.outcome for a in pipeline.attempts(post_id)] == [
        AttemptOutcome.RETRY,
        AttemptOutcome.RECONCILED,
    ]


def test_a_retried_video_whose_upload_was_removed_starts_a_new_one(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.settings(video_chunk_bytes=CHUNK)
    data = mp4(width=1280, height=720, mdat_bytes=3 * CHUNK)
    media_id = upload(pipeline, page, data, "again.mp4")
    graph.fault(
        path=f"/{page['page_id']}/videos$",
        method="POST",
        params={"upload_phase": "finish"},
        times=1,
        status=400,
        error={"code": 100, "message": "Invalid parameter"},
    )
    post_id = create(pipeline, page, message="second time", video={"media_id": media_id})
    [failed] = pipeline.wait_status([post_id], {PostStatus.FAILED}, timeout_s=60)
    assert failed.last_error is not None
    [first] = videos(graph, page["page_id"])
    assert first["deleted"]  # the started upload was removed
    with pipeline.api() as api:
        retried = api.post(f"/v1/posts/{post_id}/retry", headers={"Authorization": page["key"]})
    assert retried.status_code == 200, retried.text
    post = published(pipeline, post_id)
    shown = [v for v in videos(graph, page["page_id"]) if v["published"]]
    assert [v["id"] for v in shown] == [post.graph_post_id]
    assert shown[0]["id"] != first["id"]
    assert shown[0]["sha256"] == sha256(data)
    kinds = [s.kind for s in steps(pipeline, post_id)]
    assert kinds.count(StepKind.VIDEO_START) == 2


def test_a_sweep_never_removes_what_a_retried_post_may_reuse(
    pipeline: Pipeline, page: dict[str, str]
) -> None:
    """The removal's step is written only while the post is still failed or canceled."""
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["retried"], due_in_s=3600
    )
    with pipeline.sessions.begin() as session:
        session.add(
            PostStep(
                post_id=post_id,
                kind=StepKind.PHOTO,
                item=0,
                outcome=StepOutcome.DONE,
                graph_id="90210",
                started_at=datetime.now(UTC),
            )
        )
    calls: list[str] = []

    class Graph:
        def delete_object(self, object_id: str, page_token: str) -> bool:
            calls.append(object_id)
            return True

    remover = Remover(pipeline.sessions, Graph(), "test", lambda: datetime.now(UTC))  # type: ignore[arg-type]
    # The post is scheduled again (an operator's retry): nothing is removed.
    ended = Post.status.in_([PostStatus.FAILED, PostStatus.CANCELED])
    assert remove_leftovers(remover, post_id, "token", while_=ended) == 0
    assert calls == []
    assert [s.kind for s in steps(pipeline, post_id)] == [StepKind.PHOTO]
    with pipeline.sessions.begin() as session:
        session.execute(update(Post).where(Post.id == post_id).values(status=PostStatus.CANCELED))
    assert remove_leftovers(remover, post_id, "token", while_=ended) == 1
    assert calls == ["90210"]

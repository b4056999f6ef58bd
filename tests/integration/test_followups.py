"""After publishing: a first comment, an edit and a deletion on Facebook, each done once.

Real processes: an ``offpost worker`` publishes, ``offpost webhooks`` carries out
the follow-ups (they never take a publish worker's slot), a dispatcher sends
both; the Graph sandbox over HTTP loses replies after the effect. After each,
Facebook shows the thing once, the post says so, and the webhook tells.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from offpost.graph.sandbox import RunningSandbox
from offpost.models import Followup, FollowupKind, FollowupStatus, PostStatus, WebhookEvent
from tests.integration.pipeline_support import Pipeline, checked_pipeline, wait_for
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """A worker, the webhooks role (follow-ups run there) and a dispatcher."""
    logs = Path(tmp_path_factory.mktemp("followup-logs"))
    with checked_pipeline(
        postgres_server_url, redis_url, sandbox_server, logs, webhooks=True
    ) as running:
        yield running


def headers(page: dict[str, str]) -> dict[str, str]:
    return {"Authorization": page["key"]}


def create(pipeline: Pipeline, page: dict[str, str], **content: Any) -> str:
    body = {"credential_id": page["credential_id"], "target": page["page_id"], **content}
    with pipeline.api() as api:
        response = api.post("/v1/posts", json=body, headers=headers(page))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def followups(pipeline: Pipeline, post_id: str) -> list[Followup]:
    with pipeline.sessions() as session:
        return list(
            session.scalars(
                select(Followup).where(Followup.post_id == post_id).order_by(Followup.created_at)
            )
        )


def settled(pipeline: Pipeline, post_id: str, kind: FollowupKind) -> Followup:
    def done() -> Followup | None:
        rows = [f for f in followups(pipeline, post_id) if f.kind is kind]
        last = rows[-1] if rows else None
        return last if last is not None and last.status is not FollowupStatus.PENDING else None

    return wait_for(done, timeout_s=60, what=f"the {kind.value} of {post_id}")


def comments(graph: SandboxClient, object_id: str) -> list[dict[str, Any]]:
    return list(graph.control("GET", f"/posts/{object_id}/comments")["data"])


def events(pipeline: Pipeline, post_id: str) -> list[str]:
    with pipeline.sessions() as session:
        rows = session.scalars(select(WebhookEvent.type).where(WebhookEvent.subject_id == post_id))
        return sorted(str(t) for t in rows)


def lose_reply(graph: SandboxClient, path: str, method: str = "POST") -> None:
    graph.fault(path=path, method=method, times=1, after_effect=True, drop_response=True)


@pytest.fixture
def hooked(pipeline: Pipeline, page: dict[str, str]) -> dict[str, str]:
    """The page's client with a webhook, so that events are recorded."""
    with pipeline.api() as api:
        put = api.put(
            "/v1/webhook", json={"url": "https://hooks.example.com/offpost"}, headers=headers(page)
        )
    assert put.status_code == 200, put.text
    return page


def test_a_first_comment_whose_reply_is_lost_is_on_the_post_once(
    pipeline: Pipeline, graph: SandboxClient, hooked: dict[str, str]
) -> None:
    page = hooked
    post_id = create(pipeline, page, message="launch", first_comment="Details: example.com")
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    assert post.graph_post_id is not None
    # A person says the same thing first; then the Page's comment is made, its reply lost.
    graph.control(
        "POST", f"/posts/{post.graph_post_id}/comments", {"message": "Details: example.com"}
    )
    lose_reply(graph, r"/comments$")
    comment = settled(pipeline, post_id, FollowupKind.COMMENT)
    assert comment.status is FollowupStatus.DONE
    on_facebook = comments(graph, post.graph_post_id)
    pages = [c for c in on_facebook if c["from"]["id"] == page["page_id"]]
    assert [c["id"] for c in pages] == [comment.graph_id]
    assert comment.attempts == 2  # the lost one, then the one that found it
    with pipeline.api() as api:
        shown = api.get(f"/v1/posts/{post_id}", headers=headers(page)).json()
    assert shown["first_comment"] == {
        "message": "Details: example.com",
        "status": "posted",
        "graph_id": comment.graph_id,
    }
    assert "post.commented" in events(pipeline, post_id)


def test_a_failed_comment_never_publishes_the_post_again(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=r"/comments$",
        method="POST",
        times=1,
        status=400,
        error={"code": 100, "message": "Invalid parameter"},
    )
    post_id = create(pipeline, page, message="comment refused", first_comment="nope")
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    comment = settled(pipeline, post_id, FollowupKind.COMMENT)
    assert comment.status is FollowupStatus.FAILED
    assert comment.last_error is not None
    assert comment.last_error["code"] == 100
    [published] = pipeline.posts([post_id])
    assert published.status is PostStatus.PUBLISHED
    assert published.first_comment_status == "failed"
    assert len(pipeline.attempts(post_id)) == 1
    assert [p["id"] for p in graph.posts(page["page_id"])] == [post.graph_post_id]


def test_an_edit_whose_reply_is_lost_changes_the_text_once(
    pipeline: Pipeline, graph: SandboxClient, hooked: dict[str, str]
) -> None:
    page = hooked
    post_id = create(pipeline, page, message="Helo")
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    lose_reply(graph, rf"/{post.graph_post_id}$")
    with pipeline.api() as api:
        answer = api.patch(f"/v1/posts/{post_id}", json={"message": "Hello"}, headers=headers(page))
        assert answer.status_code == 202, answer.text
        assert answer.json()["kind"] == "edit"
        refused = api.patch(
            f"/v1/posts/{post_id}", json={"link": "https://example.com"}, headers=headers(page)
        )
        assert refused.status_code == 409
    edit = settled(pipeline, post_id, FollowupKind.EDIT)
    assert edit.status is FollowupStatus.DONE
    [on_page] = graph.posts(page["page_id"])
    assert on_page["message"] == "Hello"
    [edited] = pipeline.posts([post_id])
    assert edited.message == "Hello"
    assert "post.edited" in events(pipeline, post_id)


def test_the_last_of_two_edits_is_what_facebook_keeps(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    post_id = create(pipeline, page, message="one")
    pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    with pipeline.api() as api:
        for text in ("two", "three"):
            answer = api.patch(
                f"/v1/posts/{post_id}", json={"message": text}, headers=headers(page)
            )
            assert answer.status_code == 202, answer.text

    def both_settled() -> list[Followup] | None:
        rows = followups(pipeline, post_id)
        return rows if all(f.status is not FollowupStatus.PENDING for f in rows) else None

    rows = wait_for(both_settled, timeout_s=60, what="both edits settled")
    assert rows[-1].status is FollowupStatus.DONE
    assert graph.posts(page["page_id"])[0]["message"] == "three"
    assert pipeline.posts([post_id])[0].message == "three"


def test_a_delete_whose_reply_is_lost_deletes_once_and_the_post_says_so(
    pipeline: Pipeline, graph: SandboxClient, hooked: dict[str, str]
) -> None:
    page = hooked
    post_id = create(pipeline, page, message="to be removed")
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    lose_reply(graph, rf"/{post.graph_post_id}$", method="DELETE")
    with pipeline.api() as api:
        answer = api.delete(f"/v1/posts/{post_id}?on_facebook=true", headers=headers(page))
        assert answer.status_code == 202, answer.text
        again = api.delete(f"/v1/posts/{post_id}?on_facebook=true", headers=headers(page))
        assert again.json()["id"] == answer.json()["id"]  # the same follow-up
    delete = settled(pipeline, post_id, FollowupKind.DELETE)
    assert delete.status is FollowupStatus.DONE
    assert delete.attempts == 2
    [gone] = graph.posts(page["page_id"])
    assert gone["deleted"]
    [deleted] = pipeline.posts([post_id])
    assert deleted.status is PostStatus.DELETED
    with pipeline.api() as api:
        done = api.delete(f"/v1/posts/{post_id}?on_facebook=true", headers=headers(page))
        assert done.status_code == 202
        assert done.json()["status"] == "done"
        edit = api.patch(f"/v1/posts/{post_id}", json={"message": "x"}, headers=headers(page))
        assert edit.status_code == 409
    assert "post.deleted" in events(pipeline, post_id)


def test_what_graph_cannot_change_is_refused_clearly(
    pipeline: Pipeline, page: dict[str, str]
) -> None:
    scheduled = create(pipeline, page, message="later", publish_at="2030-01-01T00:00:00Z")
    with pipeline.api() as api:
        not_yet = api.delete(f"/v1/posts/{scheduled}?on_facebook=true", headers=headers(page))
        assert not_yet.status_code == 409
        assert "only a published post" in not_yet.json()["detail"]
    reel = create(pipeline, page, message="a reel", reel={"url": "https://example.com/r.mp4"})
    pipeline.wait_status([reel], {PostStatus.PUBLISHED, PostStatus.FAILED})
    [post] = pipeline.posts([reel])
    if post.status is PostStatus.PUBLISHED:
        with pipeline.api() as api:
            refused = api.patch(f"/v1/posts/{reel}", json={"message": "new"}, headers=headers(page))
        assert refused.status_code == 422
        assert "reel" in json.dumps(refused.json())


def test_two_deletes_asked_at_once_delete_once_and_tell_once(
    pipeline: Pipeline, graph: SandboxClient, hooked: dict[str, str]
) -> None:
    """Two requests that each found no delete pending made one follow-up each."""
    page = hooked
    post_id = create(pipeline, page, message="deleted twice over")
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    with pipeline.sessions.begin() as session:
        session.add_all(
            [
                Followup(
                    post_id=post_id,
                    client_id=page["client_id"],
                    kind=FollowupKind.DELETE,
                    due_at=post.published_at,
                )
                for _ in range(2)
            ]
        )

    def both_done() -> list[Followup] | None:
        rows = followups(pipeline, post_id)
        return rows if all(f.status is FollowupStatus.DONE for f in rows) else None

    wait_for(both_done, timeout_s=60, what="both deletes done")
    assert pipeline.posts([post_id])[0].status is PostStatus.DELETED
    assert events(pipeline, post_id).count("post.deleted") == 1
    assert [p["deleted"] for p in graph.posts(page["page_id"])] == [True]

"""Exactly once while a post is edited, canceled or has a lookalike on its Page.

Real worker and dispatcher processes, PostgreSQL, Redis and the sandbox over
HTTP, as in ``test_publishing``. The post's first Graph call makes the post and
its reply is lost; the Page read that would settle it fails for as long as the
test needs, so the post is held in the state where its outcome is unknown:

- an edit or a cancel then answers ``409 outcome_unknown`` (with ``Retry-After``)
  and changes nothing; once the Page can be read the post is adopted with the
  text that was sent, and the Page holds that one post;
- a person's post with the same text inside the attempt's window is not adopted;
- a deleted credential turns such a post ``failed`` (``outcome_unknown``), never
  ``canceled``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from offpost.models import AttemptOutcome, Post, PostStatus
from tests.integration.pipeline_support import (
    Pipeline,
    wait_for,
)
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(180)


def lose_the_reply_and_hold_the_outcome(graph: SandboxClient, page_id: str, *, made: bool) -> None:
    """The next publish call's reply is lost (after Graph made the post if ``made``), and
    reading the Page fails until the faults are cleared: the outcome stays unknown."""
    graph.fault(
        path=f"/{page_id}/feed$", method="POST", times=1, after_effect=made, drop_response=True
    )
    graph.fault(
        path=f"/{page_id}/feed$",
        method="GET",
        times=100_000,
        status=500,
        error={"code": 2, "message": "Service temporarily unavailable", "is_transient": True},
    )


def wait_unknown(pipeline: Pipeline, post_id: str) -> Post:
    """Until the post's first attempt has ended with its outcome unknown."""

    def unknown() -> Post | None:
        [post] = pipeline.posts([post_id])
        return post if post.reconcile_since is not None else None

    return wait_for(unknown, timeout_s=40, what=f"{post_id} to owe reconciliation")


def answer_while_unknown(api: TestClient, method: str, url: str, **kwargs: Any) -> Any:
    """The API's answer to a change once the post is between attempts (not held by a worker).

    While a worker holds the post (its Page read failing), the answer is a plain
    state conflict; between attempts it is ``outcome_unknown``.
    """

    def asked() -> Any:
        response = api.request(method, url, **kwargs)
        assert response.status_code == 409, response.text
        return response if response.json()["code"] == "outcome_unknown" else None

    return wait_for(asked, timeout_s=30, what=f"{method} {url} to answer outcome_unknown")


def test_an_edit_or_cancel_while_the_outcome_is_unknown_waits_and_nothing_is_posted_twice(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    page_id, auth = page["page_id"], {"Authorization": page["key"]}
    lose_the_reply_and_hold_the_outcome(graph, page_id, made=True)
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page_id, ["Sale starts at 9"]
    )
    wait_unknown(pipeline, post_id)
    with pipeline.api() as api:
        edit = answer_while_unknown(
            api,
            "PATCH",
            f"/v1/posts/{post_id}",
            json={"message": "Sale starts at 10 (corrected)"},
            headers=auth,
        )
        assert edit.headers["content-type"].startswith("application/problem+json")
        assert "may have published it" in edit.json()["detail"]
        assert int(edit.headers["Retry-After"]) >= 1
        cancel = answer_while_unknown(api, "DELETE", f"/v1/posts/{post_id}", headers=auth)
        assert cancel.json()["code"] == "outcome_unknown"
        [held] = pipeline.posts([post_id])
        assert held.message == "Sale starts at 9"
        assert held.status != PostStatus.CANCELED

        graph.control("DELETE", "/faults")  # the Page can be read again
        [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
        on_page = graph.posts(page_id)
        assert [p["message"] for p in on_page] == ["Sale starts at 9"]
        assert post.graph_post_id == on_page[0]["id"]
        assert post.message == "Sale starts at 9"
        assert [a.outcome for a in pipeline.attempts(post_id)][-1] == AttemptOutcome.RECONCILED

        # Now that it is known, the answers are the ordinary ones for a published post:
        # its text goes to Facebook as an edit, and it cannot be canceled any more.
        late = api.patch(f"/v1/posts/{post_id}", json={"message": "too late"}, headers=auth)
        assert (late.status_code, late.json()["kind"]) == (202, "edit")
        gone = api.delete(f"/v1/posts/{post_id}", headers=auth)
        assert (gone.status_code, gone.json()["code"]) == (409, "conflict")


def test_an_unknown_attempt_that_made_nothing_is_published_once_after_the_read(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    page_id = page["page_id"]
    lose_the_reply_and_hold_the_outcome(graph, page_id, made=False)
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page_id, ["lost before Graph acted"]
    )
    wait_unknown(pipeline, post_id)
    assert graph.posts(page_id) == []
    graph.control("DELETE", "/faults")
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    on_page = graph.posts(page_id)
    assert [p["message"] for p in on_page] == ["lost before Graph acted"]
    assert post.graph_post_id == on_page[0]["id"]
    assert [a.outcome for a in pipeline.attempts(post_id)][-1] == AttemptOutcome.PUBLISHED


@pytest.fixture
def without_duplicate_detection(graph: SandboxClient) -> Iterator[None]:
    graph.control("POST", "/settings", {"duplicate_detection": False})
    yield
    graph.control("POST", "/settings", {"duplicate_detection": True})


def person_posts_the_same_text_meanwhile(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str], text: str
) -> tuple[str, dict[str, Any]]:
    """Our post's outcome is unknown (Graph made nothing) when a Page admin posts the very
    same text in Facebook's own interface; then the Page can be read again."""
    page_id = page["page_id"]
    lose_the_reply_and_hold_the_outcome(graph, page_id, made=False)
    [post_id] = pipeline.add_posts(page["client_id"], page["credential_id"], page_id, [text])
    wait_unknown(pipeline, post_id)
    person = graph.control("POST", f"/pages/{page_id}/posts", {"message": text})
    assert "application" not in person
    graph.control("DELETE", "/faults")
    return post_id, person


@pytest.mark.usefixtures("without_duplicate_detection")
def test_a_persons_identical_post_inside_the_window_is_not_adopted(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    text = "Doors open at 8"
    post_id, person = person_posts_the_same_text_meanwhile(pipeline, graph, page, text)
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    on_page = graph.posts(page["page_id"])
    assert [p["message"] for p in on_page] == [text, text]
    assert post.graph_post_id != person["id"]
    assert post.graph_post_id == on_page[1]["id"]
    assert on_page[1]["application"]["id"] == pipeline.settings.app_id
    assert [a.outcome for a in pipeline.attempts(post_id)][-1] == AttemptOutcome.PUBLISHED


def test_a_persons_identical_post_is_not_adopted_when_graph_refuses_the_duplicate(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    """Graph refuses a text identical to the Page's newest post: the post fails with
    Graph's error, and is still never taken to be the person's post."""
    text = "Doors open at 9"
    post_id, person = person_posts_the_same_text_meanwhile(pipeline, graph, page, text)
    [post] = pipeline.wait_status([post_id], {PostStatus.FAILED, PostStatus.PUBLISHED}, 60)
    assert post.status == PostStatus.FAILED
    assert post.graph_post_id is None
    assert post.last_error is not None
    assert post.last_error["code"] == 506, post.last_error
    outcomes = [a.outcome for a in pipeline.attempts(post_id)]
    assert AttemptOutcome.RECONCILED not in outcomes
    assert [p["id"] for p in graph.posts(page["page_id"])] == [person["id"]]


def test_deleting_the_credential_fails_a_post_of_unknown_outcome_instead_of_canceling_it(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    page_id, auth = page["page_id"], {"Authorization": page["key"]}
    lose_the_reply_and_hold_the_outcome(graph, page_id, made=True)
    doubtful, plain = pipeline.add_posts(
        page["client_id"], page["credential_id"], page_id, ["maybe live"]
    ) + pipeline.add_posts(
        page["client_id"], page["credential_id"], page_id, ["not yet"], due_in_s=3600
    )
    wait_unknown(pipeline, doubtful)

    with pipeline.api() as api:
        response = api.delete(f"/v1/credentials/{page['credential_id']}", headers=auth)
    assert response.status_code in (200, 204), response.text
    final = pipeline.wait_status([doubtful], {PostStatus.FAILED, PostStatus.PUBLISHED})
    by_id = {p.id: p for p in pipeline.posts([doubtful, plain])}
    assert by_id[plain].status == PostStatus.CANCELED
    assert final[0].status == PostStatus.FAILED
    assert final[0].last_error is not None
    assert final[0].last_error["code"] == "outcome_unknown"

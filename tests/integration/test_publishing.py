"""Posts published exactly once by real workers: PostgreSQL, Redis, Celery, the sandbox over HTTP.

One dispatcher and one worker process serve the whole module; each test uses
its own sandbox user and Page, so their posts never mix.
"""

from __future__ import annotations

import logging
import signal
from datetime import timedelta

import pytest

from offpost.models import AttemptOutcome, CredentialStatus, PostStatus
from offpost.models.credential import Credential
from tests.integration.pipeline_support import (
    Pipeline,
    wait_for,
)
from tests.integration.sandbox_support import SandboxClient

logger = logging.getLogger(__name__)
pytestmark = pytest.mark.timeout(180)


def test_post_due_soon_is_published_once_not_early(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    [post_id] = pipeline.add_posts(
        page["client_id"],
        page["credential_id"],
        page["page_id"],
        ["due in three seconds"],
        due_in_s=3,
    )
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    assert post.published_at is not None
    assert post.published_at >= post.publish_at
    logger.info("lateness %.3f s", (post.published_at - post.publish_at).total_seconds())
    on_page = graph.posts(page["page_id"])
    assert [p["message"] for p in on_page] == ["due in three seconds"]
    assert post.graph_post_id == on_page[0]["id"]
    assert post.attempts == 1
    assert [a.outcome for a in pipeline.attempts(post_id)] == [AttemptOutcome.PUBLISHED]


def test_two_server_errors_then_success(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=2,
        status=500,
        error={
            "code": 2,
            "message": "An unexpected error has occurred. Please retry your request later.",
            "is_transient": True,
        },
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["third time lucky"]
    )
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    assert post.attempts == 3
    attempts = pipeline.attempts(post_id)
    assert [a.outcome for a in attempts] == [
        AttemptOutcome.RETRY,
        AttemptOutcome.RETRY,
        AttemptOutcome.PUBLISHED,
    ]
    assert attempts[0].error_code == "2"
    assert attempts[0].http_status == 500
    assert len(graph.posts(page["page_id"])) == 1


def test_lost_reply_is_reconciled_not_republished(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        after_effect=True,
        drop_response=True,
    )
    [post_id] = pipeline.add_posts(
        page["client_id"],
        page["credential_id"],
        page["page_id"],
        ["published although the reply was lost"],
    )
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    on_page = graph.posts(page["page_id"])
    assert len(on_page) == 1
    assert post.graph_post_id == on_page[0]["id"]
    outcomes = [a.outcome for a in pipeline.attempts(post_id)]
    assert outcomes == [AttemptOutcome.RETRY, AttemptOutcome.RECONCILED]
    assert post.attempts == 1  # adopting costs no attempt


def test_error_reply_after_the_effect_is_reconciled(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        after_effect=True,
        status=500,
        error={"code": 1, "message": "An unknown error has occurred."},
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["code 1 but created"]
    )
    pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    assert len(graph.posts(page["page_id"])) == 1
    assert [a.outcome for a in pipeline.attempts(post_id)][-1] == AttemptOutcome.RECONCILED


def test_password_change_parks_posts_until_a_fresh_token(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.control("POST", f"/users/{page['user_id']}/invalidate", {"reason": "password_changed"})
    ids = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["parked one"]
    )
    later = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["parked two"], due_in_s=3600
    )
    [post] = pipeline.wait_status(ids, {PostStatus.NEEDS_REAUTH})
    assert post.last_error is not None
    assert post.last_error["code"] == 190
    assert post.last_error["subcode"] == 460
    assert pipeline.posts(later)[0].status == PostStatus.NEEDS_REAUTH
    with pipeline.sessions() as session:
        assert (
            session.get(Credential, page["credential_id"]).status == CredentialStatus.NEEDS_REAUTH
        )  # type: ignore[union-attr]
    assert graph.posts(page["page_id"]) == []

    # The user opens the app again; the client hands offpost the fresh token.
    fresh = graph.control("POST", f"/users/{page['user_id']}/tokens")
    with pipeline.api() as api:
        pipeline.credential(api, {"Authorization": page["key"]}, fresh)
    [post] = pipeline.wait_status(ids, {PostStatus.PUBLISHED})
    assert pipeline.posts(later)[0].status == PostStatus.SCHEDULED
    assert [p["message"] for p in graph.posts(page["page_id"])] == ["parked one"]


def test_stale_page_token_is_rederived_once(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        status=400,
        error={
            "code": 190,
            "message": "Error validating access token: The session is invalid.",
            "type": "OAuthException",
            "error_subcode": 467,
        },
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["after a fresh Page token"]
    )
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    assert post.attempts == 1  # the re-derivation costs no attempt
    outcomes = [a.outcome for a in pipeline.attempts(post_id)]
    assert outcomes == [AttemptOutcome.RETRY, AttemptOutcome.PUBLISHED]


def test_policy_block_fails_with_the_reason(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        status=400,
        error={
            "code": 368,
            "error_subcode": 1346003,
            "message": "The action attempted has been deemed abusive or is otherwise disallowed",
        },
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["blocked by policy"]
    )
    [post] = pipeline.wait_status([post_id], {PostStatus.FAILED})
    assert post.last_error is not None
    assert post.last_error["code"] == 368
    assert "deemed abusive" in post.last_error["message"]
    assert graph.posts(page["page_id"]) == []
    assert [a.outcome for a in pipeline.attempts(post_id)] == [AttemptOutcome.FAILED]


def test_rate_limit_waits_without_burning_attempts(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        status=400,
        headers={"Retry-After": "2"},
        error={"code": 32, "message": "(#32) Page request limit reached"},
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["after the wait"]
    )
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED})
    assert post.attempts == 1
    attempts = pipeline.attempts(post_id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.RETRY, AttemptOutcome.PUBLISHED]
    assert attempts[0].error_code == "32"
    waited = attempts[1].started_at - attempts[0].started_at
    assert waited >= timedelta(seconds=1.5)


def test_worker_sigterm_leaves_nothing_publishing(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    # Slow replies keep posts in flight while the worker is told to stop.
    graph.fault(path=f"/{page['page_id']}/feed$", method="POST", times=5, latency_ms=1500)
    ids = pipeline.add_posts(
        page["client_id"],
        page["credential_id"],
        page["page_id"],
        [f"graceful {i}" for i in range(5)],
    )
    wait_for(
        lambda: any(p.status == PostStatus.PUBLISHING for p in pipeline.posts(ids)),
        timeout_s=20,
        interval_s=0.05,
        what="a post in flight",
    )
    assert pipeline.stop("worker") == 0
    # Warm shutdown finishes what it started: nothing is left publishing.
    assert not [p for p in pipeline.posts(ids) if p.status == PostStatus.PUBLISHING]
    pipeline.start_worker()
    pipeline.wait_status(ids, {PostStatus.PUBLISHED})
    assert sorted(p["message"] for p in graph.posts(page["page_id"])) == sorted(
        f"graceful {i}" for i in range(5)
    )


def test_worker_killed_mid_publish_is_reconciled(
    pipeline: Pipeline, graph: SandboxClient, page: dict[str, str]
) -> None:
    graph.fault(
        path=f"/{page['page_id']}/feed$",
        method="POST",
        times=1,
        latency_ms=2000,
        after_effect=False,
    )
    [post_id] = pipeline.add_posts(
        page["client_id"], page["credential_id"], page["page_id"], ["killed in flight"]
    )
    wait_for(
        lambda: pipeline.posts([post_id])[0].status == PostStatus.PUBLISHING,
        timeout_s=20,
        interval_s=0.02,
        what="the post in flight",
    )
    pipeline.kill("worker", signal.SIGKILL)
    pipeline.start_worker()
    [post] = pipeline.wait_status([post_id], {PostStatus.PUBLISHED}, timeout_s=60)
    assert len(graph.posts(page["page_id"])) == 1
    assert post.graph_post_id == graph.posts(page["page_id"])[0]["id"]

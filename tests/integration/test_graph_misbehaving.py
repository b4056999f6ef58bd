"""Graph misbehaving under the real pipeline: no crashed worker, no lost or duplicated post.

One ``offpost worker`` and one ``offpost dispatcher`` process serve the module
(PostgreSQL, Redis, the sandbox over HTTP, a 3 s Graph timeout). Each case
below gets its own sandbox user and Page, and a fault on its Page's calls:
timeouts before and after Graph made the post (and one where Graph makes it
only after offpost gave up), TCP resets before and after, a
reply cut off under its Content-Length, a body that is not JSON, a proxy's
HTML page, 200s carrying error envelopes, absurd usage headers, a slow-drip
reply, and a reconciliation read that itself gets an HTML page. All the posts
fall due together. Afterwards each Page holds exactly the posts it should
(once each), each post's attempts show how its fault was classified, every
error offpost recorded is a clear sentence without secrets, and the worker
that lived through all of it is the same process, still publishing.

The faults are on each publish's own request and reply, so the module's worker
sends every publish in a request of its own (``OFFPOST_GRAPH_BATCH=false``).
Inside a batch request, a call's misbehaviour is its answer in the batch's reply;
test_publishing_batch.py covers those, and the batch request's own lost reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from offpost.graph.sandbox import RunningSandbox
from offpost.models import AttemptOutcome, PostStatus
from tests.integration.pipeline_support import (
    Pipeline,
    checked_pipeline,
    new_client,
    wait_for,
)
from tests.integration.sandbox_support import SandboxClient

pytestmark = pytest.mark.timeout(150)

GRAPH_TIMEOUT_S = 3  # FAST_TIMINGS
PROXY_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><center>nginx</center></body></html>"
)
RETRY, PUBLISHED, RECONCILED, FAILED = (
    AttemptOutcome.RETRY,
    AttemptOutcome.PUBLISHED,
    AttemptOutcome.RECONCILED,
    AttemptOutcome.FAILED,
)


@pytest.fixture(scope="module")
def pipeline(
    postgres_server_url: str,
    redis_url: str,
    sandbox_server: RunningSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The module's worker and dispatcher, each publish in a request of its own."""
    logs = Path(tmp_path_factory.mktemp("pipeline-logs"))
    with checked_pipeline(
        postgres_server_url, redis_url, sandbox_server, logs, OFFPOST_GRAPH_BATCH="false"
    ) as running:
        yield running


@dataclass
class Case:
    """One misbehaviour on one Page, and what must come of it."""

    name: str
    #: Faults on this Page's feed; ``path`` and ``method`` are filled in.
    faults: list[dict[str, Any]]
    outcomes: list[AttemptOutcome]
    #: The first attempt's error code as recorded (Graph's, or offpost's word).
    first_code: str | None
    #: A phrase the first attempt's message must hold.
    phrase: str
    status: PostStatus = PostStatus.PUBLISHED
    #: Posts that follow the faulted one on the same Page (due a little later).
    followers: int = 0
    page: dict[str, str] = field(default_factory=dict)
    post_ids: list[str] = field(default_factory=list)


def publish_fault(**fault: Any) -> dict[str, Any]:
    return {"method": "POST", **fault}


CASES = [
    Case(
        "timeout after the effect",
        [publish_fault(latency_ms=(GRAPH_TIMEOUT_S + 2) * 1000, after_effect=True)],
        [RETRY, RECONCILED],
        "timeout",
        f"did not answer POST /{{page}}/feed within {GRAPH_TIMEOUT_S} s",
    ),
    Case(
        # Graph makes the post 2 s after offpost stopped waiting: the retry must
        # not read the Page before then, or it would publish a second time.
        "timeout, and the post made after offpost gave up",
        [publish_fault(latency_ms=(GRAPH_TIMEOUT_S + 2) * 1000)],
        [RETRY, RECONCILED],
        "timeout",
        f"did not answer POST /{{page}}/feed within {GRAPH_TIMEOUT_S} s",
    ),
    Case(
        "timeout without an effect",
        [publish_fault(latency_ms=(GRAPH_TIMEOUT_S + 1) * 1000, status=500)],
        [RETRY, PUBLISHED],
        "timeout",
        "Graph may have acted on it",
    ),
    Case(
        "reset before the effect",
        [publish_fault(reset_connection=True)],
        [RETRY, PUBLISHED],
        "connection_error",
        "reset",
    ),
    Case(
        "reset after the effect",
        [publish_fault(reset_connection=True, after_effect=True)],
        [RETRY, RECONCILED],
        "connection_error",
        "reset",
    ),
    Case(
        "reply cut off",
        [publish_fault(truncate_bytes=12)],
        [RETRY, RECONCILED],
        "malformed_response",
        "was cut off after 12 bytes",
    ),
    Case(
        "200 that is not JSON",
        [publish_fault(body="OK", after_effect=True)],
        [RETRY, RECONCILED],
        "malformed_response",
        "with HTTP 200 and a body that is not JSON",
    ),
    Case(
        "cut JSON",
        [publish_fault(body='{"id": "12', content_type="application/json", after_effect=True)],
        [RETRY, RECONCILED],
        "malformed_response",
        "cut off or invalid",
    ),
    Case(
        "HTML error page",
        [publish_fault(status=502, body=PROXY_PAGE, content_type="text/html")],
        [RETRY, PUBLISHED],
        "malformed_response",
        'an HTML page titled "502 Bad Gateway"',
    ),
    Case(
        "200 with a transient error envelope",
        [publish_fault(status=200, error={"code": 2, "is_transient": True}, after_effect=True)],
        [RETRY, RECONCILED],
        "2",
        "unexpected error",
    ),
    Case(
        "200 with a permanent error envelope",
        [publish_fault(status=200, error={"code": 100, "message": "(#100) Invalid parameter"})],
        [FAILED],
        "100",
        "(#100) Invalid parameter",
        status=PostStatus.FAILED,
    ),
    Case(
        "absurd usage headers",
        [
            publish_fault(
                headers={
                    "X-App-Usage": "<html>not json</html>",
                    "X-Page-Usage": (
                        '{"call_count": -40, "total_time": "lots", "total_cputime": []}'
                    ),
                    "X-Business-Use-Case-Usage": (
                        '{"{page}": [{"type": "pages", "call_count": 1000000000000, '
                        '"total_time": 1e300, "estimated_time_to_regain_access": 1e15}]}'
                    ),
                    "X-Ad-Account-Usage": "x" * 40_000,
                }
            )
        ],
        [PUBLISHED],
        None,
        "",
        followers=2,
    ),
    Case(
        "slow-drip reply",
        [publish_fault(drip_ms=700, drip_bytes=2)],
        [RETRY, RECONCILED],
        "timeout",
        f"was still arriving after {GRAPH_TIMEOUT_S} s",
    ),
    Case(
        "lost reply, then an HTML page on the reconciliation read",
        [
            publish_fault(drop_response=True, after_effect=True),
            {"method": "GET", "status": 503, "body": PROXY_PAGE, "content_type": "text/html"},
        ],
        [RETRY, RECONCILED],
        "connection_error",
        "without replying",
    ),
]


def for_page(fault: dict[str, Any], page_id: str) -> dict[str, Any]:
    """The fault with ``{page}`` in its texts and headers made this Page's id."""
    shown: dict[str, Any] = {}
    for name, value in fault.items():
        if isinstance(value, str):
            shown[name] = value.replace("{page}", page_id)
        elif name == "headers":
            shown[name] = {k: str(v).replace("{page}", page_id) for k, v in value.items()}
        else:
            shown[name] = value
    return shown


def assert_clear(message: str | None, secrets: tuple[str, ...]) -> None:
    """A sentence a person can act on, holding no token or secret."""
    assert message, "an error without a message"
    assert len(message) >= 20, message
    assert " " in message, message
    assert message[0].isalpha() or message.startswith("(#"), message
    for secret in (*secrets, "EAA", "access_token", "appsecret_proof"):
        assert secret not in message, message


def test_no_crash_no_loss_no_duplicate_and_clear_errors(
    pipeline: Pipeline, graph: SandboxClient, sandbox_server: RunningSandbox
) -> None:
    client_id, key = new_client(pipeline, "misbehaving")
    worker = pipeline.procs["worker"]
    secrets = (sandbox_server.app_secret,)
    with pipeline.api() as api:
        for case in CASES:
            user = graph.mint_user(pages=1)
            credential_id = pipeline.credential(api, key, user)
            page_id = user["pages"][0]["id"]
            case.page = {"credential_id": credential_id, "page_id": page_id}
            for fault in case.faults:
                graph.fault(path=f"/{page_id}/feed$", times=1, **for_page(fault, page_id))
            case.post_ids = pipeline.add_posts(
                client_id, credential_id, page_id, [f"{case.name}: the post"], due_in_s=1
            )
            case.post_ids += pipeline.add_posts(
                client_id,
                credential_id,
                page_id,
                [f"{case.name}: follower {n}" for n in range(case.followers)],
                due_in_s=4,
            )

    every = [post_id for case in CASES for post_id in case.post_ids]
    seen_errors: dict[str, dict[str, Any]] = {}

    def all_settled() -> bool:
        posts = pipeline.posts(every)
        for post in posts:
            if post.last_error is not None:
                seen_errors[f"{post.id}:{post.last_error.get('message')}"] = post.last_error
        return all(p.status in (PostStatus.PUBLISHED, PostStatus.FAILED) for p in posts)

    wait_for(all_settled, timeout_s=90, interval_s=0.1, what="every post published or failed")

    # The worker lived through every case: same process, and it still publishes.
    assert worker.poll() is None
    assert pipeline.procs["worker"].pid == worker.pid
    canary_user = graph.mint_user(pages=1)
    with pipeline.api() as api:
        canary_credential = pipeline.credential(api, key, canary_user)
    canary_page = canary_user["pages"][0]["id"]
    canary = pipeline.add_posts(client_id, canary_credential, canary_page, ["canary"])
    pipeline.wait_status(canary, {PostStatus.PUBLISHED})
    assert worker.poll() is None

    posts = {post.id: post for post in pipeline.posts(every)}
    for case in CASES:
        page_id = case.page["page_id"]
        first, *followers = (posts[i] for i in case.post_ids)
        on_page = graph.posts(page_id)
        expected = [str(p.message) for p in (first, *followers) if p.status == PostStatus.PUBLISHED]
        # Nothing lost, nothing twice.
        assert sorted(p["message"] for p in on_page) == sorted(expected), case.name
        assert first.status == case.status, (case.name, first.status, first.last_error)
        assert all(f.status == PostStatus.PUBLISHED for f in followers), case.name
        if case.status == PostStatus.PUBLISHED:
            assert first.graph_post_id in {p["id"] for p in on_page}, case.name
            assert first.last_error is None

        attempts = pipeline.attempts(first.id)
        assert [a.outcome for a in attempts] == case.outcomes, case.name
        listed = api_attempts(pipeline, key, first.id)
        assert [a["outcome"] for a in listed] == [o.value for o in case.outcomes], case.name
        if case.first_code is None:
            assert attempts[0].error_code is None, case.name
            continue
        assert attempts[0].error_code == case.first_code, case.name
        assert case.phrase.replace("{page}", page_id) in (attempts[0].error_message or ""), (
            case.name,
            attempts[0].error_message,
        )
        assert_clear(attempts[0].error_message, secrets)
        error = listed[0]["error"]
        assert str(error["code"]) == case.first_code, case.name
        assert error["message"] == attempts[0].error_message
        if case.status == PostStatus.FAILED:
            assert first.last_error is not None
            assert first.last_error["code"] == int(case.first_code)
            assert_clear(first.last_error["message"], secrets)

    # Each fault struck (none is left over), so each case really ran.
    assert graph.control("GET", "/faults")["data"] == []
    # Every last_error seen while posts were retried was clear too.
    for document in seen_errors.values():
        assert document.get("code") is not None
        assert_clear(document.get("message"), secrets)

    log = pipeline.log_text()
    assert "Graph sent unusable usage headers" in log
    assert "not json</html>" not in log  # the warning names headers, not their values
    assert sandbox_server.app_secret not in log
    assert "Traceback" not in log
    assert "publish_crashed" not in log
    assert "failed unexpectedly" not in log


def api_attempts(pipeline: Pipeline, key: dict[str, str], post_id: str) -> list[dict[str, Any]]:
    with pipeline.api() as api:
        response = api.get(f"/v1/posts/{post_id}/attempts", headers=key)
    assert response.status_code == 200, response.text
    attempts: list[dict[str, Any]] = response.json()["attempts"]
    return attempts

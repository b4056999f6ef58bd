"""Injected faults over HTTP: errors, latency, lost replies before and after the effect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from offpost.graph.sandbox import RunningSandbox, running_sandbox
from tests.integration.sandbox_support import SandboxClient, error_of, sandbox_client


@pytest.fixture(scope="module")
def server() -> Iterator[RunningSandbox]:
    with running_sandbox() as running:
        yield running


@pytest.fixture
def sandbox(server: RunningSandbox) -> Iterator[SandboxClient]:
    with sandbox_client(server) as client:
        yield client


def test_error_fault_answers_as_told_then_counts_down(sandbox: SandboxClient) -> None:
    page_id, page_token, _ = sandbox.publisher()
    sandbox.fault(path=r"/feed$", method="POST", times=2, status=500, error={"code": 2})

    for attempt in range(2):
        failed = sandbox.post(f"/{page_id}/feed", page_token, message=f"try {attempt}")
        assert failed.status_code == 500
        error = error_of(failed)
        assert (error["code"], error["type"]) == (2, "OAuthException")
        assert error["is_transient"] is True
    assert sandbox.posts(page_id) == []
    assert sandbox.post(f"/{page_id}/feed", page_token, message="third").status_code == 200
    assert sandbox.control("GET", "/faults")["data"] == []


def test_fault_with_only_an_error_takes_the_status_of_its_code(sandbox: SandboxClient) -> None:
    token = sandbox.mint_user()["access_token"]
    sandbox.fault(
        path="/me$", error={"message": "(#4) Application request limit reached", "code": 4}
    )
    response = sandbox.get("/me", token)
    assert response.status_code == 400
    assert error_of(response)["code"] == 4
    assert "x-app-usage" in response.headers


def test_fault_method_filter_and_clear(sandbox: SandboxClient) -> None:
    token = sandbox.mint_user()["access_token"]
    sandbox.fault(path="/me", method="POST", status=500)
    assert sandbox.get("/me", token).status_code == 200
    assert sandbox.control("DELETE", "/faults") == {"cleared": 1}


def test_after_effect_error_creates_the_post_but_fails_the_reply(sandbox: SandboxClient) -> None:
    page_id, page_token, _ = sandbox.publisher()
    sandbox.fault(path=r"/\d+/feed$", status=500, error={"code": 2}, after_effect=True)
    response = sandbox.post(f"/{page_id}/feed", page_token, message="lost reply")
    assert response.status_code == 500
    assert [post["message"] for post in sandbox.posts(page_id)] == ["lost reply"]


@pytest.mark.parametrize("after_effect", [False, True])
def test_drop_response_closes_the_connection(sandbox: SandboxClient, after_effect: bool) -> None:
    page_id, page_token, _ = sandbox.publisher()
    sandbox.fault(path="/feed", drop_response=True, after_effect=after_effect)
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.post(f"/{page_id}/feed", page_token, message="dropped")
    assert len(sandbox.posts(page_id)) == (1 if after_effect else 0)
    last_call = sandbox.control("GET", "/calls")["data"][-1]
    assert (last_call["status"], last_call["dropped"]) == (None, True)
    # The sandbox keeps serving on new connections.
    assert sandbox.post(f"/{page_id}/feed", page_token, message="next").status_code == 200


def test_latency_fault_only_slows_the_call(sandbox: SandboxClient) -> None:
    token = sandbox.mint_user()["access_token"]
    sandbox.fault(path="/me$", latency_ms=200)
    started = time.perf_counter()
    assert sandbox.get("/me", token).status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_latency_does_not_block_other_calls(sandbox: SandboxClient) -> None:
    """Fifty concurrent publishes with 300 ms latency each finish together, not one by one."""
    page_id, page_token, _ = sandbox.publisher()
    sandbox.settings(publish_latency_ms=300)

    async def publish_all() -> list[int]:
        async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        f"/v26.0/{page_id}/feed",
                        data={
                            "message": f"post {n}",
                            "access_token": page_token,
                            **sandbox.proof(page_token),
                        },
                    )
                    for n in range(50)
                )
            )
        return [reply.status_code for reply in replies]

    started = time.perf_counter()
    statuses = asyncio.run(publish_all())
    elapsed = time.perf_counter() - started
    assert statuses == [200] * 50
    assert 0.3 <= elapsed < 3
    assert len(sandbox.posts(page_id)) == 50


def test_fault_headers_reach_the_reply(sandbox: SandboxClient) -> None:
    page_id, page_token, _ = sandbox.publisher()
    sandbox.fault(
        path=r"/feed$",
        method="POST",
        status=400,
        headers={"Retry-After": "7"},
        error={"code": 32, "message": "(#32) Page request limit reached"},
    )
    response = sandbox.post(f"/{page_id}/feed", page_token, message="throttled")
    assert response.status_code == 400
    assert response.headers["retry-after"] == "7"
    assert error_of(response)["code"] == 32


def test_fault_probability_strikes_a_share_of_calls(sandbox: SandboxClient) -> None:
    token = sandbox.mint_user()["access_token"]
    sandbox.fault(path="/me$", times=1000, status=500, error={"code": 1}, probability=0.3)
    statuses = [sandbox.get("/me", token).status_code for _ in range(200)]
    failed = statuses.count(500)
    assert 25 <= failed <= 100, failed  # 60 expected; bounds far outside chance
    assert set(statuses) == {200, 500}
    [left] = sandbox.control("GET", "/faults")["data"]
    assert left["times"] == 1000 - failed

"""Injected faults over HTTP: errors, latency, lost replies before and after the effect."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration.sandbox_support import SandboxClient, error_of


def test_error_fault_answers_as_told_then_counts_down(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path=r"/feed$", method="POST", times=2, status=500, error={"code": 2})

    for attempt in range(2):
        failed = graph.post(f"/{page_id}/feed", page_token, message=f"try {attempt}")
        assert failed.status_code == 500
        error = error_of(failed)
        assert (error["code"], error["type"]) == (2, "OAuthException")
        assert error["is_transient"] is True
    assert graph.posts(page_id) == []
    assert graph.post(f"/{page_id}/feed", page_token, message="third").status_code == 200
    assert graph.control("GET", "/faults")["data"] == []


def test_fault_with_only_an_error_takes_the_status_of_its_code(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    graph.fault(path="/me$", error={"message": "(#4) Application request limit reached", "code": 4})
    response = graph.get("/me", token)
    assert response.status_code == 400
    assert error_of(response)["code"] == 4
    assert "x-app-usage" in response.headers


def test_fault_method_filter_and_clear(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    graph.fault(path="/me", method="POST", status=500)
    assert graph.get("/me", token).status_code == 200
    assert graph.control("DELETE", "/faults") == {"cleared": 1}


def test_after_effect_error_creates_the_post_but_fails_the_reply(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path=r"/\d+/feed$", status=500, error={"code": 2}, after_effect=True)
    response = graph.post(f"/{page_id}/feed", page_token, message="lost reply")
    assert response.status_code == 500
    assert [post["message"] for post in graph.posts(page_id)] == ["lost reply"]


@pytest.mark.parametrize("after_effect", [False, True])
def test_drop_response_closes_the_connection(graph: SandboxClient, after_effect: bool) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed", drop_response=True, after_effect=after_effect)
    with pytest.raises(httpx.RemoteProtocolError):
        graph.post(f"/{page_id}/feed", page_token, message="dropped")
    assert len(graph.posts(page_id)) == (1 if after_effect else 0)
    last_call = graph.control("GET", "/calls")["data"][-1]
    assert (last_call["status"], last_call["dropped"]) == (None, True)
    # The sandbox keeps serving on new connections.
    assert graph.post(f"/{page_id}/feed", page_token, message="next").status_code == 200


def test_latency_fault_only_slows_the_call(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    graph.fault(path="/me$", latency_ms=200)
    started = time.perf_counter()
    assert graph.get("/me", token).status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_latency_does_not_block_other_calls(graph: SandboxClient) -> None:
    """Fifty concurrent publishes with 300 ms latency each finish together, not one by one."""
    page_id, page_token, _ = graph.publisher()
    graph.settings(publish_latency_ms=300)

    async def publish_all() -> list[int]:
        async with httpx.AsyncClient(base_url=graph.url, timeout=10) as client:
            replies = await asyncio.gather(
                *(
                    client.post(
                        f"/v26.0/{page_id}/feed",
                        data={
                            "message": f"post {n}",
                            "access_token": page_token,
                            **graph.proof(page_token),
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
    assert len(graph.posts(page_id)) == 50


def test_fault_headers_reach_the_reply(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(
        path=r"/feed$",
        method="POST",
        status=400,
        headers={"Retry-After": "7"},
        error={"code": 32, "message": "(#32) Page request limit reached"},
    )
    response = graph.post(f"/{page_id}/feed", page_token, message="throttled")
    assert response.status_code == 400
    assert response.headers["retry-after"] == "7"
    assert error_of(response)["code"] == 32


def test_fault_probability_strikes_a_share_of_calls(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    graph.fault(path="/me$", times=1000, status=500, error={"code": 1}, probability=0.3)
    statuses = [graph.get("/me", token).status_code for _ in range(200)]
    failed = statuses.count(500)
    assert 25 <= failed <= 100, failed  # 60 expected; bounds far outside chance
    assert set(statuses) == {200, 500}
    [left] = graph.control("GET", "/faults")["data"]
    assert left["times"] == 1000 - failed


# -- misbehaving replies: resets, cut-off and trickled bodies, foreign bodies, headers --


@pytest.mark.parametrize("after_effect", [False, True])
def test_reset_connection_sends_a_tcp_reset(graph: SandboxClient, after_effect: bool) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed$", method="POST", reset_connection=True, after_effect=after_effect)
    with pytest.raises(httpx.ReadError, match="reset"):
        graph.post(f"/{page_id}/feed", page_token, message="reset")
    assert len(graph.posts(page_id)) == (1 if after_effect else 0)
    assert graph.control("GET", "/calls")["data"][-1]["dropped"] is True
    assert graph.post(f"/{page_id}/feed", page_token, message="next").status_code == 200


def test_truncated_reply_is_cut_under_a_full_content_length(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed$", method="POST", truncate_bytes=9)
    with pytest.raises(httpx.RemoteProtocolError, match="received 9 bytes"):
        graph.post(f"/{page_id}/feed", page_token, message="cut off")
    # The call ran: only its reply was cut.
    assert [p["message"] for p in graph.posts(page_id)] == ["cut off"]


def test_body_fault_answers_a_proxy_page(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    graph.fault(path="/feed$", method="POST", status=502, body=page, content_type="text/html")
    response = graph.post(f"/{page_id}/feed", page_token, message="behind a proxy")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == page
    assert graph.posts(page_id) == []


def test_body_fault_after_the_effect_defaults_to_200_text(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed$", method="POST", body="OK", after_effect=True)
    response = graph.post(f"/{page_id}/feed", page_token, message="not json")
    assert (response.status_code, response.text) == (200, "OK")
    assert response.headers["content-type"].startswith("text/plain")
    assert len(graph.posts(page_id)) == 1


def test_error_envelope_with_status_200(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed$", method="POST", status=200, error={"code": 1}, after_effect=True)
    response = graph.post(f"/{page_id}/feed", page_token, message="200 but an error")
    assert response.status_code == 200
    assert error_of(response)["code"] == 1
    assert len(graph.posts(page_id)) == 1


def test_headers_fault_replaces_usage_headers_of_a_good_reply(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    huge = "9" * 12_000
    graph.fault(
        path="/feed$",
        method="POST",
        headers={"X-Business-Use-Case-Usage": "not json", "X-Page-Usage": huge},
    )
    response = graph.post(f"/{page_id}/feed", page_token, message="absurd usage")
    assert response.status_code == 200
    assert response.json()["id"].startswith(f"{page_id}_")
    assert response.headers.get_list("x-business-use-case-usage") == ["not json"]
    assert response.headers.get_list("x-page-usage") == [huge]


@pytest.mark.parametrize(
    "headers", [{"X-App-Usage": "line\r\nbreak"}, {"Bad Name": "1"}, {"X-App-Usage": "€"}]
)
def test_headers_fault_refuses_what_http_cannot_carry(
    graph: SandboxClient, headers: dict[str, str]
) -> None:
    response = graph.http.post("/_sandbox/faults", json={"path": "/feed", "headers": headers})
    assert response.status_code == 422


def test_slow_drip_reply_keeps_every_read_short(graph: SandboxClient) -> None:
    """Each gap is 50 ms, well under a 0.5 s read timeout; the whole reply takes longer."""
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed$", method="POST", drip_ms=50, drip_bytes=2)
    started = time.perf_counter()
    response = graph.http.post(
        f"/v26.0/{page_id}/feed",
        data={"message": "drip", "access_token": page_token, **graph.proof(page_token)},
        timeout=httpx.Timeout(0.5),
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    body_chunks = len(response.content) // 2
    assert elapsed >= body_chunks * 0.05
    assert elapsed > 0.5
    assert response.json()["id"].startswith(f"{page_id}_")


def test_latency_after_the_effect_delays_only_the_reply(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="/feed$", method="POST", latency_ms=1500, after_effect=True)
    with pytest.raises(httpx.ReadTimeout):
        graph.http.post(
            f"/v26.0/{page_id}/feed",
            data={"message": "late reply", "access_token": page_token, **graph.proof(page_token)},
            timeout=httpx.Timeout(0.5),
        )
    # The client gave up; the post was already made.
    assert [p["message"] for p in graph.posts(page_id)] == ["late reply"]

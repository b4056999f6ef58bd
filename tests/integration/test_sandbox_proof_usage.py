"""appsecret_proof, usage headers and throttling, and the call log, over HTTP."""

from __future__ import annotations

import json
import time

import pytest

from offpost.graph.proof import appsecret_proof
from tests.integration.sandbox_support import VERSION, SandboxClient, error_of


def _me(graph: SandboxClient, token: str, proof: dict[str, str]) -> int:
    response = graph.http.get(f"/{VERSION}/me", params={"access_token": token, **proof})
    return response.status_code


# --- proofs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset_s", "accepted"),
    [(0, True), (-290, True), (-301, False), (10, True), (120, False)],
    ids=["now", "290s-old", "301s-old", "10s-ahead", "120s-ahead"],
)
def test_timed_proof_age(graph: SandboxClient, offset_s: int, accepted: bool) -> None:
    token = graph.mint_user()["access_token"]
    proof = graph.proof(token, timed=True, at=int(time.time()) + offset_s)
    assert _me(graph, token, proof) == (200 if accepted else 400)
    assert graph.control("GET", "/calls")["data"][-1]["proof_timed"] is True


def test_timed_proof_age_uses_the_wall_clock_not_the_sandbox_clock(graph: SandboxClient) -> None:
    token = graph.long_lived(graph.mint_user()["access_token"])
    graph.advance(30 * 86_400)
    assert _me(graph, token, graph.proof(token, timed=True)) == 200


def test_wrong_proofs_are_rejected_with_graphs_message(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    token = user["access_token"]
    page_token = graph.page_token(token, user["pages"][0]["id"])
    cases = {
        "wrong secret": {"appsecret_proof": appsecret_proof("other-secret", token)},
        "other token's proof": graph.proof(page_token),
        "timed proof without its time": {
            "appsecret_proof": appsecret_proof(graph.app_secret, token, int(time.time()))
        },
    }
    for name, proof in cases.items():
        response = graph.http.get(f"/{VERSION}/me", params={"access_token": token, **proof})
        assert response.status_code == 400, name
        assert error_of(response) | {"fbtrace_id": ""} == {
            "message": "Invalid appsecret_proof provided in the API argument",
            "type": "GraphMethodException",
            "code": 100,
            "fbtrace_id": "",
        }, name


def test_missing_proof_only_matters_when_required(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    missing = graph.get("/me", token, proof=False)
    assert (
        error_of(missing)["message"]
        == "API calls from the server require an appsecret_proof argument"
    )
    graph.settings(require_proof=False)
    assert graph.get("/me", token, proof=False).status_code == 200


def test_token_is_checked_before_the_proof(graph: SandboxClient) -> None:
    token = graph.mint_user()["access_token"]
    graph.advance(7200)
    response = graph.http.get(
        f"/{VERSION}/me", params={"access_token": token, "appsecret_proof": "bad"}
    )
    assert (error_of(response)["code"], error_of(response)["error_subcode"]) == (190, 463)


def test_app_token_proof_is_verified_when_present(graph: SandboxClient) -> None:
    user_token = graph.mint_user()["access_token"]
    ok = graph.get("/debug_token", graph.app_token, input_token=user_token)
    assert ok.status_code == 200
    forged = graph.get(
        "/debug_token",
        graph.app_token,
        proof=False,
        input_token=user_token,
        appsecret_proof="0" * 64,
    )
    assert error_of(forged)["message"] == "Invalid appsecret_proof provided in the API argument"


# --- usage and throttling -----------------------------------------------------------------


def test_usage_headers_by_token_type(graph: SandboxClient) -> None:
    graph.settings(app_call_budget=200, page_call_budget=100)
    page_id, page_token, user = graph.publisher()
    user_reply = graph.get("/me", user["access_token"])
    app_usage = json.loads(user_reply.headers["x-app-usage"])
    assert set(app_usage) == {"call_count", "total_cputime", "total_time"}
    assert app_usage["call_count"] >= 1

    page_reply = graph.get(f"/{page_id}/feed", page_token)
    buc = json.loads(page_reply.headers["x-business-use-case-usage"])
    (entry,) = buc[page_id]
    assert entry["type"] == "pages"
    # Two calls on the Page out of 100: reading its token (user token), then its feed.
    assert entry["call_count"] == 2
    assert entry["estimated_time_to_regain_access"] == 0
    assert json.loads(page_reply.headers["x-page-usage"])["call_count"] == 2
    assert "x-app-usage" not in page_reply.headers


def test_page_token_throttled_with_80001_until_the_window_passes(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.settings(page_call_budget=4, usage_window_s=600)  # 1 call spent getting the token
    for _ in range(3):
        assert graph.get(f"/{page_id}/feed", page_token).status_code == 200
    throttled = graph.get(f"/{page_id}/feed", page_token)
    assert throttled.status_code == 400
    assert error_of(throttled)["code"] == 80001
    (entry,) = json.loads(throttled.headers["x-business-use-case-usage"])[page_id]
    assert entry["call_count"] > 100
    assert 1 <= entry["estimated_time_to_regain_access"] <= 10

    graph.advance(601)
    assert graph.get(f"/{page_id}/feed", page_token).status_code == 200


def test_user_token_on_a_busy_page_gets_32_and_busy_app_gets_4(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    page_id = user["pages"][0]["id"]
    token = user["access_token"]
    graph.settings(page_call_budget=1)
    assert graph.get(f"/{page_id}", token).status_code == 200
    assert error_of(graph.get(f"/{page_id}", token))["code"] == 32

    graph.settings(page_call_budget=100_000, app_call_budget=2)
    error = error_of(graph.get("/me", token))
    assert (error["code"], error["is_transient"]) == (4, True)
    assert error["message"] == "(#4) Application request limit reached"


# --- call log -----------------------------------------------------------------------------


def test_call_log_records_calls_and_never_shows_tokens_or_secrets(graph: SandboxClient) -> None:
    graph.control("DELETE", "/calls")
    page_id, page_token, user = graph.publisher()
    long_token = graph.long_lived(user["access_token"])
    graph.post(f"/{page_id}/feed", page_token, message="logged")
    graph.get("/me", user["access_token"], proof=False)
    graph.debug(page_token)
    code = graph.get(
        "/oauth/client_code",
        long_token,
        client_id=graph.app_id,
        client_secret=graph.app_secret,
        redirect_uri="https://app.example/cb",
    ).json()["code"]

    text = graph.http.get("/_sandbox/calls").text
    for secret in (user["access_token"], long_token, page_token, graph.app_secret, code):
        assert secret not in text
    calls = json.loads(text)["data"]
    publish = next(call for call in calls if call["path"] == f"/{VERSION}/{page_id}/feed")
    assert (publish["method"], publish["status"], publish["token_type"]) == ("POST", 200, "PAGE")
    assert (publish["proof"], publish["proof_valid"]) == ("valid", True)
    assert publish["params"]["access_token"].startswith("EAA…")
    unproven = next(
        call for call in calls if call["path"].endswith("/me") and call["status"] == 400
    )
    assert (unproven["proof"], unproven["proof_valid"]) == ("absent", None)

    assert graph.control("DELETE", "/calls")["cleared"] == len(calls)

"""Graph batch requests over HTTP: items as calls of their own, faults on items and on the
batch, usage per item, and the throttling mode (``/_sandbox/usage``)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from offpost.graph.proof import appsecret_proof
from tests.integration.sandbox_support import VERSION, SandboxClient, error_of

PROOF_INVALID = "Invalid appsecret_proof provided in the API argument"


def _pages(graph: SandboxClient, count: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A user with ``count`` Pages and (page id, Page token) for each."""
    user = graph.mint_user(pages=count)
    token = graph.long_lived(user["access_token"])
    return user, [(page["id"], graph.page_token(token, page["id"])) for page in user["pages"]]


def _headers(element: dict[str, Any]) -> dict[str, str]:
    return {header["name"].lower(): header["value"] for header in element["headers"]}


def _body(element: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(element["body"])
    return body


def _buc(headers: dict[str, str], page_id: str) -> dict[str, Any]:
    (entry,) = json.loads(headers["x-business-use-case-usage"])[page_id]
    return dict(entry)


# --- the endpoint -------------------------------------------------------------------------


def test_feed_posts_on_several_pages_each_with_its_own_token_and_proof(
    graph: SandboxClient,
) -> None:
    user, pages = _pages(graph, 3)
    (page_a, token_a), (page_b, token_b), (page_c, token_c) = pages
    graph.settings(page_call_budget=100)  # call_count is then the number of calls
    items = [
        graph.batch_item("POST", f"{page_a}/feed", token_a, message="to A"),
        graph.batch_item("POST", f"/{VERSION}/{page_b}/feed", token_b, timed=True, message="to B"),
        # The token and a timed proof in relative_url's query, as offpost's client sends them.
        {
            "method": "POST",
            "relative_url": f"{page_c}/feed?access_token={token_c}&"
            + "&".join(f"{k}={v}" for k, v in graph.proof(token_c, timed=True).items()),
            "body": "message=to+C",
        },
    ]
    response = graph.batch(items, user["access_token"])

    assert response.status_code == 200, response.text
    elements = response.json()
    assert [set(element) for element in elements] == [{"code", "headers", "body"}] * 3
    assert [element["code"] for element in elements] == [200, 200, 200]
    for (page_id, _), element, text in zip(pages, elements, ("to A", "to B", "to C"), strict=True):
        post_id = _body(element)["id"]
        assert post_id.startswith(page_id + "_")
        assert [(p["id"], p["message"]) for p in graph.posts(page_id)] == [(post_id, text)]
        headers = _headers(element)
        assert headers["content-type"] == "application/json"
        assert headers["facebook-api-version"] == VERSION
        # Two calls on each Page: deriving its token, then the item.
        assert _buc(headers, page_id)["call_count"] == 2
        assert json.loads(headers["x-page-usage"])["call_count"] == 2
        assert "x-app-usage" not in headers
    # The batch's own reply: usage after the last item, of every Page the items touched.
    assert set(json.loads(response.headers["x-business-use-case-usage"])) == {
        page_a,
        page_b,
        page_c,
    }
    assert "x-app-usage" in response.headers  # the top-level token is a user token


def test_items_route_like_single_calls(graph: SandboxClient) -> None:
    """Reads, deletes and comments work in a batch as they do alone; ``/`` unversioned."""
    page_id, page_token, _ = graph.publisher()
    kept = graph.post(f"/{page_id}/feed", page_token, message="kept").json()["id"]
    doomed = graph.post(f"/{page_id}/feed", page_token, message="doomed").json()["id"]
    items = [
        graph.batch_item("GET", f"{page_id}/feed", fields="id,message"),
        graph.batch_item("DELETE", doomed),
        graph.batch_item("POST", f"{kept}/comments", message="first!"),
        graph.batch_item("GET", f"{page_id}/nothing"),
    ]
    elements = graph.batch(items, page_token, versioned=False).json()

    assert [element["code"] for element in elements] == [200, 200, 200, 400]
    assert [post["message"] for post in _body(elements[0])["data"]] == ["doomed", "kept"]
    assert _body(elements[1]) == {"success": True}
    assert _body(elements[2])["id"]
    assert _body(elements[3])["error"]["message"].startswith("(#100) Tried accessing nonexisting")
    assert _headers(elements[0])["facebook-api-version"] == graph.settings()["api_version"]
    comments = graph.control("GET", f"/posts/{kept}/comments")["data"]
    assert [comment["message"] for comment in comments] == ["first!"]
    assert [post["deleted"] for post in graph.posts(page_id)] == [False, True]


def test_an_items_bad_proof_or_fault_fails_that_item_alone(graph: SandboxClient) -> None:
    user, pages = _pages(graph, 3)
    (page_a, token_a), (page_b, token_b), (page_c, token_c) = pages
    graph.settings(page_call_budget=100)
    graph.fault(path=rf"^/{VERSION}/{page_b}/feed$", method="POST", status=500, error={"code": 2})
    items = [
        {
            "method": "POST",
            "relative_url": f"{page_a}/feed",
            "body": f"message=a&access_token={token_a}"
            f"&appsecret_proof={appsecret_proof('not-the-secret', token_a)}",
        },
        graph.batch_item("POST", f"{page_b}/feed", token_b, message="b"),
        graph.batch_item("POST", f"{page_c}/feed", token_c, message="c"),
        graph.batch_item("POST", f"{page_c}/feed", token_c, proof=False, message="c again"),
    ]
    response = graph.batch(items, user["access_token"])

    assert response.status_code == 200
    a, b, c, unproven = response.json()
    assert (a["code"], _body(a)["error"]["message"]) == (400, PROOF_INVALID)
    assert _body(a)["error"]["type"] == "GraphMethodException"
    assert (b["code"], _body(b)["error"]["code"], _body(b)["error"]["is_transient"]) == (
        500,
        2,
        True,
    )
    assert _buc(_headers(b), page_b)["call_count"] == 1  # the fault struck first: not counted
    assert c["code"] == 200
    assert _body(unproven)["error"]["message"] == (
        "API calls from the server require an appsecret_proof argument"
    )
    assert graph.posts(page_a) == []
    assert graph.posts(page_b) == []
    assert [post["message"] for post in graph.posts(page_c)] == ["c"]


def test_unsupported_and_malformed_items_fail_alone(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    items: list[Any] = [
        {"method": "GET", "relative_url": "me", "name": "first"},
        {"method": "GET", "relative_url": "{result=first:$.id}/feed"},
        {"method": "PATCH", "relative_url": "me"},
        "me",
        {"method": "GET", "relative_url": "me"},
    ]
    elements = graph.batch(items, page_token).json()
    assert [element["code"] for element in elements] == [400, 400, 400, 400, 200]
    assert {_body(e)["error"]["code"] for e in elements[:4]} == {100}
    assert _body(elements[4])["id"] == page_id


def _assert_refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == 100
    assert message in error["message"]


def test_a_batch_over_50_or_without_batch_or_token_is_refused_whole(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.control("DELETE", "/calls")
    item = graph.batch_item("POST", f"{page_id}/feed", message="never")
    _assert_refused(graph.batch([item] * 51, page_token), "Maximum batch size is 50")
    _assert_refused(graph.batch([], page_token), "at least one request")
    _assert_refused(graph.batch([item], None), "access_token")
    not_json = graph.http.post(
        f"/{VERSION}/", data={"batch": "[{", "access_token": page_token, **graph.proof(page_token)}
    )
    _assert_refused(not_json, "JSON array")
    no_batch = graph.http.post(f"/{VERSION}/", data={"access_token": page_token})
    _assert_refused(no_batch, "batch")
    unproven = graph.batch([item], page_token, proof=False)
    assert error_of(unproven)["message"] == (
        "API calls from the server require an appsecret_proof argument"
    )

    assert graph.posts(page_id) == []
    calls = graph.calls()
    assert len(calls) == 6
    assert all(call["batch_index"] is None and call["status"] == 400 for call in calls)
    assert graph.usage()["pages"][page_id]["calls"] == 1  # only deriving the token


def test_include_headers_false_leaves_headers_out(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    items = [graph.batch_item("GET", page_id), graph.batch_item("GET", "nothing-here")]
    elements = graph.batch(items, page_token, include_headers="false").json()
    assert [set(element) for element in elements] == [{"code", "body"}] * 2
    assert _body(elements[0])["id"] == page_id
    assert _body(elements[1])["error"]["error_subcode"] == 33


def test_publish_latency_is_waited_once_per_batch(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.settings(publish_latency_ms=500, duplicate_detection=False)
    items = [graph.batch_item("POST", f"{page_id}/feed", message=f"m{n}") for n in range(4)]
    started = time.perf_counter()
    elements = graph.batch(items, page_token).json()
    elapsed = time.perf_counter() - started
    assert [element["code"] for element in elements] == [200] * 4
    assert 0.5 <= elapsed < 1.5  # once per publish would be 2 s


# --- faults: on an item, on the whole batch -----------------------------------------------


@pytest.mark.parametrize("after_effect", [False, True])
def test_an_items_dropped_reply_is_null(graph: SandboxClient, after_effect: bool) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(
        path="/feed$",
        method="POST",
        params={"message": "lost"},
        drop_response=True,
        after_effect=after_effect,
    )
    items = [
        graph.batch_item("POST", f"{page_id}/feed", message="before"),
        graph.batch_item("POST", f"{page_id}/feed", message="lost"),
        graph.batch_item("POST", f"{page_id}/feed", message="after"),
    ]
    before, lost, after = graph.batch(items, page_token).json()

    assert lost is None
    assert (before["code"], after["code"]) == (200, 200)
    expected = ["before", "lost", "after"] if after_effect else ["before", "after"]
    assert [post["message"] for post in graph.posts(page_id)] == expected
    logged = [call for call in graph.calls() if call["batch_index"] == 1]
    assert [(call["status"], call["dropped"]) for call in logged] == [(None, True)]


def test_an_items_fault_headers_and_latency(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path=f"/{page_id}$", latency_ms=300, headers={"X-Page-Usage": "not json"})
    started = time.perf_counter()
    (element,) = graph.batch([graph.batch_item("GET", page_id)], page_token).json()
    assert time.perf_counter() - started >= 0.3
    assert element["code"] == 200
    assert _headers(element)["x-page-usage"] == "not json"


def test_a_lost_batch_reply_after_every_item_ran(graph: SandboxClient) -> None:
    """The case offpost must survive: Graph ran the whole batch, the reply never came."""
    _, pages = _pages(graph, 3)
    graph.control("DELETE", "/calls")
    graph.fault(path="^/$", method="POST", after_effect=True, drop_response=True)
    items = [graph.batch_item("POST", f"{pid}/feed", token, message="m") for pid, token in pages]

    with pytest.raises(httpx.RemoteProtocolError):
        graph.batch(items, pages[0][1])
    assert [len(graph.posts(page_id)) for page_id, _ in pages] == [1, 1, 1]
    calls = graph.calls()
    assert [(c["batch_index"], c["status"], c["dropped"]) for c in calls] == [
        (0, 200, False),
        (1, 200, False),
        (2, 200, False),
        (None, None, True),
    ]
    assert len({call["batch_id"] for call in calls}) == 1
    # The sandbox goes on serving.
    assert graph.batch(items[:1], pages[0][1]).status_code == 200


def test_a_fault_on_the_batch_before_its_effect_runs_nothing(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path=rf"^/{VERSION}/?$", method="POST", status=503, body="<html>busy</html>")
    item = graph.batch_item("POST", f"{page_id}/feed", message="m")
    response = graph.batch([item], page_token)
    assert (response.status_code, response.text) == (503, "<html>busy</html>")
    assert graph.posts(page_id) == []
    assert graph.batch([item], page_token).json()[0]["code"] == 200


def test_latency_on_the_batch_delays_the_whole_reply(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    graph.fault(path="^/$", method="POST", latency_ms=300)
    started = time.perf_counter()
    elements = graph.batch([graph.batch_item("GET", page_id)] * 2, page_token).json()
    assert time.perf_counter() - started >= 0.3
    assert [element["code"] for element in elements] == [200, 200]


# --- usage, throttling and the throttling mode --------------------------------------------


def test_each_item_counts_and_is_throttled_on_its_own(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()  # 1 call on the Page: deriving its token
    graph.settings(page_call_budget=3, usage_window_s=600)
    items = [graph.batch_item("GET", f"{page_id}/feed") for _ in range(4)]
    response = graph.batch(items, page_token)

    elements = response.json()
    assert [element["code"] for element in elements] == [200, 200, 400, 400]
    assert {_body(e)["error"]["code"] for e in elements[2:]} == {80001}
    usage = [_buc(_headers(element), page_id) for element in elements]
    assert [entry["call_count"] for entry in usage] == [66, 100, 133, 166]
    assert usage[0]["estimated_time_to_regain_access"] == 0
    assert all(1 <= entry["estimated_time_to_regain_access"] <= 10 for entry in usage[1:])
    # The batch call itself counts nothing; its reply shows the state after the last item.
    assert _buc(dict(response.headers), page_id)["call_count"] == 166
    assert json.loads(response.headers["x-page-usage"])["call_count"] == 166
    page = graph.usage()["pages"][page_id]
    assert (page["calls"], page["budget"], page["pct"], page["throttled_total"]) == (5, 3, 166, 2)


def test_user_token_items_count_against_the_app(graph: SandboxClient) -> None:
    user = graph.mint_user(pages=1)
    token = user["access_token"]
    graph.settings(app_call_budget=2)
    items = [graph.batch_item("GET", "me") for _ in range(3)]
    elements = graph.batch(items, token).json()
    assert [element["code"] for element in elements] == [200, 200, 400]
    assert _body(elements[2])["error"]["code"] == 4
    pcts = [json.loads(_headers(e)["x-app-usage"])["call_count"] for e in elements]
    assert pcts == [50, 100, 150]
    app = graph.usage()["apps"][graph.app_id]
    assert (app["calls"], app["throttled_total"]) == (3, 1)


def test_a_throttled_page_recovers_as_its_calls_leave_the_window(graph: SandboxClient) -> None:
    """Sandbox clock, no sleeping: budget 3 in 600 s; calls at t0 (the token), t0+100 (two),
    t0+200 (throttled, and counted: calling while limited extends the block)."""
    page_id, page_token, _ = graph.publisher()
    graph.settings(page_call_budget=3, usage_window_s=600)
    graph.advance(100)
    assert graph.get(f"/{page_id}/feed", page_token).status_code == 200
    assert graph.get(f"/{page_id}/feed", page_token).status_code == 200
    graph.advance(100)
    throttled = graph.get(f"/{page_id}/feed", page_token)
    assert error_of(throttled)["code"] == 80001
    # The two calls of t0+100 must leave the window: at t0+700, 500 s (9 min) from now.
    entry = _buc(dict(throttled.headers), page_id)
    assert entry["estimated_time_to_regain_access"] == 9
    page = graph.usage()["pages"][page_id]
    assert (page["calls"], page["throttled_total"]) == (4, 1)
    assert page["estimated_time_to_regain_access"] == 9

    graph.advance(410)  # t0+610: the first call left, the Page is still at its budget
    page = graph.usage()["pages"][page_id]
    assert (page["calls"], page["estimated_time_to_regain_access"]) == (3, 2)
    graph.advance(100)  # t0+710
    page = graph.usage()["pages"][page_id]
    assert (page["calls"], page["pct"], page["estimated_time_to_regain_access"]) == (1, 33, 0)
    recovered = graph.get(f"/{page_id}/feed", page_token)
    assert recovered.status_code == 200
    assert _buc(dict(recovered.headers), page_id)["call_count"] == 66
    assert graph.usage()["pages"][page_id]["throttled_total"] == 1

    graph.control("POST", "/reset")
    assert graph.usage()["pages"] == {}


def test_per_page_budgets(graph: SandboxClient) -> None:
    user, pages = _pages(graph, 2)
    (busy, busy_token), (calm, calm_token) = pages
    graph.settings(page_call_budgets={busy: 2})
    items = [graph.batch_item("GET", busy, busy_token), graph.batch_item("GET", calm, calm_token)]
    elements = graph.batch(items * 2, user["access_token"]).json()
    assert [element["code"] for element in elements] == [200, 200, 400, 200]
    usage = graph.usage()["pages"]
    assert (usage[busy]["budget"], usage[busy]["throttled_total"]) == (2, 1)
    assert (usage[calm]["budget"], usage[calm]["throttled_total"]) == (100_000, 0)
    graph.control("DELETE", "/usage")
    assert graph.usage() | {"now": 0} == {"now": 0, "window_s": 3600, "apps": {}, "pages": {}}


# --- the call log -------------------------------------------------------------------------


def test_call_log_has_each_item_with_its_token_masked(graph: SandboxClient) -> None:
    user, pages = _pages(graph, 2)
    (page_a, token_a), (page_b, token_b) = pages
    graph.control("DELETE", "/calls")
    items = [
        graph.batch_item("POST", f"{page_a}/feed", token_a, message="a"),
        graph.batch_item("POST", f"{page_b}/feed", token_b, timed=True, message="b"),
        graph.batch_item("GET", "me"),
    ]
    assert graph.batch(items, user["access_token"]).status_code == 200

    text = graph.http.get("/_sandbox/calls").text
    for secret in (user["access_token"], token_a, token_b, graph.app_secret):
        assert secret not in text
    for token in (token_a, user["access_token"]):
        assert graph.proof(token)["appsecret_proof"] not in text
    calls = json.loads(text)["data"]
    assert [(c["batch_index"], c["method"], c["path"], c["token_type"]) for c in calls] == [
        (0, "POST", f"/{VERSION}/{page_a}/feed", "PAGE"),
        (1, "POST", f"/{VERSION}/{page_b}/feed", "PAGE"),
        (2, "GET", f"/{VERSION}/me", "USER"),
        (None, "POST", f"/{VERSION}/", "USER"),
    ]
    assert len({call["batch_id"] for call in calls}) == 1
    assert calls[0]["batch_id"] is not None
    assert all(call["proof"] == "valid" for call in calls)
    assert calls[1]["proof_timed"] is True
    assert all(call["params"]["access_token"].startswith("EAA…") for call in calls)
    assert calls[0]["params"]["message"] == "a"
    assert calls[3]["params"]["batch"].endswith("each item is logged on its own)")


def test_attached_files_upload_a_photo(graph: SandboxClient) -> None:
    page_id, page_token, _ = graph.publisher()
    items = [
        {
            "method": "POST",
            "relative_url": f"{page_id}/photos",
            "body": "caption=cat",
            "attached_files": "file1",
        },
        {"method": "POST", "relative_url": f"{page_id}/photos", "attached_files": "file2"},
    ]
    response = graph.http.post(
        f"/{VERSION}/",
        data={"batch": json.dumps(items), "access_token": page_token, **graph.proof(page_token)},
        files={"file1": ("cat.jpg", b"\xff\xd8\xff" + bytes(100), "image/jpeg")},
    )
    uploaded, missing = response.json()
    assert uploaded["code"] == 200
    assert "file2 was not sent" in _body(missing)["error"]["message"]
    (photo,) = graph.control("GET", f"/pages/{page_id}/photos")["data"]
    assert (photo["id"], photo["caption"], photo["size"]) == (_body(uploaded)["id"], "cat", 103)

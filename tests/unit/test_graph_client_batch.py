"""GraphClient.publish_batch over httpx.MockTransport: one request with each item's own
token and proof, one answer per item classified on its own, whole-request failures."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from offpost.graph.client import MAX_BATCH_CALLS
from offpost.graph.errors import (
    GraphAuthError,
    GraphConnectionError,
    GraphMalformedResponseError,
    GraphRateLimitedError,
    GraphRejectedError,
    GraphTimeoutError,
)
from offpost.graph.types import BatchPublish, PublishResult
from tests.unit.test_graph_client import (
    APP_SECRET,
    NOW_S,
    PAGE_TOKEN,
    MakeClient,
    form,
    ok,
    query,
    timed_proof,
)

OTHER_TOKEN = "EAAOther" + "o" * 90


def answer(code: int, body: object, **headers: str) -> dict[str, object]:
    return {
        "code": code,
        "headers": [{"name": name, "value": value} for name, value in headers.items()],
        "body": json.dumps(body),
    }


def sent_batch(request: httpx.Request) -> list[dict[str, str]]:
    items: list[dict[str, str]] = json.loads(form(request)["batch"][0])
    return items


def test_one_request_with_each_items_token_and_proof(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda r: ok([answer(200, {"id": "7_1"}), answer(200, {"id": "p9", "post_id": "8_2"})])
    )
    results = client.publish_batch(
        [
            BatchPublish("7", PAGE_TOKEN, text="hello", link="https://example.com/a"),
            BatchPublish("8", OTHER_TOKEN, text="a caption", photo_url="https://example.com/p.jpg"),
        ]
    )
    assert results == [
        PublishResult(id="7_1", post_id="7_1"),
        PublishResult(id="p9", post_id="8_2"),
    ]
    [request] = recorder.requests
    assert (request.method, request.url.path) == ("POST", "/v25.0/")
    # The request's own token (Graph requires one) is the first item's, with its proof.
    assert query(request)["access_token"] == PAGE_TOKEN
    assert query(request)["appsecret_proof"] == timed_proof(PAGE_TOKEN, APP_SECRET, NOW_S)
    assert form(request)["include_headers"] == ["true"]
    feed, photo = sent_batch(request)
    assert feed["method"] == photo["method"] == "POST"
    for item, path, token in ((feed, "/7/feed", PAGE_TOKEN), (photo, "/8/photos", OTHER_TOKEN)):
        url = urlsplit(item["relative_url"])
        assert url.path == path.lstrip("/")
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert params["access_token"] == token
        assert params["appsecret_proof"] == timed_proof(token, APP_SECRET, NOW_S)
        assert params["appsecret_time"] == str(NOW_S)
    assert parse_qs(feed["body"]) == {"message": ["hello"], "link": ["https://example.com/a"]}
    assert parse_qs(photo["body"]) == {
        "url": ["https://example.com/p.jpg"],
        "caption": ["a caption"],
    }


def test_each_answer_is_classified_on_its_own(make_client: MakeClient) -> None:
    expired = {"error": {"message": "Error validating access token", "code": 190}}
    throttled = {"error": {"message": "(#80001) too many calls", "code": 80001}}
    client, _ = make_client(
        lambda r: ok(
            [
                answer(
                    200,
                    {"id": "7_1"},
                    **{"X-Business-Use-Case-Usage": json.dumps({"7": [{"call_count": 42}]})},
                ),
                answer(400, expired),
                answer(400, throttled),
                None,
                answer(200, {"no": "id"}),
            ]
        )
    )
    ok_, auth, limited, unfinished, malformed = client.publish_batch(
        [BatchPublish(str(page), PAGE_TOKEN, text=f"post {page}") for page in range(5)]
    )
    assert isinstance(ok_, PublishResult)
    assert ok_.usage.for_object("7")[0].call_count_pct == 42
    assert isinstance(auth, GraphAuthError)
    assert auth.code == 190
    assert isinstance(limited, GraphRateLimitedError)
    assert limited.code == 80001
    assert isinstance(unfinished, GraphTimeoutError)
    assert unfinished.outcome_unknown
    assert isinstance(malformed, GraphMalformedResponseError)
    assert malformed.outcome_unknown


def test_no_reply_at_all_leaves_every_outcome_unknown(make_client: MakeClient) -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    client, _ = make_client(drop)
    with pytest.raises(GraphConnectionError) as caught:
        client.publish_batch([BatchPublish("7", PAGE_TOKEN, text="a")] * 3)
    assert caught.value.outcome_unknown
    assert PAGE_TOKEN not in str(caught.value)


def test_a_top_level_refusal_is_raised(make_client: MakeClient) -> None:
    refusal = {"error": {"message": "(#100) Too many requests in batch", "code": 100}}
    client, _ = make_client(lambda r: httpx.Response(400, json=refusal))
    with pytest.raises(GraphRejectedError) as caught:
        client.publish_batch([BatchPublish("7", PAGE_TOKEN, text="a")] * 2)
    assert not caught.value.outcome_unknown


@pytest.mark.parametrize("reply", [{"not": "a list"}, [None]])
def test_a_reply_that_is_not_one_answer_per_item(make_client: MakeClient, reply: object) -> None:
    client, _ = make_client(lambda r: ok(reply))
    with pytest.raises(GraphMalformedResponseError) as caught:
        client.publish_batch([BatchPublish("7", PAGE_TOKEN, text="a")] * 2)
    assert caught.value.outcome_unknown


def test_tokens_echoed_in_an_answer_are_scrubbed(make_client: MakeClient) -> None:
    echo = {"error": {"message": f"bad token {OTHER_TOKEN}", "code": 100}}
    client, _ = make_client(lambda r: ok([answer(200, {"id": "7_1"}), answer(400, echo)]))
    _, refused = client.publish_batch(
        [BatchPublish("7", PAGE_TOKEN, text="a"), BatchPublish("8", OTHER_TOKEN, text="b")]
    )
    assert OTHER_TOKEN not in str(refused)


def test_batch_size_is_bounded(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok([]))
    with pytest.raises(ValueError):
        client.publish_batch([BatchPublish("7", PAGE_TOKEN, text="a")] * (MAX_BATCH_CALLS + 1))
    with pytest.raises(ValueError):
        client.publish_batch([])
    assert recorder.requests == []

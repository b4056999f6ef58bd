"""Graph misbehaving, seen by the client: every case a typed error with a clear message.

Timeouts, resets, replies cut off or trickled out, bodies that are not JSON,
HTML pages from a proxy, 200s carrying an error envelope and absurd usage
headers. For a publish, whatever may hide a created post is "outcome unknown"
(the worker reconciles before any retry); absurd usage headers never fail a
call, never raise and never impose a wait beyond a day.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from offpost.graph.classify import classify_error
from offpost.graph.client import GraphClient, make_http_client
from offpost.graph.errors import (
    GraphConnectionError,
    GraphError,
    GraphMalformedResponseError,
    GraphRateLimitedError,
    GraphRejectedError,
    GraphTimeoutError,
    GraphTransientError,
)
from offpost.graph.usage import (
    MAX_REGAIN_ACCESS_S,
    UsageCounters,
    parse_usage,
    read_usage,
)
from offpost.workers.decide import Action, action_for, error_document
from offpost.workers.ratelimit import usage_blocks

APP_SECRET = "0123456789abcdef0123456789abcdef"
PAGE_TOKEN = "EAAPage" + "p" * 90
JSON = "application/json; charset=UTF-8"


def client_for(
    handler: httpx.MockTransport, *, timeout_s: float = 2.0, deadline_s: float | None = None
) -> GraphClient:
    http = make_http_client(timeout_s, transport=handler)
    return GraphClient(
        http,
        graph_url="https://graph.test",
        version="v26.0",
        app_id="1234567890",
        app_secret=APP_SECRET,
        deadline_s=deadline_s,
    )


class Trickle(httpx.SyncByteStream):
    """A body that arrives ``step`` bytes every ``pause_s``, then maybe breaks."""

    def __init__(
        self, body: bytes, *, step: int, pause_s: float, fail_after: int | None = None
    ) -> None:
        self.body, self.step, self.pause_s, self.fail_after = body, step, pause_s, fail_after

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), self.step):
            if self.fail_after is not None and start >= self.fail_after:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    f"(received {start} bytes, expected {len(self.body)})"
                )
            time.sleep(self.pause_s)
            yield self.body[start : start + self.step]


def publish(client: GraphClient) -> GraphError:
    with pytest.raises(GraphError) as caught:
        client.publish_feed("7", PAGE_TOKEN, message="hi")
    return caught.value


def assert_clear(error: GraphError, *phrases: str) -> None:
    """A sentence naming the call, with no token or secret."""
    text = f"{error.message} {error!r}"
    assert "POST /7/feed" in error.message
    for phrase in phrases:
        assert phrase in error.message, error.message
    for secret in (PAGE_TOKEN, APP_SECRET, "access_token", "appsecret_proof"):
        assert secret not in text


# -- slow drip, cut-off replies, huge replies ----------------------------------------


def test_slow_drip_reply_hits_the_overall_deadline() -> None:
    """Every read is quick (50 ms), the whole reply is not: the deadline ends the call."""
    body = json.dumps({"id": "7_1"}).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200,
            headers={"content-type": JSON},
            stream=Trickle(body, step=1, pause_s=0.05),
        )
    )
    client = client_for(transport, timeout_s=1.0, deadline_s=0.3)
    started = time.monotonic()
    error = publish(client)
    elapsed = time.monotonic() - started
    assert type(error) is GraphTimeoutError
    assert error.outcome_unknown is True
    assert action_for(error) is Action.RETRY_RECONCILE
    assert error_document(error)["code"] == "timeout"
    assert_clear(error, "still arriving after 0.3 s", "may have acted")
    # It stopped soon after the deadline, long before the whole body (0.65 s) arrived.
    assert elapsed < 0.6


def test_deadline_defaults_to_the_read_timeout() -> None:
    body = json.dumps({"id": "7_1"}).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, stream=Trickle(body, step=2, pause_s=0.04))
    )
    error = publish(client_for(transport, timeout_s=0.2))
    assert type(error) is GraphTimeoutError
    assert "still arriving after 0.2 s" in error.message


def test_a_quick_reply_in_chunks_is_read_whole() -> None:
    body = json.dumps({"id": "7_1"}).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, headers={"content-type": JSON}, stream=Trickle(body, step=3, pause_s=0)
        )
    )
    assert client_for(transport).publish_feed("7", PAGE_TOKEN, message="hi").id == "7_1"


def test_reply_cut_off_mid_body_is_malformed_and_unknown() -> None:
    body = json.dumps({"id": "7_1234567890"}).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, stream=Trickle(body, step=4, pause_s=0, fail_after=8))
    )
    error = publish(client_for(transport))
    assert type(error) is GraphMalformedResponseError
    assert error.outcome_unknown is True
    assert error.http_status == 200
    assert error_document(error)["code"] == "malformed_response"
    assert_clear(error, "was cut off after 8 bytes", "may have acted")


def test_reply_larger_than_any_graph_reply_is_refused() -> None:
    class Endless(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            while True:
                yield b" " * 1_000_000

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Endless()))
    error = publish(client_for(transport))
    assert type(error) is GraphMalformedResponseError
    assert error.outcome_unknown is True
    assert_clear(error, "was larger than")


def test_read_timeout_mid_body_is_a_timeout() -> None:
    class Stalls(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b'{"id": '
            raise httpx.ReadTimeout("timed out")

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Stalls()))
    error = publish(client_for(transport))
    assert type(error) is GraphTimeoutError
    assert error.outcome_unknown is True
    assert_clear(error, "stalled for longer than 2 s after 7 bytes")


# -- failures before any reply: each a sentence, and whether Graph may have acted ----


@pytest.mark.parametrize(
    ("exc", "expected", "unknown", "phrase"),
    [
        (httpx.ReadTimeout("timed out"), GraphTimeoutError, True, "did not answer POST /7/feed"),
        (httpx.WriteTimeout("timed out"), GraphTimeoutError, True, "took longer than"),
        (httpx.ConnectTimeout("timed out"), GraphTimeoutError, False, "the call was not sent"),
        (httpx.PoolTimeout("timed out"), GraphTimeoutError, False, "the call was not sent"),
        (httpx.ConnectError("refused"), GraphConnectionError, False, "the call was not sent"),
        (
            httpx.ReadError("[Errno 104] Connection reset by peer"),
            GraphConnectionError,
            True,
            "Connection reset by peer",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            GraphConnectionError,
            True,
            "closed the connection during POST /7/feed without replying",
        ),
    ],
)
def test_failures_before_a_reply_say_what_happened(
    exc: httpx.RequestError, expected: type[GraphError], unknown: bool, phrase: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    error = publish(client_for(httpx.MockTransport(handler)))
    assert type(error) is expected
    assert error.outcome_unknown is unknown
    assert_clear(error, phrase)
    assert ("may have acted" in error.message) is unknown
    assert error.message[0].isalpha()


def test_a_read_that_fails_says_nothing_of_effects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(GraphTimeoutError) as caught:
        client_for(httpx.MockTransport(handler)).page_posts("7", PAGE_TOKEN)
    assert "GET /7/feed" in caught.value.message
    assert "may have acted" not in caught.value.message


# -- bodies that are not Graph's JSON ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type", "phrase"),
    [
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "text/html",
            'an HTML page titled "502 Bad Gateway" instead of JSON',
        ),
        (503, b"<!DOCTYPE html><html><body>down</body></html>", "text/html", "an HTML page"),
        (200, b"OK", "text/plain", "a body that is not JSON (text/plain, 2 bytes)"),
        (200, b'{"id": "7_12', JSON, "not JSON: cut off or invalid"),
        (200, b"", JSON, "an empty body"),
    ],
)
def test_bodies_that_are_not_json_are_malformed_with_a_clear_message(
    status: int, body: bytes, content_type: str, phrase: str
) -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, content=body, headers={"content-type": content_type})
    )
    error = publish(client_for(transport))
    assert type(error) is GraphMalformedResponseError
    assert error.outcome_unknown is True
    assert error.http_status == status
    assert_clear(error, f"Graph answered to POST /7/feed with HTTP {status} and", phrase)


@pytest.mark.parametrize(
    ("envelope", "expected", "action"),
    [
        ({"code": 1, "message": "An unknown error has occurred."}, GraphTransientError, "retry"),
        ({"code": 2, "is_transient": True}, GraphTransientError, "retry"),
        ({"code": 100, "message": "(#100) Invalid parameter"}, GraphRejectedError, "fail"),
        (
            {"code": 32, "message": "(#32) Page request limit reached"},
            GraphRateLimitedError,
            "wait",
        ),
    ],
)
def test_200_with_an_error_envelope_is_classified_by_its_code(
    envelope: dict[str, object], expected: type[GraphError], action: str
) -> None:
    body = json.dumps({"error": {"type": "OAuthException", **envelope}}).encode()
    error = classify_error(200, body, JSON, {})
    assert type(error) is expected
    assert error.http_status == 200
    assert error.code == envelope["code"]
    assert {
        "retry": Action.RETRY_RECONCILE,
        "fail": Action.FAIL,
        "wait": Action.WAIT,
    }[action] is action_for(error)


# -- absurd usage headers ---------------------------------------------------------------

ABSURD_HEADERS: list[dict[str, str]] = [
    {"x-app-usage": "<html>not json</html>"},
    {"x-app-usage": '{"call_count": -5, "total_time": -1e9, "total_cputime": -0.5}'},
    {"x-app-usage": '{"call_count": 1000000000000, "total_time": 1e300}'},
    {"x-app-usage": '{"call_count": "ninety", "total_time": [1], "total_cputime": {"a": 1}}'},
    {"x-app-usage": '{"call_count": NaN, "total_time": Infinity}'},
    {"x-app-usage": "[" * 50_000},
    {"x-page-usage": '{"call_count": 1' + "0" * 5000 + "}"},
    {"x-page-usage": json.dumps({"call_count": 1, "pad": "x" * 100_000})},
    {"x-business-use-case-usage": '{"7": [{"type": "pages", "call_count": 1e12}]}'},
    {"x-business-use-case-usage": '{"7": [{"estimated_time_to_regain_access": 1e15}]}'},
    {"x-business-use-case-usage": '{"7": [{"estimated_time_to_regain_access": Infinity}]}'},
    {"x-business-use-case-usage": '{"7": [{"estimated_time_to_regain_access": -60}]}'},
    {"x-business-use-case-usage": '{"7": "pages", "8": [1, "x", null]}'},
]


@pytest.mark.parametrize("headers", ABSURD_HEADERS)
def test_absurd_usage_headers_never_raise_and_never_block_for_long(
    headers: dict[str, str],
) -> None:
    usage, problems = read_usage(headers)
    assert problems, "an absurd header is reported"
    assert usage == parse_usage(headers)
    assert 0 <= usage.regain_access_s <= MAX_REGAIN_ACCESS_S
    for _, wait_s in usage_blocks(usage, app_id="1", page_id="7"):
        assert wait_s <= MAX_REGAIN_ACCESS_S
        datetime.now(UTC) + timedelta(seconds=wait_s)  # no OverflowError when scheduling
    for problem in problems:
        assert problem.split(":", 1)[0] in headers
        assert len(problem) < 120  # a sentence, not the header's value


def test_a_percentage_beyond_belief_is_ignored_not_obeyed() -> None:
    usage = parse_usage({"x-app-usage": '{"call_count": 1e12, "total_time": 40}'})
    assert usage.app == UsageCounters(total_time_pct=40)
    assert usage_blocks(usage, app_id="1", page_id="7") == []


def test_regain_estimate_beyond_a_day_is_capped_at_a_day() -> None:
    raw = json.dumps(
        {"7": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 10**15}]}
    )
    usage, problems = read_usage({"x-business-use-case-usage": raw})
    assert usage.regain_access_s == MAX_REGAIN_ACCESS_S
    assert problems == (
        "x-business-use-case-usage: estimated_time_to_regain_access is above 24 hours; capped",
    )
    assert usage_blocks(usage, app_id="1", page_id="7") == [("page:7", MAX_REGAIN_ACCESS_S)]


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "9" * 40},
        {"x-business-use-case-usage": '{"7": [{"estimated_time_to_regain_access": 1e18}]}'},
    ],
)
def test_a_throttle_with_an_absurd_wait_waits_a_day_at_most(headers: dict[str, str]) -> None:
    body = json.dumps({"error": {"code": 80001, "message": "(#80001) too many calls"}}).encode()
    error = classify_error(400, body, JSON, headers)
    assert isinstance(error, GraphRateLimitedError)
    assert error.retry_after_s == MAX_REGAIN_ACCESS_S


def test_absurd_usage_headers_on_a_success_log_one_warning_per_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {
        "content-type": JSON,
        "x-app-usage": "garbage " + "y" * 200,
        "x-business-use-case-usage": '{"7": [{"call_count": -1}]}',
    }
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"id": "7_1"}, headers=headers)
    )
    client = client_for(transport)
    with caplog.at_level(logging.DEBUG, logger="offpost.graph.client"):
        for _ in range(3):
            result = client.publish_feed("7", PAGE_TOKEN, message="hi")
            assert result.id == "7_1"
            assert result.usage.app is None
    records = [r for r in caplog.records if r.getMessage().startswith("Graph sent unusable")]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    message = records[0].getMessage()
    assert "x-app-usage: not JSON; ignored" in message
    assert "x-business-use-case-usage: call_count is negative" in message
    assert "garbage" not in message  # the value itself is never logged
    assert PAGE_TOKEN not in message

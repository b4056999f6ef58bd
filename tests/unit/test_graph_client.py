"""GraphClient over httpx.MockTransport: one handler per scenario, asserting on the requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from offpost.graph.client import GraphClient, make_http_client
from offpost.graph.errors import (
    AuthReason,
    GraphAuthError,
    GraphConnectionError,
    GraphError,
    GraphMalformedResponseError,
    GraphPermissionError,
    GraphRateLimitedError,
    GraphTimeoutError,
    GraphTransientError,
)
from offpost.graph.proof import appsecret_proof

APP_ID = "1234567890"
APP_SECRET = "0123456789abcdef0123456789abcdef"
USER_TOKEN = "EAAUser" + "u" * 90
PAGE_TOKEN = "EAAPage" + "p" * 90
NOW_S = 1_790_000_000
BASE = "https://graph.test/v25.0"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler wrapper that keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


MakeClient = Callable[..., tuple[GraphClient, Recorder]]


@pytest.fixture
def make_client() -> MakeClient:
    """Build a client whose transport is ``handler``; keyword overrides go to GraphClient."""

    def make(handler: Handler, **overrides: Any) -> tuple[GraphClient, Recorder]:
        recorder = Recorder(handler)
        options: dict[str, Any] = {
            "graph_url": "https://graph.test/",
            "version": "v25.0",
            "app_id": APP_ID,
            "app_secret": APP_SECRET,
            "clock": lambda: NOW_S + 0.75,
        }
        options.update(overrides)
        http = make_http_client(transport=httpx.MockTransport(recorder))
        return GraphClient(http, **options), recorder

    return make


def ok(body: object, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


def timed_proof(token: str, secret: str, now_s: int) -> str:
    """Independent of offpost.graph.proof: Meta's documented HMAC-SHA256(secret, token|time)."""
    return hmac.new(secret.encode(), f"{token}|{now_s}".encode(), hashlib.sha256).hexdigest()


# -- appsecret_proof --------------------------------------------------------------


def test_untimed_proof_matches_the_php_sdk_test_vector(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda r: ok({"id": "1"}), app_secret="foo_secret", appsecret_time=False
    )
    client.me("long_token")
    params = query(recorder.last)
    assert params["access_token"] == "long_token"
    assert params["appsecret_proof"] == (
        "7e91300ea91be4166282611d4fc700b473466f3ea2981dafbf492fc096995bf1"
    )
    assert "appsecret_time" not in params


def test_timed_proof_uses_the_injected_clock(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "1"}))
    client.me(USER_TOKEN)
    params = query(recorder.last)
    assert params["appsecret_time"] == str(NOW_S)
    assert params["appsecret_proof"] == timed_proof(USER_TOKEN, APP_SECRET, NOW_S)


def test_proof_is_computed_per_call(make_client: MakeClient) -> None:
    ticks = iter([NOW_S, NOW_S + 400])
    client, recorder = make_client(lambda r: ok({"id": "1"}), clock=lambda: next(ticks))
    client.me(USER_TOKEN)
    client.me(USER_TOKEN)
    times = [query(r)["appsecret_time"] for r in recorder.requests]
    assert times == [str(NOW_S), str(NOW_S + 400)]


def graph_like(request: httpx.Request) -> httpx.Response:
    """Plausible successful bodies for every endpoint the client calls."""
    path = request.url.path.removeprefix("/v25.0")
    bodies: dict[str, object] = {
        "/me": {"id": "42", "name": "Ann"},
        "/me/accounts": {"data": [{"id": "7", "access_token": PAGE_TOKEN}]},
        "/7": {"id": "7", "access_token": PAGE_TOKEN},
        "/oauth/client_code": {"code": "one-time-code"},
        "/7/feed": {"id": "7_1"} if request.method == "POST" else {"data": []},
        "/7/photos": {"id": "9", "post_id": "7_2"},
        "/debug_token": {"data": {"is_valid": True, "type": "USER"}},
    }
    return ok(bodies[path])


CALLS: list[tuple[str, Callable[[GraphClient], object], str]] = [
    ("me", lambda c: c.me(USER_TOKEN), USER_TOKEN),
    ("accounts", lambda c: c.accounts(USER_TOKEN), USER_TOKEN),
    ("page_token", lambda c: c.page_token("7", USER_TOKEN), USER_TOKEN),
    ("client_code", lambda c: c.client_code(USER_TOKEN, "https://app.test/cb"), USER_TOKEN),
    ("publish_feed", lambda c: c.publish_feed("7", PAGE_TOKEN, message="hi"), PAGE_TOKEN),
    (
        "publish_photo",
        lambda c: c.publish_photo("7", PAGE_TOKEN, url="https://x/p.jpg"),
        PAGE_TOKEN,
    ),
    ("page_posts", lambda c: c.page_posts("7", PAGE_TOKEN), PAGE_TOKEN),
    ("debug_token", lambda c: c.debug_token(USER_TOKEN), f"{APP_ID}|{APP_SECRET}"),
]


@pytest.mark.parametrize("timed", [True, False])
@pytest.mark.parametrize(("name", "call", "token"), CALLS, ids=[c[0] for c in CALLS])
def test_every_call_with_a_token_carries_its_proof_in_the_query(
    make_client: MakeClient,
    name: str,
    call: Callable[[GraphClient], object],
    token: str,
    timed: bool,
) -> None:
    client, recorder = make_client(graph_like, appsecret_time=timed)
    call(client)
    (request,) = recorder.requests
    params = query(request)
    assert params["access_token"] == token
    if timed:
        assert params["appsecret_time"] == str(NOW_S)
        assert params["appsecret_proof"] == timed_proof(token, APP_SECRET, NOW_S)
    else:
        assert "appsecret_time" not in params
        assert params["appsecret_proof"] == appsecret_proof(APP_SECRET, token)
    assert b"access_token" not in request.content
    assert b"appsecret_proof" not in request.content


def test_base_url_is_graph_url_and_version(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "1"}), graph_url="http://sandbox:9000//")
    client.me(USER_TOKEN)
    assert str(recorder.last.url).startswith("http://sandbox:9000/v25.0/me?")


# -- tokens -------------------------------------------------------------------------


def test_exchange_token_sends_the_documented_query(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda r: ok({"access_token": "EAALong", "token_type": "bearer", "expires_in": 5183944})
    )
    result = client.exchange_token("EAAShort")
    assert recorder.last.method == "GET"
    assert recorder.last.url.path == "/v25.0/oauth/access_token"
    assert query(recorder.last) == {
        "grant_type": "fb_exchange_token",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "fb_exchange_token": "EAAShort",
    }
    assert (result.access_token, result.token_type, result.expires_in) == (
        "EAALong",
        "bearer",
        5183944,
    )
    assert "EAALong" not in repr(result)


def test_exchange_without_expires_in(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"access_token": "EAALong", "token_type": "bearer"}))
    result = client.exchange_token("EAAShort")
    assert result.access_token == "EAALong"
    assert result.expires_in is None


def test_exchange_with_legacy_expires_key(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"access_token": "EAALong", "expires": "5184000"}))
    result = client.exchange_token("EAAShort")
    assert (result.expires_in, result.token_type) == (5184000, None)


def test_exchange_with_legacy_form_body(make_client: MakeClient) -> None:
    client, _ = make_client(
        lambda r: httpx.Response(
            200,
            content=b"access_token=EAALong&expires=5183944",
            headers={"content-type": "text/plain"},
        )
    )
    result = client.exchange_token("EAAShort")
    assert (result.access_token, result.expires_in) == ("EAALong", 5183944)


def test_exchange_of_an_expired_token_is_an_auth_error(make_client: MakeClient) -> None:
    body = {
        "error": {
            "message": "Error validating access token: Session has expired on Monday.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
            "fbtrace_id": "X",
        }
    }
    client, _ = make_client(lambda r: httpx.Response(400, json=body))
    with pytest.raises(GraphAuthError) as caught:
        client.exchange_token("EAAShort")
    assert caught.value.reason is AuthReason.EXPIRED


def test_debug_token_valid_user_token(make_client: MakeClient) -> None:
    data = {
        "app_id": APP_ID,
        "type": "USER",
        "application": "offpost",
        "data_access_expires_at": 1576687825,
        "expires_at": 0,
        "is_valid": True,
        "issued_at": 1570000000,
        "scopes": ["pages_show_list", "pages_manage_posts"],
        "granular_scopes": [
            {"scope": "pages_show_list", "target_ids": ["7", "8"]},
            {"scope": "pages_manage_posts"},
        ],
        "user_id": "10215241773831025",
    }
    client, recorder = make_client(lambda r: ok({"data": data}))
    info = client.debug_token(USER_TOKEN)
    assert query(recorder.last)["input_token"] == USER_TOKEN
    assert info.is_valid
    assert (info.app_id, info.type, info.user_id, info.error) == (
        APP_ID,
        "USER",
        "10215241773831025",
        None,
    )
    assert info.expires_at is None  # 0 means never
    assert info.data_access_expires_at == datetime.fromtimestamp(1576687825, UTC)
    assert info.issued_at == datetime.fromtimestamp(1570000000, UTC)
    assert info.scopes == ("pages_show_list", "pages_manage_posts")
    assert [(g.scope, g.target_ids) for g in info.granular_scopes] == [
        ("pages_show_list", ("7", "8")),
        ("pages_manage_posts", ()),
    ]


def test_debug_token_invalid_token_is_a_result_not_an_error(make_client: MakeClient) -> None:
    data = {
        "app_id": APP_ID,
        "type": "USER",
        "error": {
            "code": 190,
            "message": "Error validating access token: Session has expired on Wednesday.",
            "subcode": 463,
        },
        "expires_at": 1668613551,
        "is_valid": False,
        "scopes": ["public_profile"],
        "user_id": "123",
    }
    client, _ = make_client(lambda r: ok({"data": data}))
    info = client.debug_token(USER_TOKEN)
    assert info.is_valid is False
    assert info.expires_at == datetime.fromtimestamp(1668613551, UTC)
    assert info.error is not None
    assert (info.error.code, info.error.subcode, info.error.reason) == (
        190,
        463,
        AuthReason.EXPIRED,
    )


def test_debug_token_undecodable_token(make_client: MakeClient) -> None:
    data = {
        "error": {"code": 190, "message": "The access token could not be decrypted"},
        "is_valid": False,
        "scopes": [],
    }
    client, _ = make_client(lambda r: ok({"data": data}))
    info = client.debug_token("garbage")
    assert info.error is not None
    assert info.error.reason is AuthReason.INVALID_TOKEN
    assert (info.type, info.user_id, info.scopes) == (None, None, ())


def test_debug_token_without_data_is_malformed(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"nothing": True}))
    with pytest.raises(GraphMalformedResponseError):
        client.debug_token(USER_TOKEN)


def test_me(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "42", "name": "Ann"}))
    user = client.me(USER_TOKEN)
    assert (user.id, user.name) == ("42", "Ann")
    assert query(recorder.last)["fields"] == "id,name"


def test_accounts_follows_paging_across_three_pages(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        if after is None:
            return ok(
                {
                    "data": [
                        {"id": "1", "name": "One", "access_token": "EAAP1", "tasks": ["MANAGE"]}
                    ],
                    "paging": {
                        "cursors": {"before": "b1", "after": "c1"},
                        # Graph's next URL carries a token and its own host; neither is reused.
                        "next": "https://graph.facebook.com/v25.0/42/accounts?access_token=EAAOld"
                        "&fields=id%2Cname%2Caccess_token%2Ctasks&limit=1&after=c1",
                    },
                }
            )
        if after == "c1":
            return ok(
                {
                    "data": [{"id": "2", "name": "Two", "access_token": "EAAP2", "tasks": []}],
                    "paging": {
                        "cursors": {"after": "c2"},
                        "next": "https://graph.facebook.com/x?after=c2",
                    },
                }
            )
        return ok(
            {
                "data": [{"id": "3", "name": "Three", "tasks": ["ANALYZE"]}],
                "paging": {"cursors": {"before": "c2", "after": "c3"}},
            },
            **{"x-app-usage": '{"call_count": 3}'},
        )

    client, recorder = make_client(handler)
    accounts = client.accounts(USER_TOKEN)

    assert [p.id for p in accounts.pages] == ["1", "2", "3"]
    assert [p.access_token for p in accounts.pages] == ["EAAP1", "EAAP2", None]
    assert accounts.pages[0].tasks == ("MANAGE",)
    assert accounts.usage.max_pct == 3
    assert len(recorder.requests) == 3
    for request in recorder.requests:
        assert request.url.host == "graph.test"
        assert request.url.path == "/v25.0/me/accounts"
        assert query(request)["access_token"] == USER_TOKEN
        assert query(request)["fields"] == "id,name,access_token,tasks"
        assert query(request)["appsecret_proof"] == timed_proof(USER_TOKEN, APP_SECRET, NOW_S)
    assert [query(r).get("after") for r in recorder.requests] == [None, "c1", "c2"]
    assert "EAAP1" not in repr(accounts)


def test_accounts_paging_that_never_ends_is_bounded(make_client: MakeClient) -> None:
    page_number = iter(range(1000))

    def handler(request: httpx.Request) -> httpx.Response:
        n = next(page_number)
        return ok({"data": [{"id": str(n)}], "paging": {"next": f"https://g/x?after=c{n}"}})

    client, recorder = make_client(handler)
    with pytest.raises(GraphMalformedResponseError, match="did not end after 5 pages"):
        client.accounts(USER_TOKEN, max_pages=5)
    assert len(recorder.requests) == 5


def test_accounts_paging_that_repeats_itself_stops(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda r: ok({"data": [{"id": "1"}], "paging": {"next": "https://g/x?after=same"}})
    )
    with pytest.raises(GraphMalformedResponseError, match="repeats"):
        client.accounts(USER_TOKEN)
    assert len(recorder.requests) == 2


def test_page_token(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "7", "access_token": PAGE_TOKEN}))
    result = client.page_token("7", USER_TOKEN)
    assert recorder.last.url.path == "/v25.0/7"
    assert query(recorder.last)["fields"] == "access_token"
    assert (result.page_id, result.access_token) == ("7", PAGE_TOKEN)
    assert PAGE_TOKEN not in repr(result)


def test_page_token_missing_is_a_permission_error(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"id": "7"}))
    with pytest.raises(GraphPermissionError):
        client.page_token("7", USER_TOKEN)


def test_client_code(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"code": "my_neat_code"}))
    result = client.client_code(USER_TOKEN, "https://app.test/cb")
    assert result.code == "my_neat_code"
    params = query(recorder.last)
    assert recorder.last.url.path == "/v25.0/oauth/client_code"
    assert (params["client_id"], params["client_secret"], params["redirect_uri"]) == (
        APP_ID,
        APP_SECRET,
        "https://app.test/cb",
    )


def test_client_code_missing_code_is_an_error(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"unexpected": "thing"}))
    with pytest.raises(GraphMalformedResponseError, match="'code'"):
        client.client_code(USER_TOKEN, "https://app.test/cb")


# -- publishing -----------------------------------------------------------------------


def test_publish_feed_posts_fields_as_a_form(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "7_99"}))
    result = client.publish_feed("7", PAGE_TOKEN, message="Hello", link="https://example.com")
    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/v25.0/7/feed")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(request) == {"message": ["Hello"], "link": ["https://example.com"]}
    assert (result.id, result.post_id) == ("7_99", "7_99")


def test_publish_feed_needs_a_message_or_link(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "x"}))
    with pytest.raises(ValueError, match="message or a link"):
        client.publish_feed("7", PAGE_TOKEN)
    assert recorder.requests == []


def test_publish_feed_reply_without_id_leaves_the_outcome_unknown(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"success": True}))
    with pytest.raises(GraphMalformedResponseError) as caught:
        client.publish_feed("7", PAGE_TOKEN, message="hi")
    assert caught.value.outcome_unknown


def test_publish_photo(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "555", "post_id": "7_556"}))
    result = client.publish_photo("7", PAGE_TOKEN, url="https://cdn.test/a.jpg", caption="Cat")
    assert (recorder.last.method, recorder.last.url.path) == ("POST", "/v25.0/7/photos")
    assert form(recorder.last) == {"url": ["https://cdn.test/a.jpg"], "caption": ["Cat"]}
    assert (result.id, result.post_id) == ("555", "7_556")


def test_publish_duplicate_error_says_reconcile(make_client: MakeClient) -> None:
    body = {
        "error": {
            "message": "(#506) Duplicate status message",
            "code": 506,
            "type": "OAuthException",
        }
    }
    client, _ = make_client(lambda r: httpx.Response(400, json=body))
    with pytest.raises(GraphError) as caught:
        client.publish_feed("7", PAGE_TOKEN, message="again")
    assert caught.value.outcome_unknown


def test_rate_limit_reply_carries_usage_and_wait(make_client: MakeClient) -> None:
    body = {"error": {"message": "(#80001) There have been too many calls", "code": 80001}}
    buc = {"7": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 12}]}
    client, _ = make_client(
        lambda r: httpx.Response(
            400, json=body, headers={"X-Business-Use-Case-Usage": json.dumps(buc)}
        )
    )
    with pytest.raises(GraphRateLimitedError) as caught:
        client.publish_feed("7", PAGE_TOKEN, message="hi")
    assert caught.value.retry_after_s == 720
    assert caught.value.usage.for_object("7")[0].call_count_pct == 100


def test_page_posts_since_filter_and_paging(make_client: MakeClient) -> None:
    since = datetime(2026, 11, 28, 16, 59, 30, 500_000, tzinfo=UTC)
    since_s = 1795885170  # 2026-11-28T16:59:30Z, the fraction dropped
    until_s = since_s + 30

    def handler(request: httpx.Request) -> httpx.Response:
        if "until" not in request.url.params:
            return ok(
                {
                    "data": [
                        {
                            "id": "7_3",
                            "message": "third",
                            "created_time": "2026-11-28T17:05:00+0000",
                            "application": {"id": "1234", "name": "offpost"},
                        },
                        {
                            "id": "7_2",
                            "link": "https://x",
                            "created_time": "2026-11-28T17:00:00+0000",
                        },
                    ],
                    "paging": {
                        "previous": f"https://graph.facebook.com/v25.0/7/feed?since={until_s}",
                        "next": "https://graph.facebook.com/v25.0/7/feed?access_token=EAAOld"
                        f"&fields=id%2Cmessage%2Clink%2Ccreated_time&limit=2&since={since_s}"
                        f"&until={until_s}&__paging_token=enc_abc",
                    },
                }
            )
        return ok(
            {
                "data": [
                    {"id": "7_1", "message": "older", "created_time": "2026-11-28T16:59:00+0000"}
                ],
            }
        )

    client, recorder = make_client(handler)
    result = client.page_posts("7", PAGE_TOKEN, since=since, limit=2)

    first, second = recorder.requests
    assert first.url.path == "/v25.0/7/feed"
    assert query(first)["fields"] == (
        "id,message,link,created_time,application,"
        "attachments{media_type,target,subattachments{media_type,target}}"
    )
    assert query(first)["since"] == str(since_s)
    assert query(first)["limit"] == "2"
    assert (query(second)["until"], query(second)["__paging_token"]) == (str(until_s), "enc_abc")
    assert query(second)["since"] == str(since_s)
    assert query(second)["access_token"] == PAGE_TOKEN
    assert second.url.host == "graph.test"
    # The post older than ``since`` (Graph should not send it) is dropped.
    assert [p.id for p in result.posts] == ["7_3", "7_2"]
    assert result.posts[0].created_time == datetime(2026, 11, 28, 17, 5, tzinfo=UTC)
    assert result.posts[0].message == "third"
    assert (result.posts[1].message, result.posts[1].link) == (None, "https://x")
    # The app that made a post, when Graph names one (a person's post has none).
    assert [p.application_id for p in result.posts] == ["1234", None]


def test_page_posts_follows_next_past_an_empty_page(make_client: MakeClient) -> None:
    """Graph may return an empty page that still names the next one; only a missing
    ``next`` ends a listing, or a reconciliation read could miss the post it looks for."""
    pages = iter(
        [
            {
                "data": [],
                "paging": {
                    "next": "https://graph.facebook.com/v25.0/7/feed?limit=2&after=c1",
                },
            },
            {
                "data": [
                    {"id": "7_9", "message": "ours", "created_time": "2026-11-28T17:05:00+0000"}
                ]
            },
        ]
    )
    client, recorder = make_client(lambda r: ok(next(pages)))
    result = client.page_posts("7", PAGE_TOKEN, limit=2)
    assert [p.id for p in result.posts] == ["7_9"]
    assert len(recorder.requests) == 2


def test_page_posts_without_since(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"data": []}))
    assert client.page_posts("7", PAGE_TOKEN).posts == ()
    assert "since" not in query(recorder.last)


def test_page_posts_rejects_a_naive_since(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"data": []}))
    with pytest.raises(ValueError, match="timezone-aware"):
        client.page_posts("7", PAGE_TOKEN, since=datetime(2026, 1, 1))


def test_page_posts_with_unreadable_time_is_malformed(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"data": [{"id": "7_1", "created_time": "yesterday"}]}))
    with pytest.raises(GraphMalformedResponseError, match="created_time"):
        client.page_posts("7", PAGE_TOKEN)


# -- malformed replies through the client -----------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"not json at all", headers={"content-type": "text/plain"}),
        httpx.Response(
            502,
            content=b"<html><body>Bad Gateway</body></html>",
            headers={"content-type": "text/html"},
        ),
        httpx.Response(200, content=b""),
        httpx.Response(200, json={"error": {"message": "(#1) An unknown error", "code": 1}}),
        httpx.Response(200, json=[{"id": "7_1"}]),
    ],
    ids=["not-json", "html-502", "empty", "200-error-envelope", "json-list"],
)
def test_malformed_replies_raise_typed_transient_errors(
    make_client: MakeClient, response: httpx.Response
) -> None:
    client, _ = make_client(lambda r: response)
    with pytest.raises(GraphError) as caught:
        client.publish_feed("7", PAGE_TOKEN, message="hi")
    assert isinstance(caught.value, GraphTransientError)
    assert caught.value.outcome_unknown


# -- transport failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc_type", "expected", "outcome_unknown"),
    [
        (httpx.ReadTimeout, GraphTimeoutError, True),
        (httpx.WriteTimeout, GraphTimeoutError, True),
        (httpx.ConnectTimeout, GraphTimeoutError, False),
        (httpx.PoolTimeout, GraphTimeoutError, False),
        (httpx.ConnectError, GraphConnectionError, False),
        (httpx.RemoteProtocolError, GraphConnectionError, True),
        (httpx.ReadError, GraphConnectionError, True),
        (httpx.DecodingError, GraphMalformedResponseError, True),
    ],
)
def test_transport_failures_become_typed_errors_without_tokens(
    make_client: MakeClient,
    exc_type: type[httpx.RequestError],
    expected: type[GraphError],
    outcome_unknown: bool,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A worst case: the foreign message quotes the full URL, token and proof included.
        raise exc_type(f"failed talking to {request.url}", request=request)

    client, _ = make_client(handler)
    with pytest.raises(GraphError) as caught:
        client.publish_feed("7", PAGE_TOKEN, message="hi")
    error = caught.value
    assert type(error) is expected
    assert error.outcome_unknown is outcome_unknown
    assert isinstance(error.__cause__, exc_type)
    text = f"{error} {error!r}"
    assert "POST /7/feed" in text
    for secret in (PAGE_TOKEN, APP_SECRET, "access_token=EAA"):
        assert secret not in text


def test_transport_failure_on_exchange_hides_both_tokens_and_the_secret(
    make_client: MakeClient,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    client, _ = make_client(handler)
    with pytest.raises(GraphConnectionError) as caught:
        client.exchange_token("short-lived-123456")
    assert "short-lived-123456" not in str(caught.value)
    assert APP_SECRET not in str(caught.value)


# -- the http client and logging ------------------------------------------------------------


def test_make_http_client_is_bounded() -> None:
    http = make_http_client(12.5, connect_timeout_s=3.0, pool_timeout_s=2.0)
    assert http.timeout == httpx.Timeout(connect=3.0, read=12.5, write=12.5, pool=2.0)
    assert http.follow_redirects is False
    http.close()


def test_debug_log_names_the_call_without_tokens(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = make_client(lambda r: ok({"id": "7_1"}))
    with caplog.at_level(logging.DEBUG, logger="offpost.graph.client"):
        client.publish_feed("7", PAGE_TOKEN, message="hi")
    (record,) = [r for r in caplog.records if r.name == "offpost.graph.client"]
    assert record.action == "graph_call"  # type: ignore[attr-defined]
    assert "POST /7/feed -> 200" in record.getMessage()
    assert PAGE_TOKEN not in record.getMessage()

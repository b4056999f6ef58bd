"""GraphClient's calls after publishing (comments, edits, counts, insights) over
httpx.MockTransport: what goes out, what comes back."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from offpost.graph.client import is_invalid_metric
from offpost.graph.errors import GraphError, GraphMalformedResponseError, GraphRejectedError
from tests.unit.test_graph_client import PAGE_TOKEN, MakeClient, form, ok, query


def test_comment_posts_the_message_as_a_form(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "9_77"}))
    result = client.comment("7_9", PAGE_TOKEN, message="Thanks!")
    assert (recorder.last.method, recorder.last.url.path) == ("POST", "/v25.0/7_9/comments")
    assert form(recorder.last) == {"message": ["Thanks!"]}
    assert query(recorder.last)["access_token"] == PAGE_TOKEN
    assert "appsecret_proof" in query(recorder.last)
    assert PAGE_TOKEN.encode() not in recorder.last.content
    assert (result.id, result.post_id) == ("9_77", None)


def test_comment_without_id_leaves_the_outcome_unknown(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({}))
    with pytest.raises(GraphMalformedResponseError) as caught:
        client.comment("7_9", PAGE_TOKEN, message="hi")
    assert caught.value.is_transient


def test_comment_needs_a_message(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"id": "1"}))
    with pytest.raises(ValueError, match="message"):
        client.comment("7_9", PAGE_TOKEN, message="")
    assert recorder.requests == []


def test_comments_follow_paging_and_filter_since(make_client: MakeClient) -> None:
    pages = iter(
        [
            ok(
                {
                    "data": [
                        {
                            "id": "9_1",
                            "message": "old",
                            "created_time": "2026-11-28T16:00:00+0000",
                            "from": {"id": "7", "name": "Page"},
                        },
                        {
                            "id": "9_2",
                            "message": "Thanks!",
                            "created_time": "2026-11-28T17:00:00+0000",
                            "from": {"id": "7", "name": "Page"},
                        },
                    ],
                    "paging": {"next": "https://graph.facebook.com/v25.0/7_9/comments?after=Mg"},
                }
            ),
            ok(
                {
                    "data": [
                        {
                            "id": "9_3",
                            "message": "Thanks!",
                            "created_time": "2026-11-28T17:01:00+0000",
                            "from": {"id": "123", "name": "Ann"},
                        },
                        {"id": "9_4", "created_time": "2026-11-28T17:02:00+0000"},
                    ]
                }
            ),
        ]
    )
    client, recorder = make_client(lambda r: next(pages))
    since = datetime(2026, 11, 28, 16, 30, tzinfo=UTC)
    result = client.comments("7_9", PAGE_TOKEN, since=since)
    first = query(recorder.requests[0])
    assert first["fields"] == "id,message,created_time,from"
    assert (first["filter"], first["order"]) == ("stream", "chronological")
    assert first["since"] == str(int(since.timestamp()))
    assert query(recorder.requests[1])["after"] == "Mg"
    assert [(c.id, c.message, c.from_id) for c in result.comments] == [
        ("9_2", "Thanks!", "7"),
        ("9_3", "Thanks!", "123"),
        ("9_4", None, None),
    ]


def test_edit_post(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda r: ok({"success": True}))
    assert client.edit_post("7_9", PAGE_TOKEN, message="Fixed typo") is True
    assert (recorder.last.method, recorder.last.url.path) == ("POST", "/v25.0/7_9")
    assert form(recorder.last) == {"message": ["Fixed typo"]}
    with pytest.raises(ValueError, match="message"):
        client.edit_post("7_9", PAGE_TOKEN, message="")


def test_edit_of_another_apps_post_is_refused(make_client: MakeClient) -> None:
    error = {"message": "(#200) An app can only update…", "type": "OAuthException", "code": 200}
    client, _ = make_client(lambda r: httpx.Response(403, json={"error": error}))
    with pytest.raises(GraphError) as caught:
        client.edit_post("7_9", PAGE_TOKEN, message="x")
    assert caught.value.code == 200


def test_post_stats_reads_summaries_and_absent_shares(make_client: MakeClient) -> None:
    body = {
        "id": "7_9",
        "message": "Hello",
        "created_time": "2026-11-28T17:00:00+0000",
        "updated_time": "2026-11-28T18:00:00+0000",
        "is_published": True,
        "reactions": {"data": [], "summary": {"total_count": 12}},
        "comments": {"data": [], "summary": {"total_count": 3}},
    }
    client, recorder = make_client(lambda r: ok(body))
    stats = client.post_stats("7_9", PAGE_TOKEN)
    fields = query(recorder.last)["fields"]
    assert "reactions.summary(total_count).limit(0)" in fields
    assert "comments.summary(total_count).limit(0)" in fields
    assert "shares" in fields.split(",")
    assert (stats.id, stats.message, stats.reactions, stats.comments, stats.shares) == (
        "7_9",
        "Hello",
        12,
        3,
        0,
    )
    assert stats.updated_time == datetime(2026, 11, 28, 18, tzinfo=UTC)
    assert stats.exists is True


def test_post_stats_with_shares_and_without_summaries(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"id": "7_9", "shares": {"count": 4}}))
    stats = client.post_stats("7_9", PAGE_TOKEN)
    assert (stats.reactions, stats.comments, stats.shares, stats.updated_time) == (0, 0, 4, None)


def test_post_stats_of_a_deleted_post_raises_the_classified_error(
    make_client: MakeClient,
) -> None:
    error = {
        "message": "Unsupported get request. Object with ID '7_9' does not exist",
        "type": "GraphMethodException",
        "code": 100,
        "error_subcode": 33,
    }
    client, _ = make_client(lambda r: httpx.Response(400, json={"error": error}))
    with pytest.raises(GraphRejectedError) as caught:
        client.post_stats("7_9", PAGE_TOKEN)
    assert (caught.value.code, caught.value.subcode) == (100, 33)


def test_post_insights(make_client: MakeClient) -> None:
    body = {
        "data": [
            {
                "name": "post_media_view",
                "period": "lifetime",
                "values": [{"value": 321}],
                "title": "Lifetime Post Views",
                "id": "7_9/insights/post_media_view/lifetime",
            },
            {"name": "post_clicks", "period": "lifetime", "values": [{"value": "oops"}]},
        ]
    }
    client, recorder = make_client(lambda r: ok(body))
    result = client.post_insights(
        "7_9", PAGE_TOKEN, metrics=["post_media_view", "post_clicks", "post_media_view", "x"]
    )
    assert recorder.last.url.path == "/v25.0/7_9/insights"
    assert query(recorder.last)["metric"] == "post_media_view,post_clicks,x"
    assert result.values == {"post_media_view": 321, "post_clicks": None, "x": None}


def test_post_insights_of_a_page_without_insights(make_client: MakeClient) -> None:
    client, _ = make_client(lambda r: ok({"data": []}))
    result = client.post_insights("7_9", PAGE_TOKEN, metrics=["post_media_view"])
    assert result.values == {"post_media_view": None}


@pytest.mark.parametrize("metrics", [[], "post_media_view", ["a", ""]])
def test_post_insights_refuses_bad_metric_lists(make_client: MakeClient, metrics: object) -> None:
    client, recorder = make_client(lambda r: ok({"data": []}))
    with pytest.raises(ValueError):
        client.post_insights("7_9", PAGE_TOKEN, metrics=metrics)  # type: ignore[arg-type]
    assert recorder.requests == []


def test_a_deprecated_metric_fails_the_whole_call(make_client: MakeClient) -> None:
    error = {
        "message": "(#100) The value must be a valid insights metric",
        "type": "OAuthException",
        "code": 100,
        "fbtrace_id": "AopRcG7C9CvH87dfKcN6Yc7",
    }
    client, _ = make_client(lambda r: httpx.Response(400, json={"error": error}))
    with pytest.raises(GraphRejectedError) as caught:
        client.post_insights("7_9", PAGE_TOKEN, metrics=["post_impressions", "post_clicks"])
    assert is_invalid_metric(caught.value)
    assert not caught.value.outcome_unknown

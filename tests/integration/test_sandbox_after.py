"""After publishing, against the sandbox over HTTP through GraphClient: comments (the Page's
and a person's), edits, deletes, a post's counts and its insights — and faults on each."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from offpost.graph.client import GraphClient, is_invalid_metric, make_http_client
from offpost.graph.errors import GraphError, GraphPermissionError, GraphRejectedError
from offpost.graph.sandbox import RunningSandbox
from tests.integration.sandbox_support import SandboxClient, error_of

VIDEO = bytes((i * 7) % 251 for i in range(50_000))
LIVE_METRICS = ["post_media_view", "post_total_media_view_unique", "post_clicks"]


@pytest.fixture
def client(sandbox_server: RunningSandbox) -> Iterator[GraphClient]:
    http = make_http_client(10.0)
    yield GraphClient(
        http,
        graph_url=sandbox_server.url,
        version="v26.0",
        app_id=sandbox_server.app_id,
        app_secret=sandbox_server.app_secret,
    )
    http.close()


def person_comment(graph: SandboxClient, post_id: str, message: str) -> dict[str, Any]:
    body = {"message": message, "name": "Ann Person", "person_id": "4242"}
    result: dict[str, Any] = graph.control("POST", f"/posts/{post_id}/comments", body)
    return result


def lose_reply(graph: SandboxClient, path: str, method: str) -> None:
    graph.fault(path=path, method=method, after_effect=True, drop_response=True)


# --- comments -------------------------------------------------------------------------


def test_comment_as_the_page_and_a_persons_identical_comment(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="Doors open at 8").id
    ours = client.comment(post_id, token, message="See you there!")
    assert ours.post_id is None
    person_comment(graph, post_id, "See you there!")

    found = client.comments(post_id, token).comments
    assert [(c.message, c.from_id) for c in found] == [
        ("See you there!", page_id),
        ("See you there!", "4242"),
    ]
    assert found[0].id == ours.id
    # Raw Graph shape: from{id,name}, reverse order on request.
    raw = graph.get(
        f"/{post_id}/comments",
        token,
        fields="id,message,created_time,from",
        filter="stream",
        order="reverse_chronological",
    ).json()
    assert [c["from"]["id"] for c in raw["data"]] == ["4242", page_id]
    assert raw["data"][1]["from"]["name"].startswith("Sandbox Page")
    # since: only comments from then on.
    later = datetime.now(UTC) + timedelta(seconds=graph.advance(3600) - datetime.now().timestamp())
    person_comment(graph, post_id, "later")
    assert [c.message for c in client.comments(post_id, token, since=later).comments] == ["later"]


def test_comment_needs_a_page_token_with_engagement(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, user = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="hello").id
    as_user = graph.post(f"/{post_id}/comments", user["access_token"], message="hi")
    assert error_of(as_user)["code"] == 1705
    assert error_of(as_user)["message"] == "(#1705) There was an error posting to this wall"
    narrow = graph.mint_user(
        scopes=["pages_show_list", "pages_manage_posts", "pages_read_engagement"]
    )
    narrow_page = narrow["pages"][0]["id"]
    narrow_token = graph.page_token(narrow["access_token"], narrow_page)
    narrow_post = client.publish_feed(narrow_page, narrow_token, message="mine").id
    with pytest.raises(GraphPermissionError) as caught:
        client.comment(narrow_post, narrow_token, message="hi")
    assert caught.value.code == 200
    assert graph.control("GET", f"/posts/{narrow_post}/comments")["data"] == []


def test_a_lost_comment_reply_leaves_the_comment_made(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="lost").id
    lose_reply(graph, "/comments$", "POST")
    with pytest.raises(GraphError) as lost:
        client.comment(post_id, token, message="Thanks all")
    assert lost.value.outcome_unknown
    # Reconcile: the Page's comment with that text is there.
    found = client.comments(post_id, token).comments
    assert [(c.message, c.from_id) for c in found] == [("Thanks all", page_id)]


def test_comments_on_a_photo_go_to_its_post_and_a_reel_takes_them_too(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    photo = client.upload_photo(page_id, token, data=b"\xff\xd8photo", caption="cat")
    assert photo.post_id is not None
    client.comment(photo.id, token, message="on the photo")
    assert [c.message for c in client.comments(photo.post_id, token).comments] == ["on the photo"]
    reel = client.reel_start(page_id, token)
    client.reel_upload(reel.upload_url, token, data=VIDEO)
    assert client.reel_finish(page_id, token, video_id=reel.video_id)
    client.comment(reel.video_id, token, message="on the reel")
    assert [c.message for c in client.comments(reel.video_id, token).comments] == ["on the reel"]


# --- edits ----------------------------------------------------------------------------


def test_edit_changes_message_and_updated_time(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="Helo").id
    before = client.post_stats(post_id, token)
    graph.advance(120)
    assert client.edit_post(post_id, token, message="Hello") is True
    after = client.post_stats(post_id, token)
    assert (before.message, after.message) == ("Helo", "Hello")
    assert before.updated_time is not None
    assert after.updated_time is not None
    assert after.updated_time - before.updated_time >= timedelta(seconds=120)
    # Photo posts' text can change too.
    photo = client.upload_photo(page_id, token, data=b"\xff\xd8p", caption="old caption")
    assert photo.post_id is not None
    assert client.edit_post(photo.post_id, token, message="new caption")
    assert client.post_stats(photo.post_id, token).message == "new caption"


def test_edit_is_refused_for_video_posts_and_other_apps_posts(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    video = client.publish_video(page_id, token, data=VIDEO, description="clip")
    video_post = next(v for v in graph.control("GET", f"/pages/{page_id}/videos")["data"])
    with pytest.raises(GraphRejectedError) as caught:
        client.edit_post(video_post["post_id"], token, message="new")
    assert caught.value.code == 100
    assert video.id == video_post["id"]
    # A person's post (no app): an app can only update posts it made.
    theirs = graph.control("POST", f"/pages/{page_id}/posts", {"message": "by hand"})
    with pytest.raises(GraphPermissionError) as refused:
        client.edit_post(theirs["id"], token, message="edited")
    assert refused.value.code == 200
    # A reel's video id is not a post.
    reel = client.reel_start(page_id, token)
    reply = graph.post(f"/{reel.video_id}", token, message="x")
    assert (error_of(reply)["code"], error_of(reply)["error_subcode"]) == (100, 33)


def test_a_lost_edit_reply_leaves_the_edit_made_and_repeating_is_harmless(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="v1").id
    # params matching: only the edit carrying this message is struck.
    graph.fault(
        path=f"/{post_id}$",
        method="POST",
        params={"message": "v2"},
        after_effect=True,
        drop_response=True,
    )
    with pytest.raises(GraphError) as lost:
        client.edit_post(post_id, token, message="v2")
    assert lost.value.outcome_unknown
    assert client.post_stats(post_id, token).message == "v2"
    assert client.edit_post(post_id, token, message="v2") is True


# --- deletes --------------------------------------------------------------------------


def test_delete_twice_and_everything_after(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="bye").id
    assert client.delete_object(post_id, token) is True
    with pytest.raises(GraphRejectedError) as again:
        client.delete_object(post_id, token)
    assert (again.value.code, again.value.subcode) == (100, 33)
    for call in (
        lambda: client.post_stats(post_id, token),
        lambda: client.comment(post_id, token, message="hi"),
        lambda: client.comments(post_id, token),
        lambda: client.edit_post(post_id, token, message="x"),
        lambda: client.post_insights(post_id, token, metrics=LIVE_METRICS),
    ):
        with pytest.raises(GraphRejectedError) as gone:
            call()
        assert gone.value.code == 100


def test_delete_a_multi_photo_post_a_video_and_a_reel(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    ids = [
        client.upload_photo(page_id, token, data=bytes([n]) * 9, published=False).id
        for n in range(2)
    ]
    album = client.publish_feed(page_id, token, message="two", attached_media=ids).id
    video = client.publish_video(page_id, token, data=VIDEO)
    reel = client.reel_start(page_id, token)
    client.reel_upload(reel.upload_url, token, data=VIDEO)
    client.reel_finish(page_id, token, video_id=reel.video_id)
    for object_id in (album, video.id, reel.video_id):
        assert client.delete_object(object_id, token) is True
        with pytest.raises(GraphRejectedError):
            client.delete_object(object_id, token)
    assert client.page_posts(page_id, token).posts == ()


def test_a_lost_delete_reply_leaves_it_deleted(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="x").id
    lose_reply(graph, f"/{post_id}$", "DELETE")
    with pytest.raises(GraphError) as lost:
        client.delete_object(post_id, token)
    assert lost.value.outcome_unknown
    with pytest.raises(GraphRejectedError) as again:
        client.delete_object(post_id, token)
    assert again.value.subcode == 33  # already deleted
    assert graph.posts(page_id)[0]["deleted"] is True


# --- counts and insights --------------------------------------------------------------


def test_post_stats_raw_shape(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="shape").id
    fields = (
        "id,message,created_time,updated_time,is_published,shares,"
        "reactions.summary(total_count).limit(0),comments.summary(total_count).limit(0)"
    )
    fresh = graph.get(f"/{post_id}", token, fields=fields).json()
    assert fresh["reactions"] == {"data": [], "summary": {"total_count": 0}}
    assert fresh["comments"] == {"data": [], "summary": {"total_count": 0}}
    assert "shares" not in fresh  # none yet: Graph leaves it out
    assert fresh["is_published"] is True
    graph.advance(48 * 3600)
    aged = graph.get(f"/{post_id}", token, fields=fields).json()
    assert aged["shares"]["count"] > 0
    assert aged["reactions"]["summary"]["total_count"] > 0


def test_counts_and_insights_grow_with_the_sandbox_clock(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="grow").id
    client.comment(post_id, token, message="first!")
    stats = [client.post_stats(post_id, token)]
    insights = [client.post_insights(post_id, token, metrics=LIVE_METRICS).values]
    assert stats[0].comments == 1  # ours, no audience yet
    for hours in (1, 5, 24, 24 * 7):
        graph.advance(hours * 3600)
        stats.append(client.post_stats(post_id, token))
        insights.append(client.post_insights(post_id, token, metrics=LIVE_METRICS).values)
    for before, after in itertools.pairwise(stats):
        assert after.reactions >= before.reactions
        assert after.comments >= before.comments
        assert after.shares >= before.shares
    for before_i, after_i in itertools.pairwise(insights):
        for name in LIVE_METRICS:
            assert (after_i[name] or 0) >= (before_i[name] or 0)
    assert insights[-1]["post_media_view"] > insights[0]["post_media_view"] >= 0  # type: ignore[operator]
    assert insights[-1]["post_media_view"] >= insights[-1]["post_total_media_view_unique"]  # type: ignore[operator]
    assert stats[-1].reactions > 0
    # Deterministic: the same post reads the same at the same moment.
    assert client.post_insights(post_id, token, metrics=LIVE_METRICS).values == insights[-1]


def test_insights_raw_shape(graph: SandboxClient, client: GraphClient) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="raw").id
    graph.advance(3600)
    body = graph.get(f"/{post_id}/insights", token, metric="post_media_view").json()
    (entry,) = body["data"]
    assert entry["name"] == "post_media_view"
    assert entry["period"] == "lifetime"
    assert isinstance(entry["values"][0]["value"], int)
    assert entry["title"]
    assert entry["id"] == f"{post_id}/insights/post_media_view/lifetime"
    missing = graph.get(f"/{post_id}/insights", token)
    assert (error_of(missing)["code"], error_of(missing)["error_subcode"]) == (3001, 1504028)


def test_a_deprecated_metric_fails_the_whole_call_and_the_rest_works_without_it(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="metrics").id
    asked = ["post_impressions", *LIVE_METRICS]
    with pytest.raises(GraphRejectedError) as refused:
        client.post_insights(post_id, token, metrics=asked)
    assert is_invalid_metric(refused.value)
    assert refused.value.message == "(#100) The value must be a valid insights metric"
    values = client.post_insights(post_id, token, metrics=LIVE_METRICS).values
    assert set(values) == set(LIVE_METRICS)
    # A test can bring the old metric back, or deprecate a live one.
    graph.control("PUT", f"/pages/{page_id}/insights", {"deprecated_metrics": ["post_clicks"]})
    assert client.post_insights(post_id, token, metrics=["post_impressions"]).values
    with pytest.raises(GraphRejectedError) as now_refused:
        client.post_insights(post_id, token, metrics=LIVE_METRICS)
    assert is_invalid_metric(now_refused.value)
    with pytest.raises(GraphRejectedError):
        client.post_insights(post_id, token, metrics=["no_such_metric"])


def test_a_page_without_insights_answers_an_empty_list(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="small page").id
    state = graph.control("PUT", f"/pages/{page_id}/insights", {"available": False})
    assert state["available"] is False
    assert graph.get(f"/{post_id}/insights", token, metric="post_clicks").json() == {"data": []}
    assert client.post_insights(post_id, token, metrics=["post_clicks"]).values == {
        "post_clicks": None
    }
    # A deprecated metric is still refused.
    with pytest.raises(GraphRejectedError):
        client.post_insights(post_id, token, metrics=["post_impressions_unique"])


# --- the machinery: proof, usage, faults, call log ---------------------------------------


def test_new_paths_need_the_proof_are_metered_and_logged(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="meter").id
    graph.control("DELETE", "/calls")
    for path, params in (
        (f"/{post_id}/comments", {}),
        (f"/{post_id}/insights", {"metric": "post_clicks"}),
        (f"/{post_id}", {"fields": "reactions.summary(true)"}),
    ):
        unproven = graph.get(path, token, proof=False, **params)
        assert error_of(unproven)["message"] == (
            "API calls from the server require an appsecret_proof argument"
        )
        reply = graph.get(path, token, **params)
        assert reply.status_code == 200, reply.text
        assert "call_count" in json.loads(reply.headers["x-page-usage"])
        assert page_id in json.loads(reply.headers["x-business-use-case-usage"])
    no_proof_edit = graph.post(f"/{post_id}", token, proof=False, message="x")
    assert error_of(no_proof_edit)["code"] == 100
    calls = graph.control("GET", "/calls")["data"]
    assert {call["path"].split("?")[0] for call in calls} >= {
        f"/v26.0/{post_id}/comments",
        f"/v26.0/{post_id}/insights",
        f"/v26.0/{post_id}",
    }
    # Calls refused for their proof never reach the Page; the others are counted on it.
    assert all(call["page_id"] == page_id for call in calls if call["status"] == 200)
    assert all(call["proof"] == "absent" for call in calls if call["status"] != 200)
    assert token not in json.dumps(calls)


def test_faults_strike_the_new_paths_by_path_and_params(
    graph: SandboxClient, client: GraphClient
) -> None:
    page_id, token, _ = graph.publisher()
    post_id = client.publish_feed(page_id, token, message="faults").id
    graph.fault(path="/insights$", params={"metric": "post_clicks"}, status=500)
    values = client.post_insights(post_id, token, metrics=["post_media_view"]).values
    assert values["post_media_view"] is not None  # other params: untouched
    with pytest.raises(GraphError) as struck:
        client.post_insights(post_id, token, metrics=["post_clicks"])
    assert struck.value.code == 2
    graph.fault(path="/comments$", method="GET", error={"code": 4, "message": "(#4) limit"})
    with pytest.raises(GraphError) as limited:
        client.comments(post_id, token)
    assert limited.value.code == 4
    assert graph.control("GET", "/faults")["data"] == []

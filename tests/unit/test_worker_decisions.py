"""The worker's pure decisions: backoff, what an error means, what text is sent, reconciliation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from offpost.graph.errors import (
    GraphAuthError,
    GraphConnectionError,
    GraphDuplicateError,
    GraphError,
    GraphMalformedResponseError,
    GraphPermissionError,
    GraphRateLimitedError,
    GraphRejectedError,
    GraphTimeoutError,
    GraphTransientError,
)
from offpost.graph.types import FeedPost
from offpost.models.attempt import Sent
from offpost.scheduler.dispatcher import chunks, chunks_by_due, sleep_seconds
from offpost.workers.decide import (
    Action,
    RetryPolicy,
    action_for,
    error_document,
    post_text,
    retry_delay_s,
)
from offpost.workers.reconcile import Sought, find_published

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 15, 30), (2, 30, 60), (3, 60, 120), (7, 960, 1920), (20, 1800, 3600)],
)
def test_backoff_doubles_with_jitter_and_a_cap(attempt: int, low: float, high: float) -> None:
    policy = RetryPolicy(base_s=30, cap_s=3600)
    delays = [policy.delay_s(attempt, random.Random(seed)) for seed in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 2  # it really is jittered


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (GraphTransientError("unknown", code=1), Action.RETRY_RECONCILE),
        (GraphTransientError("unexpected", code=2, http_status=500), Action.RETRY_RECONCILE),
        (GraphTimeoutError("read timeout"), Action.RETRY_RECONCILE),
        (GraphMalformedResponseError("html"), Action.RETRY_RECONCILE),
        (GraphDuplicateError("(#506) Duplicate status message", code=506), Action.RETRY_RECONCILE),
        (GraphRateLimitedError("(#4) limit", code=4, retry_after_s=60), Action.WAIT),
        (GraphRateLimitedError("(#80001) page", code=80001, retry_after_s=60), Action.WAIT),
        (GraphAuthError("Session has expired", code=190, subcode=463), Action.REAUTH),
        (GraphAuthError("session", code=102), Action.REAUTH),
        (GraphPermissionError("(#200) needs pages_manage_posts", code=200), Action.FAIL),
        (GraphRejectedError("(#100) bad parameter", code=100), Action.FAIL),
        (GraphRejectedError("deemed abusive", code=368, subcode=1346003), Action.FAIL),
        (GraphError("something else", code=12345), Action.FAIL),
    ],
)
def test_action_for_each_kind_of_error(error: GraphError, action: Action) -> None:
    assert action_for(error) is action


def test_a_request_that_never_left_is_retried_without_reconciling() -> None:
    refused = GraphConnectionError("connection refused", outcome_unknown=False)
    assert action_for(refused) is Action.RETRY
    reset = GraphConnectionError("connection reset mid-reply")
    assert action_for(reset) is Action.RETRY_RECONCILE


def test_error_document_keeps_graph_fields_and_names_transport_failures() -> None:
    graph = GraphRejectedError("(#100) Invalid parameter", code=100, subcode=33, fbtrace_id="Ab1")
    assert error_document(graph) == {
        "code": 100,
        "subcode": 33,
        "message": "(#100) Invalid parameter",
        "fbtrace_id": "Ab1",
    }
    assert error_document(GraphTimeoutError("timed out"))["code"] == "timeout"
    assert error_document(GraphConnectionError("reset"))["code"] == "connection_error"


@pytest.mark.parametrize(
    ("message", "link", "photo", "text"),
    [
        ("hello", None, None, "hello"),
        ("hello", "https://a.example", None, "hello"),  # a feed post carries the link itself
        ("caption", "https://a.example", "https://img.example/1.png", "caption\nhttps://a.example"),
        (None, "https://a.example", "https://img.example/1.png", "https://a.example"),
        (None, None, "https://img.example/1.png", None),
    ],
)
def test_post_text(
    message: str | None, link: str | None, photo: str | None, text: str | None
) -> None:
    assert post_text(message, link, photo) == text


APP = "1234"


def _feed(
    *posts: tuple[str, str | None, str | None, timedelta], app: str | None = APP
) -> list[FeedPost]:
    return [
        FeedPost(id=i, message=m, link=link, created_time=T0 + dt, application_id=app)
        for i, m, link, dt in posts
    ]


def _sought(
    text: str, link: str | None = None, lasted: timedelta = timedelta(seconds=10)
) -> Sought:
    """An attempt that sent ``text`` (and ``link``), started at T0 and lasted ``lasted``."""
    return Sought.of(Sent.of(text, link, None), T0, T0 + lasted, timedelta(seconds=15))


def test_reconcile_finds_the_earliest_post_the_attempt_made_inside_its_window() -> None:
    feed = _feed(
        ("old", "hi", None, -timedelta(hours=1)),
        ("ours", "hi", None, timedelta(seconds=2)),
        ("later", "hi", None, timedelta(seconds=30)),
        ("other", "bye", None, timedelta(seconds=1)),
    )
    found = find_published(feed, [_sought("hi")], app_id=APP)
    assert found is not None
    assert found.id == "ours"


def test_reconcile_allows_clock_skew_but_not_posts_outside_the_window() -> None:
    # The window: from the start less the skew, to the end plus the settling time and the skew.
    feed = _feed(("skewed", "hi", None, -timedelta(seconds=30)))
    assert find_published(feed, [_sought("hi")], app_id=APP) is not None
    feed = _feed(("old", "hi", None, -timedelta(minutes=5)))
    assert find_published(feed, [_sought("hi")], app_id=APP) is None
    feed = _feed(("much later", "hi", None, timedelta(minutes=5)))
    assert find_published(feed, [_sought("hi")], app_id=APP) is None


def test_reconcile_matches_what_the_attempt_sent_not_the_posts_text_now() -> None:
    feed = _feed(("sent", "Sale at 9", None, timedelta(seconds=1)))
    assert find_published(feed, [_sought("Sale at 10 (corrected)")], app_id=APP) is None
    assert find_published(feed, [_sought("  Sale at 9\n")], app_id=APP) is not None


def test_reconcile_never_adopts_a_post_another_app_or_a_person_made() -> None:
    for app in (None, "999"):
        feed = _feed(("lookalike", "hi", None, timedelta(seconds=1)), app=app)
        assert find_published(feed, [_sought("hi")], app_id=APP) is None


def test_reconcile_skips_posts_other_offpost_posts_adopted_and_checks_the_link() -> None:
    feed = _feed(
        ("taken", "hi", None, timedelta(seconds=1)), ("free", "hi", None, timedelta(seconds=2))
    )
    found = find_published(feed, [_sought("hi")], app_id=APP, taken={"taken"})
    assert found is not None
    assert found.id == "free"
    feed = _feed(("x", "hi", "https://other.example", timedelta(seconds=1)))
    assert find_published(feed, [_sought("hi", "https://mine.example")], app_id=APP) is None


@pytest.mark.parametrize(
    ("next_due", "expected"),
    [
        (None, 2.0),
        (T0 + timedelta(seconds=0.3), 0.3),
        (T0 + timedelta(hours=1), 2.0),
        (T0 - timedelta(seconds=5), 0.0),
    ],
)
def test_dispatcher_sleeps_until_the_next_due_post_bounded(
    next_due: datetime | None, expected: float
) -> None:
    assert sleep_seconds(T0, next_due, 2.0) == pytest.approx(expected)


def test_chunks() -> None:
    assert chunks([str(i) for i in range(5)], 2) == [["0", "1"], ["2", "3"], ["4"]]
    assert chunks([], 3) == []


# -- how long a post waits after a failed attempt --------------------------------------


def test_a_timeout_waits_for_the_call_it_gave_up_on_to_settle() -> None:
    """A reconciliation read too soon after a timeout could miss a post Graph makes late."""
    policy = RetryPolicy(base_s=0.5, cap_s=2)
    timeout = GraphTimeoutError("Graph did not answer POST /1/feed within 15 s")
    assert timeout.outcome_unknown
    for attempts in range(1, 6):
        assert retry_delay_s(timeout, attempts, policy, settle_s=15.0) == 15.0
    # A long backoff is not shortened by the settling time.
    slow = RetryPolicy(base_s=60, cap_s=3600)
    assert retry_delay_s(timeout, 1, slow, settle_s=15.0, rng=random.Random(1)) >= 30.0


def test_a_timeout_that_never_left_and_other_errors_wait_the_backoff_only() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=2)
    never_sent = GraphTimeoutError("could not connect", outcome_unknown=False)
    reset = GraphConnectionError("the connection was reset")
    server = GraphTransientError("An unexpected error has occurred", code=2)
    for error in (never_sent, reset, server):
        assert retry_delay_s(error, 1, policy, settle_s=15.0, rng=random.Random(2)) <= 0.5


def test_a_duplicate_is_reconciled_at_once() -> None:
    duplicate = GraphDuplicateError("(#506) Duplicate status message", code=506)
    assert retry_delay_s(duplicate, 3, RetryPolicy(), settle_s=15.0) == 0.0


def test_posts_due_at_one_instant_share_a_message_where_they_fit() -> None:
    at = [T0 + timedelta(seconds=n) for n in range(4)]
    timed = [("a", at[0]), ("b", at[0]), ("c", at[1]), ("d", at[1]), ("e", at[1])]
    timed += [("f", at[2])] + [(f"g{n}", at[3]) for n in range(5)]
    # c, d, e would straddle a cut after 4: they start a message of their own.
    assert chunks_by_due(timed, 4) == [
        ["a", "b"],
        ["c", "d", "e", "f"],
        ["g0", "g1", "g2", "g3"],
        ["g4"],
    ]
    assert chunks_by_due([], 4) == []
    every = [post_id for message in chunks_by_due(timed, 3) for post_id in message]
    assert every == [post_id for post_id, _ in timed]

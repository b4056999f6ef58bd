"""The Graph error tree: shape, outcome_unknown, scrubbing, pickling."""

from __future__ import annotations

import pickle

import pytest

from offpost.errors import OffpostError
from offpost.graph.errors import (
    AuthReason,
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
    RateLimitScope,
    RejectReason,
    scrub_secrets,
)
from offpost.graph.usage import GraphUsage, UsageCounters

TOKEN = "EAAB" + "x1Y2z3" * 30


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (GraphError, OffpostError),
        (GraphTransientError, GraphError),
        (GraphTimeoutError, GraphTransientError),
        (GraphConnectionError, GraphTransientError),
        (GraphMalformedResponseError, GraphTransientError),
        (GraphRateLimitedError, GraphError),
        (GraphAuthError, GraphError),
        (GraphPermissionError, GraphError),
        (GraphRejectedError, GraphError),
        (GraphDuplicateError, GraphError),
    ],
)
def test_tree(cls: type[GraphError], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)


@pytest.mark.parametrize(
    ("error", "outcome_unknown"),
    [
        (GraphTransientError("x"), True),
        (GraphTimeoutError("x"), True),
        (GraphConnectionError("x"), True),
        (GraphMalformedResponseError("x"), True),
        (GraphDuplicateError("x"), True),
        (GraphRateLimitedError("x"), False),
        (GraphAuthError("x"), False),
        (GraphPermissionError("x"), False),
        (GraphRejectedError("x"), False),
        # A request that provably never left narrows the class default.
        (GraphConnectionError("x", outcome_unknown=False), False),
    ],
)
def test_outcome_unknown(error: GraphError, outcome_unknown: bool) -> None:
    assert error.outcome_unknown is outcome_unknown


def test_str_names_code_subcode_status_and_trace() -> None:
    error = GraphAuthError(
        "Error validating access token: Session has expired",
        code=190,
        subcode=463,
        http_status=400,
        fbtrace_id="AbC",
        reason=AuthReason.EXPIRED,
    )
    assert str(error) == (
        "Error validating access token: Session has expired "
        "(code=190, subcode=463, http_status=400, fbtrace_id=AbC)"
    )
    assert error.is_expired


def test_messages_are_scrubbed_of_tokens() -> None:
    error = GraphRejectedError(
        f"bad token {TOKEN} in /me?access_token=abc123secret&fields=id",
        user_message=f"token {TOKEN}",
    )
    for text in (str(error), error.message, repr(error), error.user_message or ""):
        assert TOKEN not in text
        assert "abc123secret" not in text


@pytest.mark.parametrize(
    "text",
    [
        f"token {TOKEN} here",
        "app token 1234567890|0123456789abcdef0123456789abcdef",
        "app token 1234567890%7C0123456789abcdef0123456789abcdef",
        '{"access_token": "plain-json-value-1234"}',
        "input_token=anything&client_secret=shh-secret",
    ],
)
def test_scrub_secrets(text: str) -> None:
    out = scrub_secrets(text)
    for secret in (
        TOKEN,
        "0123456789abcdef0123456789abcdef",
        "plain-json-value-1234",
        "anything",
        "shh-secret",
    ):
        assert secret not in out


def test_scrub_keeps_ordinary_text_and_removes_named_secrets() -> None:
    text = "(#200) requires pages_manage_posts on page 1234567"
    assert scrub_secrets(text) == text
    secret = "5f4dcc3b5aa765d61d8327deb882cf99"  # an app secret's shape: 32 hex digits
    assert secret not in scrub_secrets(f"the secret {secret}", (secret,))


def test_errors_pickle_with_every_attribute() -> None:
    usage = GraphUsage(app=UsageCounters(call_count_pct=99))
    error = GraphRateLimitedError(
        "(#4) Application request limit reached",
        retry_after_s=120,
        scope=RateLimitScope.APP,
        code=4,
        is_transient=True,
        usage=usage,
    )
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is GraphRateLimitedError
    assert (clone.retry_after_s, clone.scope, clone.code, clone.usage) == (120, "app", 4, usage)
    assert str(clone) == str(error)

    rejected = pickle.loads(pickle.dumps(GraphRejectedError("x", reason=RejectReason.PROOF)))
    assert rejected.reason is RejectReason.PROOF

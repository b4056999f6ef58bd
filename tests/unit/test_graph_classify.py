"""classify_error against docs/design.md's classification table, row by row; malformed replies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offpost.graph.classify import ONE_WINDOW_S, classify_error
from offpost.graph.errors import (
    AuthReason,
    GraphAuthError,
    GraphDuplicateError,
    GraphError,
    GraphMalformedResponseError,
    GraphPermissionError,
    GraphRateLimitedError,
    GraphRejectedError,
    GraphTransientError,
    RateLimitScope,
    RejectReason,
)

JSON = "application/json; charset=UTF-8"


def envelope(code: int | None, message: str, subcode: int | None = None, **extra: Any) -> bytes:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "fbtrace_id": "Ftr"}
    if code is not None:
        error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    return json.dumps({"error": error}).encode()


def classify(status: int, body: bytes, headers: dict[str, str] | None = None) -> GraphError | None:
    return classify_error(status, body, JSON, headers or {})


def row(
    status: int,
    code: int | None,
    subcode: int | None,
    message: str,
    expected: type[GraphError],
    extra: dict[str, Any] | None = None,
    /,
    **attributes: Any,
) -> Any:
    """One line of the table: the reply, then the class and attributes it must become."""
    name = f"{status}-{code}-{subcode}-{expected.__name__}-{message[:24]}"
    return pytest.param(status, code, subcode, message, extra or {}, expected, attributes, id=name)


EXPIRED_MSG = "Error validating access token: Session has expired on Wednesday, 16-Nov-22."
PASSWORD_MSG = (
    "Error validating access token: The session has been invalidated because the user changed "
    "their password or Facebook has changed the session for security reasons."
)
IMPERSONATE_MSG = (
    "Any of the pages_read_engagement, pages_manage_posts permission(s) must be granted before "
    "impersonating a user's page."
)
POST_PERMS_MSG = (
    "(#200) If posting to a page, requires both pages_read_engagement and pages_manage_posts as "
    "an admin with sufficient administrative permission"
)
ALREADY_POSTED_MSG = (
    "You've already posted this. Posting the same content repeatedly on Facebook isn't allowed."
)
APP, USER, PAGE = RateLimitScope.APP, RateLimitScope.USER, RateLimitScope.PAGE
TRANSIENT = {"is_transient": True}

# fmt: off
TABLE = [
    # 1, 2, is_transient, HTTP 5xx: transient, outcome unknown (reconcile, then retry)
    row(500, 1, None, "An unknown error has occurred.", GraphTransientError, outcome_unknown=True),
    row(500, 2, None, "An unexpected error has occurred.", GraphTransientError, TRANSIENT,
        is_transient=True, outcome_unknown=True),
    row(400, 1, None, "An unknown error has occurred.", GraphTransientError),
    row(400, 9999, None, "Something odd", GraphTransientError, TRANSIENT, is_transient=True),
    row(503, 9999, None, "Service unavailable", GraphTransientError, outcome_unknown=True),
    # rate limits: wait; the call was refused, so the outcome is known
    row(400, 4, None, "(#4) Application request limit reached", GraphRateLimitedError, TRANSIENT,
        scope=APP, retry_after_s=ONE_WINDOW_S, outcome_unknown=False),
    row(400, 17, None, "(#17) User request limit reached", GraphRateLimitedError, scope=USER),
    row(400, 17, 2446079, "(#17) User request limit reached", GraphRateLimitedError, scope=USER),
    row(400, 32, None, "(#32) Page request limit reached", GraphRateLimitedError, scope=PAGE),
    row(400, 613, 1996, "Calls to this api have exceeded the rate limit.", GraphRateLimitedError,
        scope=APP),
    row(400, 80001, None, "(#80001) There have been too many calls to this Page account.",
        GraphRateLimitedError, scope=PAGE, retry_after_s=ONE_WINDOW_S),
    row(400, 80004, 2446079, "(#80004) too many calls", GraphRateLimitedError, scope=PAGE),
    row(400, 80014, None, "(#80014) too many calls", GraphRateLimitedError, scope=PAGE),
    row(400, 368, 1390008, "You're going too fast", GraphRateLimitedError, scope=PAGE),
    # 190 with its subcodes, 102: needs_reauth
    row(400, 190, 458, "Error validating access token: User 1 has not authorized application 2.",
        GraphAuthError, reason=AuthReason.APP_NOT_INSTALLED),
    row(400, 190, 459, "Error validating access token: checkpoint", GraphAuthError,
        reason=AuthReason.CHECKPOINTED),
    row(400, 190, 460, PASSWORD_MSG, GraphAuthError, reason=AuthReason.PASSWORD_CHANGED,
        is_expired=False),
    row(400, 190, 463, EXPIRED_MSG, GraphAuthError, reason=AuthReason.EXPIRED, is_expired=True),
    row(400, 190, 464, "Error validating access token: not a confirmed user", GraphAuthError,
        reason=AuthReason.UNCONFIRMED_USER),
    row(400, 190, 467, "Error validating access token: The user is not logged in.",
        GraphAuthError, reason=AuthReason.INVALID_TOKEN),
    row(400, 190, 492, "Error validating access token", GraphAuthError,
        reason=AuthReason.ROLE_LOST),
    row(400, 102, None, "Session key invalid or no longer valid", GraphAuthError,
        reason=AuthReason.UNKNOWN),
    row(401, 190, None, "Malformed access token", GraphAuthError,
        reason=AuthReason.INVALID_TOKEN),
    # 190 without a subcode: the message decides
    row(400, 190, None, EXPIRED_MSG, GraphAuthError, reason=AuthReason.EXPIRED),
    row(400, 190, None, PASSWORD_MSG, GraphAuthError, reason=AuthReason.PASSWORD_CHANGED),
    row(400, 190, None, "Error validating access token: User 123 has not authorized application 4.",
        GraphAuthError, reason=AuthReason.APP_NOT_INSTALLED),
    row(400, 190, None, "The access token could not be decrypted", GraphAuthError,
        reason=AuthReason.INVALID_TOKEN),
    row(400, 190, None, "The access token is invalid since the user hasn't engaged the app in "
        "longer than 90 days.", GraphAuthError, reason=AuthReason.EXPIRED),
    row(400, 190, None, IMPERSONATE_MSG, GraphAuthError, reason=AuthReason.PERMISSION_MISSING),
    row(400, 190, None, "Error validating access token", GraphAuthError,
        reason=AuthReason.UNKNOWN),
    # permissions: failed, naming the permission when the message does
    row(403, 200, None, POST_PERMS_MSG, GraphPermissionError, outcome_unknown=False,
        missing_permissions=("pages_read_engagement", "pages_manage_posts")),
    row(400, 10, None, "(#10) Application does not have permission for this action",
        GraphPermissionError, missing_permissions=()),
    row(403, 299, None, "(#299) Requires extended permission: manage_pages", GraphPermissionError,
        missing_permissions=("manage_pages",)),
    row(400, 200, None, "(#200) Unpublished posts must be posted to a page as the page itself.",
        GraphPermissionError),
    # rejected: failed
    row(400, 368, None, "The action attempted has been deemed abusive", GraphRejectedError,
        {"error_data": {"sentry_block_data": "x"}}, reason=RejectReason.POLICY),
    row(400, 368, 1346003, "It looks like you were misusing this feature", GraphRejectedError,
        reason=RejectReason.POLICY),
    row(400, 100, None, "Invalid appsecret_proof provided in the API argument", GraphRejectedError,
        {"type": "GraphMethodException"}, reason=RejectReason.PROOF, type="GraphMethodException"),
    row(400, 100, None, "API calls from the server require an appsecret_proof argument",
        GraphRejectedError, reason=RejectReason.PROOF),
    row(400, 100, None, "(#100) Invalid parameter", GraphRejectedError,
        reason=RejectReason.BAD_PARAMETER),
    row(500, 100, None, "(#100) Invalid parameter", GraphRejectedError,
        reason=RejectReason.BAD_PARAMETER),
    row(400, 341, None, "(#341) Application limit reached", GraphRejectedError,
        reason=RejectReason.APP_LIMIT),
    row(400, 1609005, None, "Error posting link", GraphRejectedError, reason=RejectReason.OTHER),
    row(400, None, None, "Something without a code", GraphRejectedError,
        reason=RejectReason.OTHER),
    # duplicates: reconcile, it is almost always our own earlier attempt
    row(400, 506, None, "(#506) Duplicate status message", GraphDuplicateError,
        outcome_unknown=True),
    row(400, None, None, "(#506) Duplicate status message", GraphDuplicateError, code=506),
    row(400, 368, None, ALREADY_POSTED_MSG, GraphDuplicateError, outcome_unknown=True),
    row(400, 368, None, "Blocked", GraphDuplicateError,
        {"error_user_msg": "You've already posted this."}),
    # a 200 with an error envelope is still an error
    row(200, 190, 463, EXPIRED_MSG, GraphAuthError, reason=AuthReason.EXPIRED),
]
# fmt: on


@pytest.mark.parametrize(
    ("status", "code", "subcode", "message", "extra", "expected", "attributes"), TABLE
)
def test_classification_table(
    status: int,
    code: int | None,
    subcode: int | None,
    message: str,
    extra: dict[str, Any],
    expected: type[GraphError],
    attributes: dict[str, Any],
) -> None:
    error = classify(status, envelope(code, message, subcode, **extra))
    assert type(error) is expected
    assert error.message == message
    assert error.fbtrace_id == "Ftr"
    assert error.http_status == status
    if "code" not in attributes:
        assert error.code == code
    assert error.subcode == subcode
    for name, value in attributes.items():
        assert getattr(error, name) == value, name


def test_all_envelope_fields_are_carried() -> None:
    body = envelope(
        368,
        "Blocked",
        1346003,
        type="OAuthException",
        error_user_title="Post blocked",
        error_user_msg="Your post looks like spam",
        is_transient=False,
    )
    error = classify(400, body, {"x-app-usage": '{"call_count": 91}'})
    assert isinstance(error, GraphRejectedError)
    assert (error.code, error.subcode, error.type) == (368, 1346003, "OAuthException")
    assert (error.user_title, error.user_message) == ("Post blocked", "Your post looks like spam")
    assert error.is_transient is False
    assert error.usage.max_pct == 91


def test_string_codes_are_read_as_numbers() -> None:
    body = json.dumps({"error": {"message": "x", "code": "190", "error_subcode": "460"}}).encode()
    error = classify(400, body)
    assert isinstance(error, GraphAuthError)
    assert error.reason is AuthReason.PASSWORD_CHANGED


def test_error_that_is_a_string_is_still_an_error() -> None:
    error = classify(400, b'{"error": "invalid_request"}')
    assert isinstance(error, GraphRejectedError)
    assert error.message == "invalid_request"


def test_token_in_graph_message_is_scrubbed() -> None:
    token = "EAAGm0PX4ZCpsBAKZAvQ9xZC0ZAhZB1ZBiZA7ZBb8ZC" + "q" * 60
    error = classify(400, envelope(190, f"Invalid OAuth access token {token}"))
    assert error is not None
    assert token not in str(error)
    assert token not in error.message


# -- rate-limit waits ---------------------------------------------------------


def test_buc_estimate_in_minutes_sets_retry_after_seconds() -> None:
    headers = {
        "x-business-use-case-usage": json.dumps(
            {"111": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 7}]}
        )
    }
    error = classify(400, envelope(80001, "(#80001) too many calls"), headers)
    assert isinstance(error, GraphRateLimitedError)
    assert error.retry_after_s == 420


def test_buc_estimate_of_zero_falls_back_to_the_default() -> None:
    headers = {"x-business-use-case-usage": '{"111": [{"type": "pages", "call_count": 100}]}'}
    error = classify(400, envelope(80001, "(#80001) too many calls"), headers)
    assert isinstance(error, GraphRateLimitedError)
    assert error.retry_after_s == ONE_WINDOW_S


def test_retry_after_header_is_honoured_without_a_buc_estimate() -> None:
    error = classify(
        400, envelope(4, "(#4) Application request limit reached"), {"Retry-After": "90"}
    )
    assert isinstance(error, GraphRateLimitedError)
    assert error.retry_after_s == 90


def test_bare_429_is_a_rate_limit() -> None:
    error = classify_error(429, b"Too Many Requests", "text/plain", {"retry-after": "30"})
    assert isinstance(error, GraphRateLimitedError)
    assert (error.retry_after_s, error.http_status) == (30, 429)


# -- success and malformed replies ----------------------------------------------


@pytest.mark.parametrize(
    "body", [b'{"id": "1_2"}', b'{"data": [], "paging": {}}', b'{"success": true}', b"{}"]
)
def test_success(body: bytes) -> None:
    assert classify(200, body) is None


@pytest.mark.parametrize(
    ("status", "body", "content_type", "described"),
    [
        (200, b"this is not json", "text/plain", "not JSON"),
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "text/html",
            "HTML page",
        ),
        (500, b"<!DOCTYPE html><html>oops</html>", None, "HTML page"),
        (200, b"", JSON, "empty body"),
        (500, b"   ", JSON, "empty body"),
        (200, b"[1, 2, 3]", JSON, "not Graph's object (list)"),
        (200, b"true", JSON, "not Graph's object (bool)"),
        (200, b'{"id": "1_2"', JSON, "not JSON"),
        (400, b'{"unexpected": 1}', JSON, "not Graph's object (dict)"),
        (302, b"", "text/html", "empty body"),
        (200, b"\xff\xfe\x00garbage", JSON, "not JSON"),
        (200, b"[" * 100_000, JSON, "not JSON"),
    ],
)
def test_malformed_replies_are_typed_transient_errors(
    status: int, body: bytes, content_type: str | None, described: str
) -> None:
    error = classify_error(status, body, content_type, {})
    assert isinstance(error, GraphMalformedResponseError)
    assert isinstance(error, GraphTransientError)
    assert error.outcome_unknown is True
    assert error.http_status == status
    assert described in error.message


@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps({"error": value}).encode()),
    ),
)
def test_classify_never_raises(status: int, body: bytes) -> None:
    result = classify_error(status, body, None, {})
    assert result is None or isinstance(result, GraphError)

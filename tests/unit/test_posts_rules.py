"""The rules a post must meet: pure functions and the request schemas, no I/O."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from offpost.api.schemas import AttemptOut, PostBatchCreate
from offpost.models import (
    Credential,
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
    PostStatus,
    is_id,
)
from offpost.models.ids import IdPrefix
from offpost.posts.idempotency import check_key
from offpost.posts.input import PostCreate
from offpost.posts.rules import (
    MAX_MESSAGE_LENGTH,
    Cursor,
    CursorError,
    FieldProblem,
    PostInputError,
    check_url,
    content_problem,
    decode_cursor,
    encode_cursor,
    initial_status,
    parse_rfc3339,
    publish_at_problem,
)
from offpost.posts.store import earliest_due, new_post_ids
from offpost.views import PostOut

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# --- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T09:00:00+01:00", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("2026-12-01t09:00:00z", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("2026-12-01 09:00:00-05:30", datetime(2026, 12, 1, 14, 30, tzinfo=UTC)),
        ("2026-12-01T09:00:00.5+00:00", datetime(2026, 12, 1, 9, 0, 0, 500000, tzinfo=UTC)),
        ("2026-12-01T09:00:00.123456789Z", datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_with_an_offset_become_utc(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01T09:00:00",  # naive
        "2026-12-01",  # a date
        "2026-12-01T09:00+01:00",  # no seconds
        "2026-13-01T09:00:00Z",  # no month 13
        "2026-02-30T09:00:00Z",
        "2026-12-01T24:00:00Z",
        "2026-12-01T09:00:00+25:00",
        "9999-12-31T23:00:00-05:00",  # past datetime's range in UTC
        "tomorrow",
        "",
        1767258000,  # a unix time
        None,
        datetime(2026, 12, 1, 9, 0),  # naive datetime
        "\uff12\uff10\uff12\uff16-12-01T09:00:00Z",  # full-width digits
    ],
)
def test_other_times_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|offset|not a valid time"):
        parse_rfc3339(value)


def test_publish_at_may_be_five_minutes_late_not_more() -> None:
    assert publish_at_problem(None, NOW) is None
    assert publish_at_problem(NOW + timedelta(days=300), NOW) is None
    assert publish_at_problem(NOW - timedelta(minutes=5), NOW) is None
    problem = publish_at_problem(NOW - timedelta(minutes=5, seconds=1), NOW)
    assert problem is not None
    assert "past" in problem


# --- URLs and content --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "http://example.com/a/b?c=d&e=f#g",
        "HTTPS://Example.COM:8443/x",
        "https://bücher.example/straße",
        "https://[2001:db8::1]/photo.jpg",
        "https://127.0.0.1/p.png",
        "https://sub_domain.example.com/",
        "https://example.com/" + "a" * 2000,
    ],
)
def test_good_urls_are_kept_as_sent(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "//example.com/path",
        "example.com",
        "https://",
        "http:///path",
        "https://exa mple.com",
        "https://example.com/a b",
        "https://example.com/\n",
        "https://user:secret@example.com/",
        "https://example.com:99999/",
        "https://example.com:port/",
        "https://-bad-.example.com/",
        "https://exa$mple.com/",
        "https://[::1/",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_url(url)


def test_content_needs_one_of_three() -> None:
    assert content_problem(None, None, None) is not None
    assert content_problem("hi", None, None) is None
    assert content_problem(None, "https://e.com", None) is None
    assert content_problem(None, None, "https://e.com/p.jpg") is None


# --- the request schema ------------------------------------------------------------------------


def _errors(body: Any, model: Any = PostCreate) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return {".".join(str(p) for p in e["loc"]): e["type"] for e in info.value.errors()}


def test_message_is_kept_exactly_and_limited() -> None:
    body = PostCreate.model_validate(
        {"credential_id": "cred_x", "target": "1", "message": "  two spaces\n"}
    )
    assert body.message == "  two spaces\n"
    assert PostCreate.model_validate(
        {"credential_id": "c", "target": "1", "message": "é" * MAX_MESSAGE_LENGTH}
    ).message
    assert "message" in _errors({"target": "1", "message": "x" * (MAX_MESSAGE_LENGTH + 1)})
    assert "message" in _errors({"target": "1", "message": " \n\t "})
    assert "message" in _errors({"target": "1", "message": ""})


def test_schema_names_each_bad_field() -> None:
    errors = _errors(
        {
            "target": "1",
            "link": "ftp://x",
            "photo_url": "javascript:1",
            "publish_at": "2026-12-01T09:00:00",
            "colour": "red",
        }
    )
    assert set(errors) == {"link", "photo_url", "publish_at", "colour"}
    assert errors["colour"] == "extra_forbidden"
    assert "target" in _errors({"message": "x"})


def test_batch_paths_name_the_item() -> None:
    items: list[dict[str, Any]] = [{"target": "1", "message": "ok"} for _ in range(20)]
    items[17]["publish_at"] = "yesterday"
    items[3]["link"] = "nope"
    errors = _errors({"posts": items}, PostBatchCreate)
    assert set(errors) == {"posts.17.publish_at", "posts.3.link"}
    assert "posts" in _errors({"posts": []}, PostBatchCreate)
    too_many = [{"target": "1", "message": "ok"}] * 1001
    assert "posts" in _errors({"posts": too_many}, PostBatchCreate)


# --- credentials -------------------------------------------------------------------------------


def _credential(
    status: CredentialStatus = CredentialStatus.ACTIVE,
    token: PageTokenStatus = PageTokenStatus.VALID,
    tasks: list[str] | None = None,
) -> Credential:
    credential = Credential(id="cred_aaaaaaaaaaaaaaaaaaaa", fb_user_id="9", status=status)
    credential.pages = [CredentialPage(page_id="111", name="P", token_status=token, tasks=tasks)]
    return credential


def test_initial_status_follows_the_page() -> None:
    assert initial_status(_credential(), "111") is PostStatus.SCHEDULED
    assert initial_status(_credential(CredentialStatus.EXPIRING), "111") is PostStatus.SCHEDULED
    # The user token's end stops nothing: the Page token publishes.
    expired = _credential(CredentialStatus.USER_TOKEN_EXPIRED)
    assert initial_status(expired, "111") is PostStatus.SCHEDULED
    # Another Page's dead token stops nothing here either.
    assert initial_status(_credential(CredentialStatus.NEEDS_REAUTH), "111") is PostStatus.SCHEDULED
    dead = _credential(CredentialStatus.NEEDS_REAUTH, PageTokenStatus.DEAD)
    assert initial_status(dead, "111") is PostStatus.NEEDS_REAUTH
    no_task = initial_status(_credential(tasks=["ANALYZE", "MODERATE"]), "111")
    assert isinstance(no_task, FieldProblem)
    assert (no_task.field, no_task.code) == ("target", "page_not_postable")
    assert "CREATE_CONTENT" in no_task.message
    assert initial_status(_credential(tasks=["CREATE_CONTENT"]), "111") is PostStatus.SCHEDULED
    deleted = initial_status(_credential(CredentialStatus.DELETED), "111")
    assert deleted == FieldProblem("credential_id", deleted.message, "conflict")  # type: ignore[union-attr]
    missing = initial_status(None, "111")
    assert isinstance(missing, FieldProblem)
    assert (missing.field, missing.code) == ("credential_id", "invalid_request")
    other_page = initial_status(_credential(), "222")
    assert isinstance(other_page, FieldProblem)
    assert other_page.field == "target"


def test_the_worst_problem_decides_the_code() -> None:
    conflict = FieldProblem("credential_id", "deleted", "conflict")
    token = FieldProblem("access_token", "rejected", "invalid_token")
    bad = FieldProblem("link", "bad")
    assert PostInputError([conflict]).code == "conflict"
    assert PostInputError([conflict, token]).code == "invalid_token"
    assert PostInputError([conflict, token, bad]).code == "invalid_request"


# --- cursor, ids, output -----------------------------------------------------------------------


def test_cursor_round_trips_and_refuses_tampering() -> None:
    cursor = Cursor(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), "post_" + "a" * 20)
    text = encode_cursor(cursor)
    assert decode_cursor(text) == cursor
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    tampered = base64.urlsafe_b64encode(raw.replace("12:00", "11:00").encode()).decode()
    for bad in (tampered, text[:-2], "abc", "", "!!!!", text + "x", "é"):
        with pytest.raises(CursorError):
            decode_cursor(bad)


def test_post_ids_have_the_model_shape_and_differ() -> None:
    ids = new_post_ids(2000)
    assert len(set(ids)) == 2000
    assert all(is_id(i, IdPrefix.POST) for i in ids)


def test_idempotency_keys() -> None:
    assert check_key("order-42/retry") is None
    assert check_key("k" * 255) is None
    assert check_key("k" * 256) is not None
    assert check_key("") is not None
    assert check_key("naïve") is not None
    assert check_key("tab\there") is not None


def test_earliest_due_counts_only_scheduled_posts() -> None:
    rows = [
        {"status": PostStatus.NEEDS_REAUTH, "due_at": NOW - timedelta(hours=1)},
        {"status": PostStatus.SCHEDULED, "due_at": NOW + timedelta(hours=2)},
        {"status": PostStatus.SCHEDULED, "due_at": NOW + timedelta(hours=1)},
    ]
    assert earliest_due(rows) == NOW + timedelta(hours=1)
    assert earliest_due(rows[:1]) is None


def test_post_out_renders_z_times_and_errors() -> None:
    row = {
        "id": "post_x",
        "status": PostStatus.FAILED,
        "credential_id": "cred_x",
        "target": "1",
        "message": "m",
        "link": None,
        "photo_url": None,
        "publish_at": datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        "schedule_id": None,
        "attempts": 5,
        "last_error": {"code": 368, "subcode": None, "message": "blocked", "fbtrace_id": "t"},
        "created_at": NOW,
        "updated_at": NOW,
    }
    out = PostOut.of(row).model_dump(mode="json")
    assert list(out) == [
        "id",
        "status",
        "credential_id",
        "target",
        "message",
        "link",
        "photo_url",
        "photos",
        "video",
        "reel",
        "first_comment",
        "publish_at",
        "schedule_id",
        "attempts",
        "graph_post_id",
        "published_at",
        "last_error",
        "created_at",
        "updated_at",
        "insights",
    ]
    assert out["publish_at"] == "2026-03-01T12:00:00Z"
    assert out["status"] == "failed"
    assert out["last_error"] == row["last_error"]
    assert out["graph_post_id"] is None


def test_attempt_codes_are_numbers_when_graph_gave_them() -> None:
    from offpost.models import Attempt, AttemptOutcome  # noqa: PLC0415 - local to this test

    graph = Attempt(
        number=1,
        started_at=NOW,
        outcome=AttemptOutcome.RETRY,
        error_code="2",
        error_message="x",
    )
    ours = Attempt(number=2, started_at=NOW, error_code="timeout", error_message="t")
    clean = Attempt(number=3, started_at=NOW, outcome=AttemptOutcome.PUBLISHED)
    assert AttemptOut.of(graph).model_dump()["error"]["code"] == 2
    assert AttemptOut.of(ours).model_dump()["error"]["code"] == "timeout"
    assert AttemptOut.of(ours).outcome is None
    assert AttemptOut.of(clean).error is None


def test_publish_at_at_most_five_years_ahead() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert publish_at_problem(now + timedelta(days=5 * 365), now) is None
    assert publish_at_problem(now + timedelta(days=6 * 365), now) == "is more than five years ahead"
    assert publish_at_problem(datetime(9999, 12, 31, tzinfo=UTC), now) is not None

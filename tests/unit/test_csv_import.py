"""The CSV import's logic: reading lines, local times, choosing credentials, the API's rules."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from offpost.models import Credential, CredentialPage, CredentialStatus, PageTokenStatus, PostStatus
from offpost.posts.csv_import import (
    CredentialIndex,
    CsvImportError,
    ImportCounts,
    LineProblem,
    Row,
    check_row,
    import_rows,
    parse_publish_at,
    read_rows,
)
from offpost.posts.store import NewPost
from offpost.recurrence import load_zone

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HEADER = "target,message,link,photo_url,publish_at,timezone"


def rows_of(data: bytes) -> list[Row | LineProblem]:
    """``read_rows`` over ``data`` opened as ``offpost import`` opens a file."""
    return list(read_rows(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")))


def only_rows(data: bytes) -> list[Row]:
    out = rows_of(data)
    assert all(isinstance(r, Row) for r in out), out
    return [r for r in out if isinstance(r, Row)]


# --- reading -------------------------------------------------------------------------------


def test_lines_are_numbered_as_in_the_file_across_crlf_blank_lines_and_quoted_newlines() -> None:
    data = (
        "\ufeff" + HEADER + "\r\n"
        "111,first,,,,\r\n"
        "\r\n"
        '111,"two\r\nlines, with a comma",,,,\r\n'
        "   ,  ,,,,\r\n"
        "111,last,,,,\r\n"
    ).encode()

    rows = only_rows(data)

    assert [(r.line, r.cells["message"]) for r in rows] == [
        (2, "first"),
        (4, "two\r\nlines, with a comma"),
        (7, "last"),
    ]


def test_the_bom_does_not_become_part_of_the_first_column_name() -> None:
    rows = only_rows(b"\xef\xbb\xbftarget,message\n111,hi\n")

    assert rows[0].cells == {"target": "111", "message": "hi"}


def test_columns_may_come_in_any_order_and_case_and_some_may_be_missing() -> None:
    rows = only_rows(b" Message ,TARGET\nhello,111\n")

    assert rows[0].cells == {"message": "hello", "target": "111"}


def test_missing_trailing_cells_are_empty_and_extra_cells_are_a_problem_of_that_line() -> None:
    out = rows_of(f"{HEADER}\n111,short\n111,a,,,,,extra\n".encode())

    assert isinstance(out[0], Row)
    assert out[0].cells["publish_at"] == ""
    assert out[1] == LineProblem(3, None, "has 7 cells but the header names 6")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the file is empty"),
        (b"\n\n", "the file is empty"),
        (b"\ntarget,message\n", "line 1 is empty"),
        (b"target,mesage\n", "line 1: unknown column 'mesage'"),
        (b"target,message,message\n", "line 1: column 'message' appears twice"),
        (b"message,link\n", "line 1: the header has no 'target' column"),
        (b"111,hello\n", "line 1: unknown column '111', 'hello'"),
    ],
)
def test_a_bad_header_refuses_the_whole_file(data: bytes, expected: str) -> None:
    with pytest.raises(CsvImportError, match="^" + expected.replace("(", r"\(")):
        rows_of(data)


def test_a_file_that_is_not_utf8_is_refused_with_one_clear_message() -> None:
    data = f"{HEADER}\n111,caf\xe9,,,,\n".encode("latin-1")

    with pytest.raises(CsvImportError, match=r"not UTF-8 text .* save it as UTF-8"):
        rows_of(data)


def test_utf16_from_a_spreadsheet_is_refused_too() -> None:
    with pytest.raises(CsvImportError, match="not UTF-8"):
        rows_of(f"{HEADER}\n111,hello,,,,\n".encode("utf-16"))


def test_an_unclosed_quote_names_the_line_where_the_field_started() -> None:
    data = f'{HEADER}\n111,ok,,,,\n111,"never closed,,,,\n111,more,,,,\n'.encode()

    with pytest.raises(CsvImportError, match=r"^line 3: the file is not valid CSV"):
        rows_of(data)


# --- publish_at ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2030-07-01T09:00:00+02:00", None, datetime(2030, 7, 1, 7, 0, tzinfo=UTC)),
        ("2030-07-01T09:00:00Z", "Asia/Tokyo", datetime(2030, 7, 1, 9, 0, tzinfo=UTC)),
        ("2030-07-01 09:00", "Asia/Tokyo", datetime(2030, 7, 1, 0, 0, tzinfo=UTC)),
        ("2030-07-01T09:00:30", "America/New_York", datetime(2030, 7, 1, 13, 0, 30, tzinfo=UTC)),
        # Berlin springs forward on 2030-03-31 at 02:00: 03:30 is already summer time.
        ("2030-03-31 03:30", "Europe/Berlin", datetime(2030, 3, 31, 1, 30, tzinfo=UTC)),
        ("2030-03-31 01:30", "Europe/Berlin", datetime(2030, 3, 31, 0, 30, tzinfo=UTC)),
        # 2030-10-27 02:30 happens twice in Berlin: the first one (summer time) counts.
        ("2030-10-27 02:30", "Europe/Berlin", datetime(2030, 10, 27, 0, 30, tzinfo=UTC)),
        ("2030-07-01 09:00", "Australia/Lord_Howe", datetime(2030, 6, 30, 22, 30, tzinfo=UTC)),
        ("", "Europe/Berlin", None),
        ("  ", None, None),
    ],
)
def test_publish_at(text: str, zone: str | None, expected: datetime | None) -> None:
    assert parse_publish_at(text, load_zone(zone) if zone else None) == expected


@pytest.mark.parametrize(
    ("text", "zone", "reason"),
    [
        ("2030-03-31 02:30", "Europe/Berlin", "does not exist in Europe/Berlin"),
        ("2030-03-10 02:15", "America/New_York", "does not exist in America/New_York"),
        ("2030-07-01 09:00", None, "the line has no timezone"),
        ("2030-07-01", "Europe/Berlin", "must be an RFC 3339 time"),
        ("tomorrow", "Europe/Berlin", "must be an RFC 3339 time"),
        ("1893456000", None, "must be an RFC 3339 time"),
        ("2030-02-30 09:00", "Europe/Berlin", "is not a valid time"),
        ("2030-02-30T09:00:00Z", None, "is not a valid time"),
        ("2030-07-01 9:00+02:00", None, "must be an RFC 3339 time"),
    ],
)
def test_publish_at_refused(text: str, zone: str | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_publish_at(text, load_zone(zone) if zone else None)


# --- checking a line -----------------------------------------------------------------------


def credential(
    cred_id: str,
    *pages: str,
    status: CredentialStatus = CredentialStatus.ACTIVE,
    token: PageTokenStatus = PageTokenStatus.VALID,
) -> Credential:
    return Credential(
        id=cred_id,
        status=status,
        pages=[CredentialPage(page_id=p, name=f"Page {p}", token_status=token) for p in pages],
    )


CRED_A = "cred_" + "A" * 20
CRED_B = "cred_" + "B" * 20
CRED_GONE = "cred_" + "D" * 20


@pytest.fixture
def index() -> CredentialIndex:
    return CredentialIndex(
        [
            credential(CRED_A, "111", "222"),
            credential(CRED_B, "222", "333"),
            credential(CRED_GONE, "444", status=CredentialStatus.DELETED),
            credential(
                "cred_" + "R" * 20,
                "555",
                status=CredentialStatus.NEEDS_REAUTH,
                token=PageTokenStatus.DEAD,
            ),
        ]
    )


Check = Callable[..., NewPost | list[LineProblem]]


@pytest.fixture
def check(index: CredentialIndex) -> Check:
    def run(index_: CredentialIndex | None = None, **cells: str) -> NewPost | list[LineProblem]:
        full = {"target": "111", "message": "hello"} | cells
        return check_row(Row(5, full), index_ or index, NOW)

    return run


def problems(outcome: NewPost | list[LineProblem]) -> list[str]:
    assert isinstance(outcome, list), outcome
    return [str(p) for p in outcome]


def test_a_good_line_is_a_post_on_the_credential_of_its_page(check: Check) -> None:
    post = check(link="https://example.com/a", publish_at="2030-07-01 09:00", timezone="UTC")

    assert post == NewPost(
        credential_id=CRED_A,
        target="111",
        message="hello",
        link="https://example.com/a",
        photo_url=None,
        publish_at=datetime(2030, 7, 1, 9, 0, tzinfo=UTC),
    )


def test_an_empty_publish_at_means_now(check: Check) -> None:
    post = check()

    assert isinstance(post, NewPost)
    assert post.publish_at == NOW


def test_a_message_keeps_its_whitespace_and_target_is_trimmed(check: Check) -> None:
    post = check(target=" 111 ", message="  two\nlines  ")

    assert isinstance(post, NewPost)
    assert (post.target, post.message) == ("111", "  two\nlines  ")


def test_the_default_zone_applies_to_lines_without_one(index: CredentialIndex) -> None:
    row = Row(2, {"target": "111", "message": "m", "publish_at": "2030-07-01 09:00"})

    post = check_row(row, index, NOW, default_zone=load_zone("Europe/Paris"))

    assert isinstance(post, NewPost)
    assert post.publish_at == datetime(2030, 7, 1, 7, 0, tzinfo=UTC)


def test_a_line_for_a_page_whose_token_died_is_accepted_as_the_api_does(check: Check) -> None:
    post = check(target="555")

    assert isinstance(post, NewPost)
    assert post.status is PostStatus.NEEDS_REAUTH


_NO_CREDENTIAL = (
    "is not a Page of any credential of this client: "
    "submit its user's token first (POST /v1/credentials)"
)
_BAD_ZONE = "unknown time zone 'Mars/Olympus': use an IANA name such as Europe/Berlin"


@pytest.mark.parametrize(
    ("cells", "field", "message"),
    [
        (
            {"message": ""},
            "message",
            "give at least one of message, link, photo_url, photos, video or reel",
        ),
        ({"message": "   "}, "message", "must not be blank"),
        ({"message": "x" * 63_207}, "message", "String should have at most 63206 characters"),
        ({"link": "ftp://example.com"}, "link", "must be an http:// or https:// URL"),
        (
            {"photo_url": "https://u:p@example.com/x.jpg"},
            "photo_url",
            "must not contain a user name or password",
        ),
        (
            {"publish_at": "2020-01-01T00:00:00Z"},
            "publish_at",
            "is more than 5 minutes in the past",
        ),
        ({"timezone": "Mars/Olympus"}, "timezone", _BAD_ZONE),
        ({"target": ""}, "target", "is required: the id of the Page to post on"),
        ({"target": "9" * 65}, "target", "String should have at most 64 characters"),
        ({"target": "999"}, "target", _NO_CREDENTIAL),
        (
            {"target": "222"},
            "target",
            f"is a Page of 2 credentials ({CRED_A}, {CRED_B}): choose one with --credential",
        ),
        (
            {"target": "444"},
            "credential_id",
            f"credential {CRED_GONE} is deleted: submit a fresh token",
        ),
    ],
)
def test_bad_lines_say_what_is_wrong_as_the_api_would(
    check: Check, cells: dict[str, str], field: str, message: str
) -> None:
    assert problems(check(**cells)) == [f"line 5: {field}: {message}"]


def test_every_problem_of_a_line_is_reported(check: Check) -> None:
    reported = problems(
        check(target="999", message="", link="nope", publish_at="yesterday", timezone="Nowhere")
    )

    fields = [p.split(":")[1].strip() for p in reported]
    assert fields == ["timezone", "publish_at", "link", "target"]


def test_a_bad_timezone_is_reported_once_not_again_as_publish_at(check: Check) -> None:
    assert problems(check(publish_at="2030-07-01 09:00", timezone="Mars/Olympus")) == [
        f"line 5: timezone: {_BAD_ZONE}"
    ]


def test_the_chosen_credential_carries_every_line_and_must_own_the_page() -> None:
    credentials = [credential(CRED_A, "111", "222"), credential(CRED_B, "222", "333")]
    chosen = CredentialIndex(credentials, CRED_B)

    post = check_row(Row(2, {"target": "222", "message": "m"}), chosen, NOW)
    refused = check_row(Row(3, {"target": "111", "message": "m"}), chosen, NOW)

    assert isinstance(post, NewPost)
    assert post.credential_id == CRED_B
    assert problems(refused) == [f"line 3: target: is not a Page of credential {CRED_B}"]


def test_choosing_a_credential_the_client_does_not_have_refuses_the_file() -> None:
    with pytest.raises(CsvImportError, match="the client has no credential 'cred_nope'"):
        CredentialIndex([credential(CRED_A, "111")], "cred_nope")


def test_a_deleted_credential_does_not_make_a_page_ambiguous() -> None:
    index = CredentialIndex(
        [credential(CRED_A, "111"), credential(CRED_GONE, "111", status=CredentialStatus.DELETED)]
    )

    post = check_row(Row(2, {"target": "111", "message": "m"}), index, NOW)

    assert isinstance(post, NewPost)
    assert post.credential_id == CRED_A


# --- driving -------------------------------------------------------------------------------


def fake_post(n: int) -> NewPost:
    return NewPost(CRED_A, "111", f"m{n}", None, None, NOW)


def drive(
    outcomes: list[NewPost | list[LineProblem] | LineProblem], *, skip_bad: bool, batch: int = 2
) -> tuple[ImportCounts, list[list[str | None]], list[str]]:
    rows: list[Row | LineProblem] = [
        o if isinstance(o, LineProblem) else Row(i + 2, {}) for i, o in enumerate(outcomes)
    ]
    by_line = {i + 2: o for i, o in enumerate(outcomes)}
    inserted: list[list[str | None]] = []
    reported: list[str] = []

    def check(row: Row) -> NewPost | list[LineProblem]:
        outcome = by_line[row.line]
        assert not isinstance(outcome, LineProblem)
        return outcome

    counts = import_rows(
        rows,
        check,
        lambda posts: inserted.append([p.message for p in posts]),
        lambda problem: reported.append(str(problem)),
        skip_bad=skip_bad,
        batch_size=batch,
    )
    return counts, inserted, reported


def test_good_lines_are_inserted_in_batches() -> None:
    counts, inserted, reported = drive([fake_post(n) for n in range(5)], skip_bad=False)

    assert inserted == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    assert reported == []
    assert counts == ImportCounts(lines=5, inserted=5, bad=0)


def test_after_a_bad_line_nothing_more_is_inserted_but_every_line_is_still_checked() -> None:
    bad3 = [LineProblem(3, "link", "bad")]
    outcomes: list[NewPost | list[LineProblem] | LineProblem] = [
        fake_post(0),
        fake_post(1),
        fake_post(2),
        bad3,
        fake_post(4),
        LineProblem(7, None, "has 9 cells"),
    ]

    counts, inserted, reported = drive(outcomes, skip_bad=False)

    assert inserted == [["m0", "m1"]]  # before the bad line; the caller rolls it back
    assert reported == ["line 3: link: bad", "line 7: has 9 cells"]
    assert counts.bad == 2
    assert counts.lines == 6


def test_skip_bad_inserts_every_good_line() -> None:
    outcomes: list[NewPost | list[LineProblem] | LineProblem] = [
        fake_post(0),
        [LineProblem(3, "link", "bad"), LineProblem(3, "target", "bad too")],
        fake_post(2),
        fake_post(3),
    ]

    counts, inserted, reported = drive(outcomes, skip_bad=True)

    assert inserted == [["m0", "m2"], ["m3"]]
    assert reported == ["line 3: link: bad", "line 3: target: bad too"]
    assert counts == ImportCounts(lines=4, inserted=3, bad=1)

"""``offpost import FILE.csv --client NAME`` on SQLite and PostgreSQL.

The client and its credentials are written directly, with tokens encrypted by
a key the import is never given: it must not need to read a token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.engine import Engine

from offpost.cli.main import main
from offpost.models import (
    Client,
    Credential,
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
    Post,
    PostStatus,
    hash_api_key,
    make_engine,
    make_sessionmaker,
    new_api_key,
)
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key

HEADER = "target,message,link,photo_url,publish_at,timezone"


@dataclass
class Shop:
    engine: Engine
    client_id: str
    #: Page 111 and 222 belong to ``first``; 222 also to ``second``, 333 only to it.
    first: str
    second: str
    other_client_cred: str


@pytest.fixture
def shop(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    upgrade_to_head(database_url)
    monkeypatch.setenv("OFFPOST_DATABASE_URL", database_url)
    engine = make_engine(database_url, encryption_keys=[new_encryption_key()])
    with make_sessionmaker(engine).begin() as session:
        bakery = Client(name="bakery", key_hash=hash_api_key(new_api_key()))
        other = Client(name="other", key_hash=hash_api_key(new_api_key()))
        session.add_all([bakery, other])
        session.flush()

        def cred(client: Client, user: str, *pages: str) -> Credential:
            credential = Credential(
                client_id=client.id,
                fb_user_id=user,
                user_token=f"EAAuser{user}",
                pages=[CredentialPage(page_id=p, name=p, page_token=f"EAApage{p}") for p in pages],
            )
            session.add(credential)
            session.flush()
            return credential

        first = cred(bakery, "1", "111", "222")
        second = cred(bakery, "2", "222", "333")
        foreign = cred(other, "3", "999")
        shop = Shop(engine, bakery.id, first.id, second.id, foreign.id)
    yield shop
    engine.dispose()


def offpost(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write(tmp_path: Path, content: str | bytes, name: str = "posts.csv") -> str:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return str(path)


def posts(shop: Shop) -> list[Post]:
    with make_sessionmaker(shop.engine)() as session:
        return list(session.scalars(select(Post).order_by(Post.created_at)))


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("offpost: ")
    return lines[0]


def test_a_good_file_schedules_every_line_at_the_right_utc_time(shop: Shop, tmp_path: Path) -> None:
    content = (
        "\ufeff" + HEADER + "\r\n"
        "111,Offset given,,,2030-07-01T09:00:00+02:00,\r\n"
        "111,Tokyo morning,https://example.com/a,,2030-07-01 09:00,Asia/Tokyo\r\n"
        "333,,,https://example.com/p.jpg,2030-03-31 03:30,Europe/Berlin\r\n"
        '111,"Autumn fold,\r\nfirst 02:30",,,2030-10-27 02:30,Europe/Berlin\r\n'
        "\r\n"
        "111,As soon as possible,,,,\r\n"
    )
    before = datetime.now(UTC)

    result = offpost("import", write(tmp_path, content), "--client", "bakery")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "scheduled 5 posts for client 'bakery'"
    assert result.stderr == ""
    stored = posts(shop)
    assert [(p.target, p.credential_id, p.message, p.link, p.photo_url) for p in stored] == [
        ("111", shop.first, "Offset given", None, None),
        ("111", shop.first, "Tokyo morning", "https://example.com/a", None),
        ("333", shop.second, None, None, "https://example.com/p.jpg"),
        ("111", shop.first, "Autumn fold,\r\nfirst 02:30", None, None),
        ("111", shop.first, "As soon as possible", None, None),
    ]
    assert [p.publish_at for p in stored[:4]] == [
        datetime(2030, 7, 1, 7, 0, tzinfo=UTC),
        datetime(2030, 7, 1, 0, 0, tzinfo=UTC),
        datetime(2030, 3, 31, 1, 30, tzinfo=UTC),  # the spring-forward day, after the gap
        datetime(2030, 10, 27, 0, 30, tzinfo=UTC),  # the first of the two 02:30s
    ]
    assert before <= stored[4].publish_at <= datetime.now(UTC)
    assert all(p.due_at == p.publish_at for p in stored)
    assert all(p.status is PostStatus.SCHEDULED and p.client_id == shop.client_id for p in stored)


def test_bad_lines_are_each_reported_with_their_number_and_nothing_is_scheduled(
    shop: Shop, tmp_path: Path
) -> None:
    content = (
        f"{HEADER}\n"
        "111,fine,,,2030-07-01T09:00:00Z,\n"
        "111,,,,2030-07-01T09:00:00Z,\n"
        '111,"spans\ntwo lines",ftp://example.com,,,\n'
        "111,fine,,,2030-03-31 02:30,Europe/Berlin\n"
        "222,ambiguous,,,,\n"
        "999,another client's page,,,,\n"
        "111,in the past,,,2020-01-01T00:00:00Z,\n"
        "111,fine,,,,Mars/Olympus\n"
        "111,too,many,,,,,cells\n"
        "111,fine too,,,,\n"
    )

    result = offpost("import", write(tmp_path, content), "--client", "bakery")

    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines[:-1] == [
        "line 3: message: give at least one of message, link, photo_url, photos, video or reel",
        "line 4: link: must be an http:// or https:// URL",
        "line 6: publish_at: 2030-03-31 02:30:00 does not exist in Europe/Berlin "
        "(the clocks skip it): choose another time or give an offset",
        f"line 7: target: is a Page of 2 credentials ({shop.first}, {shop.second}): "
        "choose one with --credential",
        "line 8: target: is not a Page of any credential of this client: "
        "submit its user's token first (POST /v1/credentials)",
        "line 9: publish_at: is more than 5 minutes in the past",
        "line 10: timezone: unknown time zone 'Mars/Olympus': use an IANA name such as "
        "Europe/Berlin",
        "line 11: has 8 cells but the header names 6",
    ]
    assert lines[-1] == (
        "offpost: 8 of 10 lines of posts.csv are bad (above); nothing was scheduled: fix them "
        "and import again, or pass --skip-bad to schedule the 2 good ones"
    )
    assert result.stdout == ""
    assert posts(shop) == []


def test_skip_bad_schedules_the_good_lines_and_reports_the_bad(shop: Shop, tmp_path: Path) -> None:
    content = f"{HEADER}\n111,one,,,,\n111,,,,,\n333,two,,,,\n111,three,not-a-url,,,\n"

    result = offpost("import", write(tmp_path, content), "--client", "bakery", "--skip-bad")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "line 3: message: give at least one of message, link, photo_url, photos, video or reel",
        "line 5: link: must be an http:// or https:// URL",
        "skipped 2 bad lines (above)",
    ]
    assert result.stdout.strip() == "scheduled 2 posts for client 'bakery'"
    assert [p.message for p in posts(shop)] == ["one", "two"]


def test_a_bad_line_after_many_inserted_batches_still_leaves_nothing_scheduled(
    shop: Shop, tmp_path: Path
) -> None:
    good = "".join(f"111,post {n},,,2030-07-01 09:00,Europe/Berlin\n" for n in range(2500))
    content = f"{HEADER}\n{good}111,,,,,\n"

    result = offpost(
        "import", write(tmp_path, content), "--client", "bakery", "--batch-size", "500"
    )

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[0] == (
        "line 2502: message: give at least one of message, link, photo_url, photos, video or reel"
    )
    assert posts(shop) == []


def test_a_big_file_is_inserted_in_batches_in_file_order(shop: Shop, tmp_path: Path) -> None:
    good = "".join(f"111,post {n},,,2030-07-01 09:00,Europe/Berlin\n" for n in range(2500))

    result = offpost("import", write(tmp_path, f"{HEADER}\n{good}"), "--client", "bakery")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "scheduled 2500 posts for client 'bakery'"
    stored = posts(shop)
    assert [p.message for p in stored] == [f"post {n}" for n in range(2500)]
    assert {p.publish_at for p in stored} == {datetime(2030, 7, 1, 7, 0, tzinfo=UTC)}


def test_credential_option_picks_the_credential_of_an_ambiguous_page(
    shop: Shop, tmp_path: Path
) -> None:
    path = write(tmp_path, f"{HEADER}\n222,shared page,,,,\n")

    result = offpost("import", path, "--client", "bakery", "--credential", shop.second)

    assert result.exit_code == 0, result.output
    assert [p.credential_id for p in posts(shop)] == [shop.second]


def test_another_clients_credential_cannot_be_chosen(shop: Shop, tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n999,hi,,,,\n")

    line = one_error_line(
        offpost("import", path, "--client", "bakery", "--credential", shop.other_client_cred)
    )

    assert f"the client has no credential '{shop.other_client_cred}'" in line
    assert posts(shop) == []


def test_a_timezone_option_applies_to_lines_without_one(shop: Shop, tmp_path: Path) -> None:
    content = f"{HEADER}\n111,a,,,2030-01-15 09:00,\n111,b,,,2030-01-15 09:00,UTC\n"

    result = offpost(
        "import", write(tmp_path, content), "--client", "bakery", "--timezone", "America/Chicago"
    )

    assert result.exit_code == 0, result.output
    assert [p.publish_at for p in posts(shop)] == [
        datetime(2030, 1, 15, 15, 0, tzinfo=UTC),
        datetime(2030, 1, 15, 9, 0, tzinfo=UTC),
    ]


def test_a_post_for_a_page_whose_token_died_waits_for_a_fresh_token(
    shop: Shop, tmp_path: Path
) -> None:
    with make_sessionmaker(shop.engine).begin() as session:
        credential = session.get_one(Credential, shop.second)
        credential.status = CredentialStatus.NEEDS_REAUTH
        for page in credential.pages:
            page.token_status = PageTokenStatus.DEAD

    result = offpost("import", write(tmp_path, f"{HEADER}\n333,later,,,,\n"), "--client", "bakery")

    assert result.exit_code == 0, result.output
    assert [p.status for p in posts(shop)] == [PostStatus.NEEDS_REAUTH]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "offpost: the file is empty"),
        ("target,mesage\n111,hi\n", "offpost: line 1: unknown column 'mesage'"),
        ("message,link\nhi,\n", "offpost: line 1: the header has no 'target' column"),
        ("111,hello,,,,\n", "offpost: line 1: unknown column '111', 'hello'"),
    ],
    ids=["empty", "typo", "no-target", "no-header"],
)
def test_a_bad_header_fails_with_one_line(
    shop: Shop, tmp_path: Path, content: str, expected: str
) -> None:
    line = one_error_line(offpost("import", write(tmp_path, content), "--client", "bakery"))

    assert line.startswith(expected)
    assert "docs/import.md" in line
    assert posts(shop) == []


def test_a_file_that_is_not_utf8_fails_with_one_line(shop: Shop, tmp_path: Path) -> None:
    content = f"{HEADER}\n111,caf\xe9 cr\xe8me,,,,\n".encode("cp1252")

    line = one_error_line(offpost("import", write(tmp_path, content), "--client", "bakery"))

    assert "not UTF-8 text" in line
    assert "save it as UTF-8" in line
    assert posts(shop) == []


def test_broken_quoting_fails_with_one_line_naming_the_line(shop: Shop, tmp_path: Path) -> None:
    content = f'{HEADER}\n111,ok,,,,\n111,"never closed,,,,\n111,more,,,,\n'

    line = one_error_line(offpost("import", write(tmp_path, content), "--client", "bakery"))

    assert line.startswith("offpost: line 3: the file is not valid CSV")
    assert posts(shop) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [("nobody", "no API client named 'nobody'"), ("gone", "'gone' is revoked")],
)
def test_an_unknown_or_revoked_client_fails_with_one_line(
    shop: Shop, tmp_path: Path, name: str, expected: str
) -> None:
    with make_sessionmaker(shop.engine).begin() as session:
        session.add(
            Client(name="gone", key_hash=hash_api_key(new_api_key()), revoked_at=datetime.now(UTC))
        )

    line = one_error_line(
        offpost("import", write(tmp_path, f"{HEADER}\n111,hi,,,,\n"), "--client", name)
    )

    assert expected in line


def test_an_unmigrated_database_is_refused(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OFFPOST_DATABASE_URL", sqlite_url)

    line = one_error_line(
        offpost("import", write(tmp_path, f"{HEADER}\n111,hi,,,,\n"), "--client", "bakery")
    )

    assert "offpost migrate" in line


@pytest.mark.parametrize(
    "args",
    [
        ("import", "missing.csv", "--client", "bakery"),
        ("import", "{file}"),
        ("import", "{file}", "--client", "bakery", "--timezone", "Mars/Olympus"),
    ],
    ids=["no-file", "no-client", "bad-zone"],
)
def test_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = write(tmp_path, f"{HEADER}\n")

    result = offpost(*(a.replace("{file}", path) for a in args))

    assert result.exit_code == 2, result.output


def test_a_header_alone_schedules_nothing(shop: Shop, tmp_path: Path) -> None:
    result = offpost("import", write(tmp_path, f"{HEADER}\r\n"), "--client", "bakery")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "scheduled 0 posts for client 'bakery'"


def test_publish_at_within_the_grace_is_accepted_as_the_api_does(
    shop: Shop, tmp_path: Path
) -> None:
    recent = (datetime.now(UTC) - timedelta(minutes=2)).isoformat(timespec="seconds")

    result = offpost(
        "import", write(tmp_path, f"{HEADER}\n111,hi,,,{recent},\n"), "--client", "bakery"
    )

    assert result.exit_code == 0, result.output
    assert len(posts(shop)) == 1

"""``offpost clients create|list|revoke`` on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from offpost.cli.main import main
from offpost.models import Client, hash_api_key, make_engine, make_sessionmaker
from offpost.models.client import API_KEY_PREFIX
from offpost.models.migrate import upgrade_to_head


@pytest.fixture
def migrated_url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    upgrade_to_head(database_url)
    monkeypatch.setenv("OFFPOST_DATABASE_URL", database_url)
    return database_url


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_url)
    yield engine
    engine.dispose()


def offpost(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _clients(engine: Engine) -> dict[str, Client]:
    with make_sessionmaker(engine)() as session:
        return {client.name: client for client in session.scalars(select(Client))}


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_create_prints_the_key_alone_on_the_last_line_and_stores_only_its_hash(
    engine: Engine,
) -> None:
    result = offpost("clients", "create", "bakery-app")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    key = lines[-1]
    assert key.startswith(API_KEY_PREFIX)
    assert key == key.strip()
    assert len(lines) > 1  # a human line comes first
    assert all(key not in line for line in lines[:-1])
    client = _clients(engine)["bakery-app"]
    assert client.key_hash == hash_api_key(key)
    assert client.is_admin is False
    assert client.revoked_at is None
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT * FROM clients")).one()
    assert key not in [str(value) for value in stored]


def test_create_admin(engine: Engine) -> None:
    result = offpost("clients", "create", "ops", "--admin")

    assert result.exit_code == 0, result.output
    assert "admin" in result.stdout.splitlines()[0]
    assert _clients(engine)["ops"].is_admin is True


def test_every_client_gets_its_own_key(engine: Engine) -> None:
    first = offpost("clients", "create", "one").stdout.splitlines()[-1]
    second = offpost("clients", "create", "two").stdout.splitlines()[-1]

    assert first != second
    stored = _clients(engine)
    assert stored["one"].key_hash == hash_api_key(first)
    assert stored["two"].key_hash == hash_api_key(second)


def test_a_duplicate_name_fails_with_one_line_and_keeps_the_first_client(engine: Engine) -> None:
    key = offpost("clients", "create", "bakery-app").stdout.splitlines()[-1]

    result = offpost("clients", "create", "bakery-app", "--admin")

    line = _one_error_line(result)
    assert "'bakery-app' already exists" in line
    assert API_KEY_PREFIX not in result.output
    clients = _clients(engine)
    assert list(clients) == ["bakery-app"]
    assert clients["bakery-app"].key_hash == hash_api_key(key)
    assert clients["bakery-app"].is_admin is False


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_bad_name_is_bad_usage(migrated_url: str, name: str) -> None:
    result = offpost("clients", "create", name)

    assert result.exit_code == 2
    assert "NAME" in result.stderr


def test_list_shows_every_client_but_never_a_key_or_hash(engine: Engine) -> None:
    user_key = offpost("clients", "create", "bakery-app").stdout.splitlines()[-1]
    admin_key = offpost("clients", "create", "ops", "--admin").stdout.splitlines()[-1]

    result = offpost("clients", "list")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "│" in line}
    assert set(rows) == {"bakery-app", "ops"}
    assert "│ no " in rows["bakery-app"]
    assert "│ yes " in rows["ops"]
    for secret in (user_key, admin_key, hash_api_key(user_key), hash_api_key(admin_key)):
        assert secret not in result.output


def test_list_on_an_empty_database(migrated_url: str) -> None:
    result = offpost("clients", "list")

    assert result.exit_code == 0, result.output
    assert "no API clients yet" in result.stdout


def test_revoke_then_list_shows_the_client_revoked(engine: Engine) -> None:
    offpost("clients", "create", "bakery-app")
    offpost("clients", "create", "ops", "--admin")

    result = offpost("clients", "revoke", "bakery-app")

    assert result.exit_code == 0, result.output
    assert "revoked client 'bakery-app'" in result.stdout
    clients = _clients(engine)
    assert clients["bakery-app"].revoked_at is not None
    assert clients["ops"].revoked_at is None

    listed = offpost("clients", "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[1]: line for line in listed.stdout.splitlines() if "│" in line}
    revoked_at = clients["bakery-app"].revoked_at
    assert revoked_at is not None
    assert revoked_at.strftime("%Y-%m-%d %H:%M:%SZ") in rows["bakery-app"]
    assert rows["ops"].rstrip().split("│")[-2].strip() == "-"


def test_revoking_twice_keeps_the_first_revocation(engine: Engine) -> None:
    offpost("clients", "create", "bakery-app")
    offpost("clients", "revoke", "bakery-app")
    first = _clients(engine)["bakery-app"].revoked_at

    result = offpost("clients", "revoke", "bakery-app")

    assert result.exit_code == 0, result.output
    assert "already revoked" in result.stdout
    assert _clients(engine)["bakery-app"].revoked_at == first


def test_revoking_an_unknown_client_fails_with_one_line(migrated_url: str) -> None:
    line = _one_error_line(offpost("clients", "revoke", "nobody"))

    assert "no API client named 'nobody'" in line
    assert "offpost clients list" in line


@pytest.mark.parametrize(
    "args",
    [("clients", "create", "bakery-app"), ("clients", "list"), ("clients", "revoke", "x")],
    ids=["create", "list", "revoke"],
)
def test_an_unmigrated_database_is_refused(
    database_url: str, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("OFFPOST_DATABASE_URL", database_url)

    line = _one_error_line(offpost(*args))

    assert "offpost migrate" in line


def test_the_installed_script_prints_a_key_that_tail_can_capture(migrated_url: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OFFPOST_")}
    env["OFFPOST_DATABASE_URL"] = migrated_url
    script = Path(sys.executable).with_name("offpost")

    completed = subprocess.run(
        [str(script), "clients", "create", "scripted", "--admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.endswith("\n")
    key = completed.stdout.splitlines()[-1]
    assert key.startswith(API_KEY_PREFIX)
    assert key not in completed.stderr
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT name, key_hash FROM clients")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("scripted", hash_api_key(key))]


# --- quotas -----------------------------------------------------------------------------------


def test_create_with_quotas_then_update_and_reset_them(engine: Engine) -> None:
    created = offpost("clients", "create", "shop", "--max-pending-posts", "500")
    assert created.exit_code == 0, created.output
    assert _clients(engine)["shop"].max_pending_posts == 500
    updated = offpost(
        "clients", "update", "shop", "--max-posts-per-day", "2000", "--max-pending-posts", "default"
    )
    assert updated.exit_code == 0, updated.output
    assert updated.stdout.strip() == "client 'shop': posts_per_day=2000, pending_posts=default"
    shop = _clients(engine)["shop"]
    assert (shop.max_posts_per_day, shop.max_pending_posts) == (2000, None)
    listed = offpost("clients", "list")
    assert "posts_per_day=2000" in listed.stdout
    assert "pending_posts" not in listed.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("create", "x", "--max-pending-posts", "0"), "between 1 and"),
        (("create", "x", "--max-occurrences-per-day", "1441"), "between 1 and 1440"),
        (("create", "x", "--max-posts-per-day", "many"), "whole number"),
        (("create", "x", "--max-posts-per-day", "default"), "give a number"),
        (("update", "x"), "at least one --max"),
    ],
)
def test_bad_quota_options_are_bad_usage(
    migrated_url: str, args: tuple[str, ...], why: str
) -> None:
    result = offpost("clients", *args)
    assert result.exit_code == 2, result.output
    assert why in result.stderr


def test_updating_an_unknown_client_fails_with_one_line(migrated_url: str) -> None:
    line = _one_error_line(offpost("clients", "update", "nobody", "--max-pending-posts", "5"))
    assert "no API client named 'nobody'" in line

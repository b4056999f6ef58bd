"""``offpost status`` on a populated database (SQLite, PostgreSQL): the API's numbers as tables."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time

import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import update

from offpost.cli.main import main
from offpost.models import Client, Post, PostStatus
from offpost.models.migrate import upgrade_to_head
from offpost.posts import quotas
from offpost.settings import Settings
from offpost.workers.pacing import PacingConfig, RedisPacer
from tests.integration.admin_support import (
    EXPECTED_STATS,
    Population,
    make_admin_settings,
    populate,
    private_redis_url,
    queued_messages,
    session_for,
)


@pytest.fixture
def settings(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    upgrade_to_head(database_url)
    monkeypatch.setenv("OFFPOST_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFPOST_BROKER_URL", private_redis_url(redis_url))
    monkeypatch.setenv("COLUMNS", "160")  # wide enough that Rich never wraps a cell
    return make_admin_settings(database_url, redis_url)


@pytest.fixture
def pop(settings: Settings) -> Population:
    return populate(settings)


def offpost(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def row(output: str, label: str) -> list[str]:
    """The cells of the table row that starts with ``label``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line) if c.strip()]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{output}")


def test_status_shows_the_counts(pop: Population, redis_url: str) -> None:
    with queued_messages(redis_url, 4):
        result = offpost("status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for status, count in EXPECTED_STATS["posts"].items():
        assert row(out, status)[-1] == str(count), status
    assert row(out, "published in the last hour")[-1] == "10"
    assert row(out, "failed in the last hour")[-1] == "2"
    assert row(out, "lateness p50")[-1] == "5.5 s"
    assert row(out, "lateness p95")[-1] == "9.6 s"  # 9.55, one decimal
    assert row(out, "lateness p99")[-1] == "9.9 s"
    assert row(out, "due, not dispatched")[-1] == "3"
    assert row(out, "queue depth (messages)")[-1] == "4"
    assert row(out, "190")[-1] == "3"
    assert row(out, "timeout")[-1] == "1"
    assert row(out, "active")[-1] == "2"
    assert row(out, "expiring")[-1] == "1"


def test_status_lists_credentials_expiring_soon(pop: Population) -> None:
    result = offpost("status", "--expiring-within-hours", "6")
    assert result.exit_code == 0, result.output
    assert "Credentials expiring within 6 h" in result.stdout
    expiring = row(result.stdout, pop.expiring_credential)
    assert expiring[1:4] == ["acme", "u2", "expiring"]
    assert "(in 5.0 h)" in expiring[4] or "(in 4.9 h)" in expiring[4]
    # Deleted credentials are not listed; the one expiring in 10 days is beyond 6 h.
    assert "u5" not in result.stdout
    assert "u1" not in result.stdout


def test_status_json_is_the_stats_document(pop: Population, redis_url: str) -> None:
    with queued_messages(redis_url, 1):
        result = offpost("status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**EXPECTED_STATS, "queue_depth": 1}


def test_status_on_an_outdated_schema_is_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFPOST_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OFFPOST_BROKER_URL", "memory://")
    result = offpost("status")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "migrate" in result.stderr


def test_status_lists_clients_near_a_quota(pop: Population, settings: Settings) -> None:
    with session_for(settings) as session:
        pending = quotas.pending_posts(session, pop.acme_id)
        assert pending > 0
        session.execute(
            update(Client).where(Client.id == pop.acme_id).values(max_pending_posts=pending)
        )
        session.commit()
    result = offpost("status")
    assert result.exit_code == 0, result.output
    assert "Clients near a quota" in result.stdout
    assert row(result.stdout, "acme") == ["acme", "pending_posts", str(pending), f"{pending} (own)"]
    # The others are far from theirs (the defaults).
    assert "globex" not in result.stdout.split("Clients near a quota")[1]


def test_watch_refreshes_until_its_count_and_shows_what_changed_meanwhile(
    pop: Population, settings: Settings
) -> None:
    """The final frame shows a post added while the view was refreshing."""
    added = threading.Event()

    def add_later() -> None:
        time.sleep(0.3)
        with session_for(settings) as session:
            session.execute(
                update(Post).where(Post.id == pop.scheduled_post).values(status=PostStatus.CANCELED)
            )
            session.commit()
        added.set()

    before = row(offpost("status").stdout, "canceled")[-1]
    thread = threading.Thread(target=add_later)
    thread.start()
    started = time.monotonic()
    result = offpost("status", "--watch", "--interval", "0.2", "--count", "6")
    thread.join()
    assert result.exit_code == 0, result.output
    assert added.is_set()
    # Six frames, 0.2 s apart: a second at least.
    assert time.monotonic() - started >= 1.0
    assert "every 0.2 s, Ctrl-C to stop" in result.stdout
    assert row(result.stdout, "canceled")[-1] == str(int(before) + 1)


@pytest.mark.parametrize(
    ("args", "why"),
    [(("--watch", "--json"), "leave out --json"), (("--count", "2"), "--count goes with --watch")],
)
def test_watch_refuses_what_it_cannot_do(pop: Population, args: tuple[str, ...], why: str) -> None:
    result = offpost("status", *args)
    assert result.exit_code == 2, result.output
    assert why in result.stderr


def test_status_shows_the_pages_the_pacer_holds_back(
    pop: Population, settings: Settings, redis_url: str
) -> None:
    """The pacing section reads the state every worker shares in Redis (docs/pacing.md)."""
    page_id = str(10**14 + secrets.randbelow(10**14))
    key = f"page:{page_id}"
    client = redis.Redis.from_url(private_redis_url(redis_url))
    pacer = RedisPacer(client, PacingConfig.of(settings))
    try:
        assert pacer.admit([[key]] * 10) == [0.0] * 10  # no reading yet: not paced
        pacer.observe([(key, 0)] * 10)  # ten replies at 0 %: the budget is 1,000 at least
        assert pacer.admit([[key]] * 891).count(0.0) == 890  # up to 90 % of it
        result = offpost("status")
    finally:
        client.delete(f"offpost:pace:{key}")
        client.zrem("offpost:pace:index", key)
        client.close()
    assert result.exit_code == 0, result.output
    assert "Pacing (keys at 80% of their ceiling or more" in result.stdout
    cells = row(result.stdout.split("Pacing (")[1], "page")
    scope, shown_id, budget, used, ceiling, free, waits = cells
    assert (scope, shown_id, budget, used, ceiling, waits) == (
        "page",
        page_id,
        "1,000 / 24 h",
        "90%",
        "90 % = 900 calls",
        "1",
    )
    assert free.endswith(" h")  # the first call leaves the 24-hour window

"""Statements compiled once for the event loop's connections (offpost.posts.pipeline), and
the per-client turns at those connections (offpost.api.fastdb.Turns): no database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql

from offpost.api.fastdb import Turns, conninfo_of
from offpost.models import Post, PostStatus
from offpost.posts import single
from offpost.posts.pipeline import Prepared
from offpost.posts.store import NewPost, new_post_rows

DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined]


def test_values_go_through_their_column_types() -> None:
    prepared = Prepared(
        lambda: select(Post.id).where(
            Post.status == bindparam("status", type_=Post.status.type),
            Post.due_at < bindparam("due", type_=Post.due_at.type),
        )
    )
    paris = datetime(2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    sql, params = prepared.params(DIALECT, {"status": PostStatus.SCHEDULED, "due": paris})
    assert "%(status)s" in sql
    assert "%(due)s" in sql
    assert params["status"] == "scheduled"
    assert params["due"] == datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
    # Compiled once per dialect.
    assert prepared.compiled(DIALECT) is prepared.compiled(DIALECT)


def test_every_named_value_is_needed() -> None:
    prepared = Prepared(lambda: select(Post.id).where(Post.id == bindparam("id")))
    with pytest.raises(KeyError, match="id"):
        prepared.params(DIALECT, {})


def test_an_expanding_in_is_refused() -> None:
    prepared = Prepared(
        lambda: select(Post.id).where(Post.id.in_(bindparam("ids", expanding=True)))
    )
    with pytest.raises(ValueError, match="expanding"):
        prepared.compiled(DIALECT)


def test_conninfo_is_libpq_s() -> None:
    assert (
        conninfo_of("postgresql+psycopg://u:p%40ss@db:5433/offpost?sslmode=require")
        == "postgresql://u:p%40ss@db:5433/offpost?sslmode=require"
    )


def test_one_key_takes_turns_and_others_do_not_wait() -> None:
    async def run() -> tuple[int, list[str]]:
        turns = Turns(2)
        inside = 0
        most = 0
        order: list[str] = []
        release = asyncio.Event()

        async def hold(key: str) -> None:
            nonlocal inside, most
            async with turns.turn(key):
                if key == "a":
                    inside += 1
                    most = max(most, inside)
                    await release.wait()
                    inside -= 1
                order.append(key)

        tasks = [asyncio.create_task(hold("a")) for _ in range(4)]
        await asyncio.sleep(0)
        await asyncio.create_task(hold("b"))  # another client is never held up
        release.set()
        await asyncio.gather(*tasks)
        assert not turns._keys  # forgotten once nobody holds or waits
        return most, order

    most, order = asyncio.run(run())
    assert most == 2
    assert order[0] == "b"


def test_the_single_route_writes_every_column_of_a_new_post() -> None:
    """offpost.posts.single names the columns it writes: the same as every insert of posts."""
    now = datetime.now(UTC)
    post = NewPost(
        credential_id="cred_x", target="1", message="m", link=None, photo_url=None, publish_at=now
    )
    assert set(new_post_rows("cli_x", [post], now)[0]) == set(single._COLUMNS)

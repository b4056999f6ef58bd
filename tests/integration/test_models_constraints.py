"""The database itself refuses bad rows, on SQLite and PostgreSQL alike.

Statements here go around the ORM (``text()``), as a buggy query or a manual
fix would, to prove that the constraints live in the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError

from offpost.models import (
    Attempt,
    Client,
    Credential,
    Post,
    PostStatus,
    Schedule,
    make_engine,
    make_sessionmaker,
)
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade_to_head(database_url)
    engine = make_engine(database_url, encryption_keys=[new_encryption_key()])
    yield engine
    engine.dispose()


@pytest.fixture
def ids(engine: Engine) -> dict[str, str]:
    """One valid row in every constrained table; their ids by table."""
    with make_sessionmaker(engine).begin() as session:
        client = Client(name="app", key_hash="0" * 64)
        session.add(client)
        session.flush()
        credential = Credential(client_id=client.id, fb_user_id="10001", user_token="EAAtoken")
        session.add(credential)
        session.flush()
        schedule = Schedule(
            client_id=client.id,
            credential_id=credential.id,
            target="2001",
            message="weekly",
            cron="0 9 * * 1",
            timezone="Europe/Berlin",
            start_at=T0,
        )
        session.add(schedule)
        session.flush()
        post = Post(
            client_id=client.id,
            credential_id=credential.id,
            target="2001",
            message="hello",
            publish_at=T0,
            due_at=T0,
        )
        session.add(post)
        session.flush()
        attempt = Attempt(post_id=post.id, number=1)
        session.add(attempt)
        session.flush()
        return {
            "clients": client.id,
            "credentials": credential.id,
            "schedules": schedule.id,
            "posts": post.id,
            "attempts": attempt.id,
        }


def _execute(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


@pytest.mark.parametrize(
    ("table", "assignment"),
    [
        ("posts", "status = 'posted'"),
        ("posts", "status = 'SCHEDULED'"),
        ("credentials", "status = 'revoked'"),
        ("schedules", "status = 'stopped'"),
        ("schedules", "misfire = 'catch_up_all'"),
        ("attempts", "outcome = 'success'"),
    ],
)
def test_an_unknown_status_is_refused(
    engine: Engine, ids: dict[str, str], table: str, assignment: str
) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        _execute(engine, f"UPDATE {table} SET {assignment} WHERE id = :id", id=ids[table])


def test_every_known_post_status_is_accepted(engine: Engine, ids: dict[str, str]) -> None:
    for status in PostStatus:
        _execute(
            engine, "UPDATE posts SET status = :s WHERE id = :id", s=status.value, id=ids["posts"]
        )


def test_the_orm_refuses_an_unknown_status_before_the_database(
    engine: Engine, ids: dict[str, str]
) -> None:
    with make_sessionmaker(engine)() as session:
        session.get_one(Post, ids["posts"]).status = "posted"  # type: ignore[assignment]
        with pytest.raises(StatementError, match="not a valid PostStatus"):
            session.commit()


@pytest.mark.parametrize(
    "assignment",
    ["cron = NULL", "rrule = 'FREQ=DAILY'"],
    ids=["no rule", "both rules"],
)
def test_a_schedule_has_exactly_one_rule(
    engine: Engine, ids: dict[str, str], assignment: str
) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        _execute(engine, f"UPDATE schedules SET {assignment} WHERE id = :id", id=ids["schedules"])


def test_a_post_without_content_is_refused(engine: Engine, ids: dict[str, str]) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        _execute(engine, "UPDATE posts SET message = NULL WHERE id = :id", id=ids["posts"])


def test_a_negative_attempt_count_is_refused(engine: Engine, ids: dict[str, str]) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        _execute(engine, "UPDATE posts SET attempts = -1 WHERE id = :id", id=ids["posts"])


def test_an_occurrence_is_materialised_once(engine: Engine, ids: dict[str, str]) -> None:
    def occurrence() -> Post:
        return Post(
            client_id=ids["clients"],
            credential_id=ids["credentials"],
            target="2001",
            message="weekly",
            publish_at=T0,
            due_at=T0,
            schedule_id=ids["schedules"],
            occurrence_at=T0 + timedelta(days=7),
        )

    Session = make_sessionmaker(engine)
    with Session.begin() as session:
        session.add(occurrence())
    with pytest.raises(IntegrityError), Session.begin() as session:
        session.add(occurrence())


def test_an_occurrence_time_needs_its_schedule(engine: Engine, ids: dict[str, str]) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)check"):
        _execute(engine, "UPDATE posts SET occurrence_at = due_at WHERE id = :id", id=ids["posts"])


def test_attempt_numbers_are_unique_per_post(engine: Engine, ids: dict[str, str]) -> None:
    with pytest.raises(IntegrityError), make_sessionmaker(engine).begin() as session:
        session.add(Attempt(post_id=ids["posts"], number=1))


def test_one_credential_per_client_and_facebook_user(engine: Engine, ids: dict[str, str]) -> None:
    with pytest.raises(IntegrityError), make_sessionmaker(engine).begin() as session:
        session.add(Credential(client_id=ids["clients"], fb_user_id="10001"))


def test_client_names_and_key_hashes_are_unique(engine: Engine, ids: dict[str, str]) -> None:
    Session = make_sessionmaker(engine)
    with pytest.raises(IntegrityError), Session.begin() as session:
        session.add(Client(name="app", key_hash="1" * 64))
    with pytest.raises(IntegrityError), Session.begin() as session:
        session.add(Client(name="other", key_hash="0" * 64))


def test_foreign_keys_are_enforced(engine: Engine, ids: dict[str, str]) -> None:
    # SQLite ignores foreign keys unless each connection turns them on.
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        _execute(
            engine,
            "UPDATE posts SET credential_id = 'cred_missing' WHERE id = :id",
            id=ids["posts"],
        )

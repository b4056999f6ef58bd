"""What goes in comes out, on SQLite and PostgreSQL: times in UTC, defaults, JSON, Pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from offpost.models import (
    Client,
    Credential,
    CredentialPage,
    IdPrefix,
    NaiveDatetimeError,
    Post,
    PostStatus,
    is_id,
    make_engine,
    make_sessionmaker,
)
from offpost.models.migrate import upgrade_to_head
from offpost.models.post import DEFAULT_MAX_ATTEMPTS, error_document
from offpost.models.types import new_encryption_key

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade_to_head(database_url)
    engine = make_engine(database_url, encryption_keys=[new_encryption_key()])
    yield engine
    engine.dispose()


@pytest.fixture
def credential(engine: Engine) -> Credential:
    with make_sessionmaker(engine).begin() as session:
        client = Client(name="app", key_hash="0" * 64)
        session.add(client)
        session.flush()
        credential = Credential(
            client_id=client.id,
            fb_user_id="10001",
            user_token="EAAtoken",
            pages=[CredentialPage(page_id="2001", name="Bakery", page_token="EAApage")],
        )
        session.add(credential)
    return credential


def _post(credential: Credential, when: datetime, **fields: object) -> Post:
    return Post(
        client_id=credential.client_id,
        credential_id=credential.id,
        target="2001",
        message="hello",
        publish_at=when,
        due_at=when,
        **fields,
    )


def test_times_come_back_as_the_same_instant_in_utc(engine: Engine, credential: Credential) -> None:
    when = datetime(2026, 7, 1, 9, 30, 15, 250_000, tzinfo=BERLIN)  # 07:30:15.25Z
    Session = make_sessionmaker(engine)
    with Session.begin() as session:
        post = _post(credential, when)
        session.add(post)
    with Session() as session:
        loaded = session.get_one(Post, post.id)
        assert loaded.publish_at == when
        assert loaded.publish_at.tzinfo is UTC
        assert loaded.publish_at.hour == 7
        assert loaded.created_at.tzinfo is UTC
        assert abs(loaded.created_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_comparisons_with_a_non_utc_instant_are_correct(
    engine: Engine, credential: Credential
) -> None:
    # On SQLite times are text: without conversion to UTC, "11:30" (+02:00)
    # would sort after "10:00" (UTC) although it is half an hour earlier.
    Session = make_sessionmaker(engine)
    with Session.begin() as session:
        session.add(_post(credential, datetime(2026, 7, 1, 10, 0, tzinfo=UTC)))
    with Session() as session:
        due = select(Post.id).where(Post.due_at <= datetime(2026, 7, 1, 11, 30, tzinfo=BERLIN))
        assert session.scalars(due).all() == []
        due = select(Post.id).where(Post.due_at <= datetime(2026, 7, 1, 12, 0, tzinfo=BERLIN))
        assert len(session.scalars(due).all()) == 1


def test_a_naive_time_is_refused_with_offposts_own_error(
    engine: Engine, credential: Credential
) -> None:
    with make_sessionmaker(engine)() as session:
        session.add(_post(credential, datetime(2026, 7, 1, 10, 0)))
        with pytest.raises(NaiveDatetimeError, match="naive datetime"):
            session.commit()
    with pytest.raises(NaiveDatetimeError), engine.connect() as connection:
        connection.execute(select(Post.id).where(Post.due_at <= datetime(2026, 7, 1)))


def test_a_new_post_gets_its_defaults(engine: Engine, credential: Credential) -> None:
    when = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    with make_sessionmaker(engine).begin() as session:
        post = _post(credential, when)
        session.add(post)
    assert is_id(post.id, IdPrefix.POST)
    assert is_id(credential.id, IdPrefix.CREDENTIAL)
    assert post.status is PostStatus.SCHEDULED
    assert (post.attempts, post.max_attempts) == (0, DEFAULT_MAX_ATTEMPTS)
    assert post.schedule_id is None
    assert post.last_error is None


def test_a_guarded_update_moves_updated_at(engine: Engine, credential: Credential) -> None:
    Session = make_sessionmaker(engine)
    with Session.begin() as session:
        post = _post(credential, datetime(2026, 7, 1, 10, 0, tzinfo=UTC))
        session.add(post)
    with engine.begin() as connection:
        claimed = connection.execute(
            update(Post)
            .where(Post.id == post.id, Post.status == PostStatus.SCHEDULED)
            .values(status=PostStatus.QUEUED)
        )
        assert claimed.rowcount == 1
    with Session() as session:
        loaded = session.get_one(Post, post.id)
        assert loaded.status is PostStatus.QUEUED
        assert loaded.updated_at > post.updated_at


def test_last_error_round_trips_as_json(engine: Engine, credential: Credential) -> None:
    error = error_document(368, "It looks like you were misusing this feature", subcode=1390008)
    error["fbtrace_id"] = "AbCdEf123"
    Session = make_sessionmaker(engine)
    with Session.begin() as session:
        post = _post(credential, datetime(2026, 7, 1, 10, 0, tzinfo=UTC), last_error=error)
        session.add(post)
    with Session() as session:
        assert session.get_one(Post, post.id).last_error == {
            "code": 368,
            "subcode": 1390008,
            "message": "It looks like you were misusing this feature",
            "fbtrace_id": "AbCdEf123",
        }


def test_replacing_the_pages_of_a_credential_updates_them_in_place(
    engine: Engine, credential: Credential
) -> None:
    # A refresh re-lists the user's Pages; the same Page must not collide with itself.
    Session = make_sessionmaker(engine)
    with Session.begin() as session:
        loaded = session.get_one(Credential, credential.id)
        loaded.pages = [
            CredentialPage(page_id="2001", name="Bakery & Café", page_token="EAApage2"),
            CredentialPage(page_id="2002", name="Second", page_token="EAApage3"),
        ]
    with Session() as session:
        loaded = session.get_one(Credential, credential.id)
        assert [(p.page_id, p.name, p.page_token) for p in loaded.pages] == [
            ("2001", "Bakery & Café", "EAApage2"),
            ("2002", "Second", "EAApage3"),
        ]
        page = loaded.page("2002")
        assert page is not None
        assert page.name == "Second"
        assert loaded.page("9999") is None


def test_objects_stay_readable_after_the_session_closes(
    engine: Engine, credential: Credential
) -> None:
    with make_sessionmaker(engine).begin() as session:
        loaded = session.get_one(Credential, credential.id)
    # expire_on_commit=False, and the Pages were loaded with the credential.
    assert loaded.fb_user_id == "10001"
    assert [p.page_id for p in loaded.pages] == ["2001"]


def test_sqlite_connections_enforce_keys_use_wal_and_wait_when_busy(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar_one() >= 5000
    finally:
        engine.dispose()


def test_postgresql_engines_use_psycopg_3(postgres_url: str) -> None:
    engine = make_engine(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_statement_parameters_stay_out_of_error_messages(
    engine: Engine, credential: Credential
) -> None:
    with pytest.raises(IntegrityError) as caught, engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO clients (id, name, key_hash, is_admin, created_at) "
                "VALUES (:a, :b, :c, :d, :e)"
            ),
            {"a": "cli_x", "b": "app", "c": "SECRET-PARAMETER", "d": False, "e": "2026-01-01"},
        )
    assert "SECRET-PARAMETER" not in str(caught.value)

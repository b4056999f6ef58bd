"""``offpost migrate`` on empty SQLite and PostgreSQL databases, and what it builds.

The migrated schema is compared with the models three ways: Alembic's own
comparison (tables, columns, types, nullability, plain indexes, unique
constraints), then the two things Alembic does not compare, CHECK constraints
and the predicates of partial indexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.engine import Engine

from offpost.cli.main import main
from offpost.models import Base, make_engine
from offpost.models.errors import (
    DatabaseUnavailableError,
    SchemaOutdatedError,
    SchemaTooNewError,
)
from offpost.models.migrate import (
    alembic_config,
    current_revision,
    ensure_schema_current,
    head_revision,
    known_revisions,
    upgrade_to_head,
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _migrate_with_cli(monkeypatch: pytest.MonkeyPatch, url: str) -> str:
    monkeypatch.setenv("OFFPOST_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    return result.stdout


#: The newest revision in the tree; update with each migration.
HEAD = "0010"


def test_the_history_is_one_straight_line_to_head() -> None:
    assert head_revision() == HEAD
    assert known_revisions() == {f"{n:04d}" for n in range(1, int(HEAD) + 1)}


def test_migrate_builds_an_empty_database_then_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, database_url: str, engine: Engine
) -> None:
    assert current_revision(engine) is None

    first = _migrate_with_cli(monkeypatch, database_url)
    assert f"upgraded from empty to {HEAD}" in first
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)

    second = _migrate_with_cli(monkeypatch, database_url)
    assert f"already at {HEAD}" in second
    assert current_revision(engine) == head_revision()


def test_upgrade_to_head_reports_before_and_after(database_url: str) -> None:
    assert upgrade_to_head(database_url) == (None, HEAD)
    assert upgrade_to_head(database_url) == (HEAD, HEAD)


def test_a_plain_postgresql_url_means_psycopg(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    assert plain.startswith("postgresql://")
    assert upgrade_to_head(plain) == (None, HEAD)


def test_the_start_up_check_refuses_an_empty_database_and_passes_after_migrate(
    database_url: str, engine: Engine
) -> None:
    with pytest.raises(SchemaOutdatedError) as caught:
        ensure_schema_current(engine)
    message = str(caught.value)
    assert "run `offpost migrate`" in message
    assert "\n" not in message

    upgrade_to_head(database_url)
    assert ensure_schema_current(engine) == HEAD


def test_the_start_up_check_names_both_revisions_of_an_outdated_schema(
    database_url: str, engine: Engine
) -> None:
    upgrade_to_head(database_url)
    with engine.begin() as connection:
        # Pretend this offpost is one revision ahead of the database.
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaTooNewError, match="at 0000, which this offpost does not know"):
        ensure_schema_current(engine)


def test_a_schema_from_a_newer_offpost_is_refused_by_migrate_too(
    database_url: str, engine: Engine
) -> None:
    upgrade_to_head(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaTooNewError, match="upgrade offpost"):
        upgrade_to_head(database_url)


def test_the_outdated_message_has_the_documented_shape(
    monkeypatch: pytest.MonkeyPatch, database_url: str, engine: Engine
) -> None:
    upgrade_to_head(database_url)
    monkeypatch.setattr("offpost.models.migrate.head_revision", lambda: "0099")
    monkeypatch.setattr("offpost.models.migrate.known_revisions", lambda: {HEAD, "0099"})
    with pytest.raises(SchemaOutdatedError) as caught:
        ensure_schema_current(engine)
    assert str(caught.value) == (
        f"the database schema is at {HEAD} but this offpost needs 0099: run `offpost migrate`"
    )


def test_an_unreachable_database_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+psycopg://offpost:s3cret-pw@127.0.0.1:1/offpost"
    with pytest.raises(DatabaseUnavailableError) as caught:
        upgrade_to_head(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)

    monkeypatch.setenv("OFFPOST_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert "cannot reach the database" in result.stderr
    assert "s3cret-pw" not in result.output


def test_the_migrated_schema_matches_the_models(database_url: str, engine: Engine) -> None:
    upgrade_to_head(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_migrated_check_constraints_match_the_models(database_url: str, engine: Engine) -> None:
    upgrade_to_head(database_url)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        declared = {
            str(c.name): str(c.sqltext)
            for c in table.constraints
            if isinstance(c, CheckConstraint) and c.name is not None
        }
        reflected = {
            str(c["name"]): c["sqltext"] for c in inspector.get_check_constraints(table.name)
        }
        assert set(reflected) == set(declared), table.name
        if engine.dialect.name == "sqlite":
            # SQLite keeps the text as written; PostgreSQL rewrites it (casts, ANY(ARRAY)).
            assert reflected == declared, table.name


def _predicate(where: object) -> str | None:
    if where is None:
        return None
    # PostgreSQL reflects "((status)::text = 'scheduled'::text)", and an IN list as
    # "((status)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[]))".
    sql = re.sub(r"::(character varying|\w+)(\[\])?", "", str(where))
    sql = re.sub(r"=\s*ANY\s*\(+ARRAY\[([^\]]*)\]\)+", r" IN (\1)", sql, flags=re.IGNORECASE)
    return re.sub(r"[()\s]", "", sql).lower()


def test_the_migrated_indexes_match_the_models_including_partial_predicates(
    database_url: str, engine: Engine
) -> None:
    upgrade_to_head(database_url)
    inspector = inspect(engine)
    dialect = engine.dialect.name
    for table in Base.metadata.sorted_tables:
        declared = {
            str(index.name): (
                [c.name for c in index.columns],
                bool(index.unique),
                _predicate(index.dialect_options[dialect]["where"]),
            )
            for index in table.indexes
        }
        reflected = {
            str(index["name"]): (
                list(index["column_names"]),
                bool(index["unique"]),
                _predicate(index.get("dialect_options", {}).get(f"{dialect}_where")),
            )
            for index in inspector.get_indexes(table.name)
            # PostgreSQL also lists the index behind each UNIQUE constraint.
            if "duplicates_constraint" not in index
        }
        assert reflected == declared, table.name
    assert _predicate(text("status = 'scheduled'")) == "status='scheduled'"
    assert _predicate(text("status IN ('a', 'b')")) == _predicate(
        "((status)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[]))"
    )


def test_downgrade_removes_everything_and_upgrade_rebuilds_it(
    database_url: str, engine: Engine
) -> None:
    upgrade_to_head(database_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(engine) is None
    assert upgrade_to_head(database_url) == (None, HEAD)

"""The schema as declared: names, CHECKs that match the enums, partial indexes."""

from __future__ import annotations

import enum
import re

import pytest
from sqlalchemy import CheckConstraint, Constraint, Index, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from offpost.models import (
    AttemptOutcome,
    Base,
    CredentialStatus,
    Misfire,
    PostStatus,
    ScheduleStatus,
)
from offpost.models.keys import encrypted_columns
from offpost.models.types import UTCDateTime

TABLES = {
    "clients",
    "credentials",
    "credential_pages",
    "posts",
    "attempts",
    "schedules",
    "schedule_events",
    "webhooks",
    "webhook_events",
    "periodic_runs",
    "idempotency_keys",
    "media",
    "media_uses",
    "post_steps",
    "post_followups",
    "post_insights",
}


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _check(table: str, name: str) -> str:
    for constraint in _table(table).constraints:
        if isinstance(constraint, CheckConstraint) and constraint.name == name:
            return str(constraint.sqltext)
    raise AssertionError(f"no CHECK {name} on {table}")


def _index(table: str, name: str) -> Index:
    return next(index for index in _table(table).indexes if index.name == name)


def test_the_schema_has_exactly_the_documented_tables() -> None:
    assert set(Base.metadata.tables) == TABLES


def test_every_constraint_and_index_has_a_conventional_name() -> None:
    prefixes = ("pk_", "uq_", "ck_", "fk_", "ix_")
    for table in Base.metadata.sorted_tables:
        items: list[Constraint | Index] = [*table.constraints, *table.indexes]
        for item in items:
            assert item.name, f"unnamed {type(item).__name__} on {table.name}"
            assert str(item.name).startswith(prefixes), item.name
            assert table.name in str(item.name), item.name


@pytest.mark.parametrize(
    ("table", "constraint", "values"),
    [
        ("posts", "ck_posts_status", PostStatus),
        ("credentials", "ck_credentials_status", CredentialStatus),
        ("schedules", "ck_schedules_status", ScheduleStatus),
        ("schedules", "ck_schedules_misfire", Misfire),
        ("attempts", "ck_attempts_outcome", AttemptOutcome),
    ],
)
def test_each_status_check_allows_exactly_the_enum_values(
    table: str, constraint: str, values: type[enum.StrEnum]
) -> None:
    allowed = set(re.findall(r"'([a-z_]+)'", _check(table, constraint)))
    assert allowed == {member.value for member in values}


def test_the_documented_status_values() -> None:
    assert {s.value for s in PostStatus} == {
        "scheduled",
        "queued",
        "publishing",
        "published",
        "failed",
        "needs_reauth",
        "canceled",
        "deleted",
    }
    assert {s.value for s in CredentialStatus} == {
        "active",
        "expiring",
        "user_token_expired",
        "needs_reauth",
        "deleted",
    }
    assert {s.value for s in AttemptOutcome} == {
        "published",
        "retry",
        "failed",
        "needs_reauth",
        "reconciled",
    }


@pytest.mark.parametrize(
    ("name", "column", "status"),
    [
        ("ix_posts_due", "due_at", "scheduled"),
        ("ix_posts_queued", "queued_at", "queued"),
        ("ix_posts_lease", "lease_expires_at", "publishing"),
    ],
)
def test_the_watchdog_indexes_are_partial_on_both_dialects(
    name: str, column: str, status: str
) -> None:
    index = _index("posts", name)
    expected = f"CREATE INDEX {name} ON posts ({column}) WHERE status = '{status}'"
    assert str(CreateIndex(index).compile(dialect=postgresql.dialect())) == expected  # type: ignore[no-untyped-call]
    assert str(CreateIndex(index).compile(dialect=sqlite.dialect())) == expected


def test_cursor_listing_has_its_index() -> None:
    columns = [c.name for c in _index("posts", "ix_posts_client_created").columns]
    assert columns == ["client_id", "created_at", "id"]
    columns = [c.name for c in _index("posts", "ix_posts_credential_status").columns]
    assert columns == ["credential_id", "status"]


def test_timestamps_are_utc_columns() -> None:
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if column.name.endswith("_at") or column.name == "materialized_until":
                assert isinstance(column.type, UTCDateTime), f"{table.name}.{column.name}"


def test_every_token_column_is_encrypted() -> None:
    labels = {column.label for column in encrypted_columns()}
    assert labels == {"credentials.user_token", "credential_pages.page_token", "webhooks.secret"}

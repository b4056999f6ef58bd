"""The declarative base every model derives from, and what all tables share.

The naming convention gives every constraint and index a deterministic name,
identical on SQLite and PostgreSQL. Alembic needs those names to drop or alter
a constraint later (SQLite's batch mode rebuilds tables by name), and a name
that says ``ck_posts_status`` makes an integrity error readable.

Every ``Mapped[datetime]`` column is a :class:`~offpost.models.types.UTCDateTime`
through the type annotation map, so no model can grow a naive timestamp by
accident.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CheckConstraint, MetaData, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from offpost.models.types import JSONDocument, UTCDateTime

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of offpost's ORM models; ``Base.metadata`` is the whole schema."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDocument,
        list[str]: JSONDocument,
    }


def utcnow() -> datetime:
    """The current instant as an aware UTC datetime (the default of time columns)."""
    return datetime.now(UTC)


class Timestamps:
    """``created_at`` and ``updated_at``, set by SQLAlchemy on insert and update.

    ``updated_at`` also moves on Core ``update()`` statements (the guarded
    state changes), because SQLAlchemy applies Python ``onupdate`` there too.
    """

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def check_in(column: str, values: type[enum.StrEnum], name: str) -> CheckConstraint:
    """A CHECK constraint named ``ck_<table>_<name>`` that limits ``column`` to ``values``."""
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


def where_status(status: enum.StrEnum) -> dict[str, Any]:
    """The ``postgresql_where``/``sqlite_where`` keywords of a partial index on one status.

    Both dialects get the same literal predicate, so a query that says
    ``status = 'scheduled'`` provably implies it and the planner may use the
    index.
    """
    predicate = f"status = '{status.value}'"
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


def where_status_in(statuses: Iterable[enum.StrEnum]) -> dict[str, Any]:
    """The keywords of a partial index on several statuses (as :func:`where_status`)."""
    values = ", ".join(f"'{status.value}'" for status in statuses)
    predicate = f"status IN ({values})"
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}

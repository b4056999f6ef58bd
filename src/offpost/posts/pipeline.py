"""Statements built with SQLAlchemy, run on a psycopg ``AsyncConnection``, several in one
round trip (pipeline mode).

The single-post route (:mod:`offpost.posts.single`) runs on the event loop,
outside SQLAlchemy's sessions: its statements are still SQLAlchemy constructs,
compiled once per dialect with named :func:`~sqlalchemy.bindparam` values
(:class:`Prepared`), and values go through their column types' bind processing
(UTC datetimes, enums, JSON) as in any SQLAlchemy execution.

:func:`run_pipeline` sends statements and reads their first rows in one round
trip. A transaction that takes a lock and then writes normally waits for the
database once per statement while it holds the lock; sent as one pipeline,
``BEGIN``, the statements and ``COMMIT`` reach the server together, so the row
lock is held only as long as the server needs. What a pipeline cannot do is
decide in Python between two of its statements: anything that depends on a
count is decided by SQL (``INSERT … SELECT … WHERE``), and its outcome read
afterwards.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["BEGIN", "COMMIT", "Prepared", "Statement", "fetch_all", "fetch_one", "run_pipeline"]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    defaults: dict[str, Any]
    required: frozenset[str]
    processors: dict[str, Callable[[Any], Any]]


class Prepared:
    """A statement built once (by ``build``) and compiled once per dialect.

    ``build`` returns a construct whose varying values are named
    ``bindparam``\\s; :meth:`params` turns values for those names into the
    driver's parameters (constants of the construct included).
    """

    def __init__(self, build: Callable[[], ClauseElement]) -> None:
        self._build = build
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect)
        if found is None:
            compiled = cast(SQLCompiler, self._build().compile(dialect=dialect))
            defaults: dict[str, Any] = {}
            required: set[str] = set()
            processors: dict[str, Callable[[Any], Any]] = {}
            for bind, name in compiled.bind_names.items():
                if bind.expanding:
                    raise ValueError(f"{name}: an expanding IN cannot be compiled once")
                if bind.required:
                    required.add(name)
                else:
                    defaults[name] = bind.effective_value
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors[name] = processor
            found = _Compiled(compiled.string, defaults, frozenset(required), processors)
            self._compiled[dialect] = found
        return found

    def params(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The SQL text and the driver's parameters for ``values`` (every named value)."""
        compiled = self.compiled(dialect)
        if missing := compiled.required - values.keys():
            raise KeyError(f"no value for {', '.join(sorted(missing))}")
        params = compiled.defaults | dict(values)
        for name, processor in compiled.processors.items():
            params[name] = processor(params[name])
        return compiled.sql, params


#: A statement and its values, or plain SQL without any (``BEGIN``, ``COMMIT``).
Statement = tuple[Prepared, Mapping[str, Any]] | str
BEGIN = "BEGIN"
COMMIT = "COMMIT"


async def fetch_one(
    conn: psycopg.AsyncConnection[Any],
    dialect: Dialect,
    prepared: Prepared,
    values: Mapping[str, Any],
) -> tuple[Any, ...] | None:
    """The first row of one statement (its own transaction on an autocommit connection)."""
    sql, params = prepared.params(dialect, values)
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


async def fetch_all(
    conn: psycopg.AsyncConnection[Any],
    dialect: Dialect,
    prepared: Prepared,
    values: Mapping[str, Any],
) -> list[tuple[Any, ...]]:
    """Every row of one statement."""
    sql, params = prepared.params(dialect, values)
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


async def run_pipeline(
    conn: psycopg.AsyncConnection[Any], dialect: Dialect, statements: Sequence[Statement]
) -> list[tuple[Any, ...] | None]:
    """Send ``statements`` in one round trip; the first row of each (``None`` without one).

    On an autocommit connection, ``[BEGIN, …, COMMIT]`` is one transaction.
    When a statement fails, the server skips the rest until the end of the
    pipeline (the ``COMMIT`` included): the transaction is rolled back here
    and the first error (psycopg's own, e.g. ``psycopg.errors.UniqueViolation``)
    raised.
    """
    cursors = []
    try:
        async with conn.pipeline():
            for statement in statements:
                cursor = conn.cursor()
                if isinstance(statement, str):
                    await cursor.execute(statement)
                else:
                    sql, params = statement[0].params(dialect, statement[1])
                    await cursor.execute(sql, params)
                cursors.append(cursor)
    except BaseException:
        if not conn.closed and not conn.broken:
            await conn.rollback()
        raise
    rows: list[tuple[Any, ...] | None] = []
    for cursor in cursors:
        rows.append(await cursor.fetchone() if cursor.description is not None else None)
        await cursor.close()
    return rows

"""Engines and sessions: the only place that connects to the database.

:func:`make_engine` is the factory every process calls once at start (the API's
lifespan, Celery's ``worker_process_init``, the dispatcher, the CLI); nothing
here runs at import time. It takes plain values, not the settings object.

What every engine gets:

- the token cipher, when ``encryption_keys`` are given (see
  :mod:`offpost.models.types`);
- ``hide_parameters=True``: SQLAlchemy otherwise prints statement parameters
  in error messages and logs, and a parameter can be a plaintext token on its
  way to being encrypted;
- offpost's own errors raised unwrapped: an :class:`~offpost.errors.OffpostError`
  raised inside a column type (a naive datetime, an undecryptable token) would
  otherwise reach the caller as a ``StatementError`` holding the SQL text;
- on SQLite: foreign keys enforced, WAL (readers do not block the writer), and
  a busy timeout so that concurrent writers (API, dispatcher and worker of
  ``offpost up``) wait for each other instead of failing at once;
- on PostgreSQL: psycopg 3, with pool pre-ping so a restarted server costs a
  reconnect rather than an error.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

from offpost.errors import OffpostError
from offpost.models.types import attach_cipher, make_cipher

#: How long a SQLite writer waits for another one before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str | URL) -> URL:
    """``url`` as a SQLAlchemy URL, with ``postgresql://`` mapped to psycopg 3.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which offpost does not
    install; ``postgresql://`` therefore means ``postgresql+psycopg://``.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(
    url: str | URL, *, encryption_keys: list[str] | None = None, **kwargs: Any
) -> Engine:
    """Build an engine for ``url`` (``sqlite:///…`` or ``postgresql+psycopg://…``).

    ``encryption_keys`` are Fernet keys, newest first: tokens are encrypted
    with the first and decrypted with any. Without keys the engine works for
    everything but encrypted columns, which raise
    :class:`~offpost.models.errors.EncryptionKeysMissingError` (enough for
    ``offpost migrate``). Extra keyword arguments go to
    :func:`sqlalchemy.create_engine`. Raises ``ValueError`` for a malformed key.
    """
    parsed = normalize_url(url)
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "sqlite":
        _create_private(parsed.database)
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "handle_error", _unwrap_offpost_errors)
    if encryption_keys:
        attach_cipher(engine, make_cipher(encryption_keys))
    return engine


def _create_private(database: str | None) -> None:
    """Create a SQLite database file readable by its owner only (0600), before SQLite
    creates it with the umask's mode: it holds encrypted tokens and API key hashes.
    SQLite gives its -wal and -shm files the database file's mode."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder and the like: SQLite's own error says it better
    os.close(fd)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory for ``engine`` that keeps loaded values after commit.

    ``expire_on_commit=False`` lets handlers and tasks commit and then still
    read the objects they hold (to serialise a response) without a second
    query, and without failing once the session is closed. Use it as::

        Session = make_sessionmaker(engine)
        with Session.begin() as session:   # commits, or rolls back on error
            session.add(post)
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL is a property of the file; an in-memory database answers "memory".
        cursor.execute("PRAGMA journal_mode = WAL")
        # With WAL, NORMAL loses no committed transaction on a process crash,
        # only possibly the last ones on a power loss, and fsyncs far less.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _unwrap_offpost_errors(context: ExceptionContext) -> BaseException | None:
    original = context.original_exception
    if isinstance(original, OffpostError):
        return original
    return None

"""Schema migrations, driven from code: ``offpost migrate`` and the start-up check.

Alembic is configured here rather than by an ``alembic.ini``, so the installed
package carries everything it needs (``migrations/`` ships in the wheel).

- :func:`upgrade_to_head` brings a database to the newest revision
  (``offpost migrate``). On PostgreSQL it holds an advisory lock, so replicas
  that migrate at the same time take turns instead of racing on DDL.
- :func:`ensure_schema_current` is what ``api``, ``dispatcher`` and ``worker``
  call before they start: they refuse to run on a schema they were not
  written for.

To write a new revision, change the models, then::

    from alembic import command
    from offpost.models.db import make_engine
    from offpost.models.migrate import alembic_config
    with make_engine(url).begin() as conn:   # a database migrated to head
        command.revision(alembic_config(conn), message="...", autogenerate=True)

and review the generated file by hand (partial indexes, CHECKs, data moves).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from offpost.models.db import make_engine, normalize_url
from offpost.models.errors import (
    DatabaseUnavailableError,
    MigrationError,
    SchemaOutdatedError,
    SchemaTooNewError,
)

#: Where ``env.py``, ``script.py.mako`` and ``versions/`` live.
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: The PostgreSQL advisory lock key that serialises concurrent migrations ("offpost").
ADVISORY_LOCK_KEY = 0x6F6666706F7374


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for offpost's migrations, optionally bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this offpost knows, e.g. ``"0001"``."""
    head = _script().get_current_head()
    if head is None:  # only if the versions folder went missing from the install
        raise MigrationError(f"no migrations found in {MIGRATIONS_DIR}: reinstall offpost")
    return head


def known_revisions() -> set[str]:
    """Every revision this offpost knows."""
    return {script.revision for script in _script().walk_revisions()}


def current_revision(bind: Engine | Connection) -> str | None:
    """The revision the database is at, or ``None`` for a database offpost never migrated."""
    if isinstance(bind, Connection):
        return MigrationContext.configure(bind).get_current_revision()
    with bind.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(url: str | URL) -> tuple[str | None, str]:
    """Migrate the database at ``url`` to the newest revision.

    Returns ``(revision before, revision after)``; they are equal when there
    was nothing to do, and the first is ``None`` for an empty database. Raises
    :class:`DatabaseUnavailableError` when the database cannot be reached,
    :class:`SchemaTooNewError` when it was migrated by a newer offpost, and
    :class:`MigrationError` when a migration fails (on PostgreSQL nothing of
    it is kept, since DDL is transactional there).
    """
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends: a second `offpost migrate`
                # waits here, then finds the schema already at head.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            before = current_revision(connection)
            _refuse_unknown(before)
            command.upgrade(alembic_config(connection), "head")
            after = current_revision(connection)
    except OperationalError as exc:
        raise _unavailable(url, exc) from exc
    except (SQLAlchemyError, CommandError) as exc:
        raise MigrationError(
            f"migrating the database at {_safe(url)} failed: {_first_line(exc)}"
        ) from exc
    finally:
        engine.dispose()
    if after is None:  # pragma: no cover - Alembic always stamps a revision
        raise MigrationError("the migration finished without recording a revision")
    return before, after


def ensure_schema_current(engine: Engine) -> str:
    """Return the schema revision if it is the one this offpost needs; raise otherwise.

    Raises :class:`SchemaOutdatedError` for an empty or older schema (the
    message says to run ``offpost migrate``), :class:`SchemaTooNewError` for a
    schema this offpost does not know, and :class:`DatabaseUnavailableError`
    when the database cannot be reached.
    """
    head = head_revision()
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise _unavailable(engine.url, exc) from exc
    if current == head:
        return head
    if current is None:
        raise SchemaOutdatedError(
            f"the database has no offpost schema but this offpost needs {head}: "
            "run `offpost migrate`"
        )
    _refuse_unknown(current)
    raise SchemaOutdatedError(
        f"the database schema is at {current} but this offpost needs {head}: run `offpost migrate`"
    )


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _refuse_unknown(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise SchemaTooNewError(
            f"the database schema is at {revision}, which this offpost does not know "
            f"(it needs {head_revision()}): upgrade offpost to the version that migrated it"
        )


def _unavailable(url: str | URL, exc: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"cannot reach the database at {_safe(url)}: {_first_line(exc)}; "
        "check OFFPOST_DATABASE_URL and that the server is running"
    )


def _safe(url: str | URL) -> str:
    return normalize_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    # DBAPI errors span several lines (SQL, a link to SQLAlchemy's docs); the
    # CLI contract is one line. ``orig`` is the driver's own message.
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__

"""Alembic's environment for offpost.

Alembic executes this file for every command; :mod:`offpost.models.migrate`
passes an open connection in ``config.attributes["connection"]``, so no
``alembic.ini`` is needed. Run alone (``alembic -x`` style, with
``sqlalchemy.url`` set), it builds its own engine.

Autogenerate renders offpost's column types as the plain types they store
(``UTCDateTime`` as ``sa.DateTime(timezone=True)``, ``EncryptedToken`` as
``sa.Text()``...), so that a migration never depends on today's model code.
``render_as_batch`` makes the ALTERs of future revisions work on SQLite, which
can only alter a table by rebuilding it.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from offpost.models import Base
from offpost.models.db import make_engine
from offpost.models.types import EncryptedToken, StrEnumType, UTCDateTime


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render offpost's own column types as the SQLAlchemy types they store."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, EncryptedToken):
        return "sa.Text()"
    if isinstance(obj, StrEnumType):
        return f"sa.String(length={obj.length})"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=Base.metadata,
        render_as_batch=True,
        render_item=render_item,
        compare_type=True,
        **kwargs,
    )


def run_with(connection: Connection) -> None:
    """Run the migrations on ``connection``, inside its transaction if it has one."""
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate the connection handed over by offpost, or one to ``sqlalchemy.url``."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or run `offpost migrate`")
    engine = make_engine(url)
    try:
        with engine.begin() as own_connection:
            run_with(own_connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade --sql``)."""
    _configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

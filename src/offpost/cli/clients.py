"""``offpost clients``: create, list and revoke API clients (the README).

A client's key is shown once, by ``create``, alone on the last line of
stdout so that a script can capture it with ``| tail -n1``; offpost keeps
only its hash (see :mod:`offpost.models.client`), so neither ``list`` nor
anything else can show it again. None of these commands touch tokens, so they
need no encryption keys. Each refuses to run on a schema other than the one
this offpost needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from offpost.cli.common import one_line_errors, process_settings
from offpost.errors import OffpostError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

#: The length of ``clients.name``.
MAX_NAME_LENGTH = 100


class ClientCommandError(OffpostError):
    """A ``clients`` command cannot do what was asked (unknown or duplicate name)."""


@click.group()
def clients() -> None:
    """Create, list and revoke API clients."""


def _check_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    name = value.strip()
    if not name:
        raise click.BadParameter("must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise click.BadParameter(f"at most {MAX_NAME_LENGTH} characters")
    return name


@clients.command()
@click.argument("name", callback=_check_name)
@click.option("--admin", is_flag=True, help="May use /v1/admin/* and the /admin dashboard.")
@one_line_errors
def create(name: str, admin: bool) -> None:
    """Create the API client NAME and print its key, once, on the last line."""
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from offpost.models import Client, hash_api_key, new_api_key

    key = new_api_key()
    with _sessions() as sessions:
        try:
            with sessions.begin() as session:
                if session.scalar(select(Client.id).where(Client.name == name)) is not None:
                    raise _duplicate(name)
                client = Client(name=name, key_hash=hash_api_key(key), is_admin=admin)
                session.add(client)
        except IntegrityError:
            # Another `clients create` took the name between our check and our insert.
            raise _duplicate(name) from None
    kind = "admin client" if admin else "client"
    click.echo(f"created {kind} {name!r} ({client.id})")
    click.echo("its API key is shown only this once; store it now:")
    click.echo(key)


@clients.command(name="list")
@one_line_errors
def list_clients() -> None:
    """Show every API client: name, admin, created, revoked (never a key)."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from offpost.models import Client

    with _sessions() as sessions, sessions() as session:
        rows = session.execute(
            select(Client.name, Client.is_admin, Client.created_at, Client.revoked_at).order_by(
                Client.created_at, Client.name
            )
        ).all()
    if not rows:
        click.echo("no API clients yet; create one with `offpost clients create NAME`")
        return
    table = Table("name", "admin", "created", "revoked")
    for name, is_admin, created_at, revoked_at in rows:
        table.add_row(
            name,
            "yes" if is_admin else "no",
            _when(created_at),
            _when(revoked_at) if revoked_at else "-",
        )
    Console().print(table)


@clients.command()
@click.argument("name", callback=_check_name)
@one_line_errors
def revoke(name: str) -> None:
    """Revoke the API client NAME: its key is refused from now on."""
    from sqlalchemy import select

    from offpost.models import Client, utcnow

    with _sessions() as sessions, sessions.begin() as session:
        client = session.scalar(select(Client).where(Client.name == name).with_for_update())
        if client is None:
            raise ClientCommandError(
                f"there is no API client named {name!r}: see `offpost clients list`"
            )
        if client.revoked_at is not None:
            click.echo(f"client {name!r} was already revoked at {_when(client.revoked_at)}")
            return
        client.revoked_at = utcnow()
    click.echo(f"revoked client {name!r}; its key is refused from now on")


@contextmanager
def _sessions() -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database, once its schema is the current one."""
    from offpost.models import make_engine, make_sessionmaker
    from offpost.models.migrate import ensure_schema_current

    engine = make_engine(process_settings().database_url)
    try:
        ensure_schema_current(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def _duplicate(name: str) -> ClientCommandError:
    return ClientCommandError(
        f"an API client named {name!r} already exists: choose another name "
        "(see `offpost clients list`)"
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")

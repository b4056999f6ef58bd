"""``offpost clients``: create, list, update and revoke API clients (the README).

A client's key is shown once, by ``create``, alone on the last line of
stdout so that a script can capture it with ``| tail -n1``; offpost keeps
only its hash (see :mod:`offpost.models.client`), so neither ``list`` nor
anything else can show it again. None of these commands touch tokens, so they
need no encryption keys. Each refuses to run on a schema other than the one
this offpost needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from offpost.cli.common import one_line_errors, process_settings
from offpost.errors import OffpostError
from offpost.settings import QUOTA_MAX

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

#: The length of ``clients.name``.
MAX_NAME_LENGTH = 100


class ClientCommandError(OffpostError):
    """A ``clients`` command cannot do what was asked (unknown or duplicate name)."""


@click.group()
def clients() -> None:
    """Create, list, update (quotas) and revoke API clients."""


def _check_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    name = value.strip()
    if not name:
        raise click.BadParameter("must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise click.BadParameter(f"at most {MAX_NAME_LENGTH} characters")
    return name


#: The quotas (docs/quotas.md): an option ``--max-<quota>`` and a column ``max_<quota>`` each.
QUOTA_OPTIONS = tuple(QUOTA_MAX)


def _quota_value(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    """A quota option's value: a whole number in range, or ``default`` (only to ``update``)."""
    if value is None:
        return None
    assert param.name is not None
    quota = param.name.removeprefix("max_")
    if value.strip().lower() == "default":
        if ctx.command.name != "update":
            raise click.BadParameter("give a number (every quota starts at the default)")
        return DEFAULT
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter("must be a whole number, or `default`") from None
    if not 1 <= number <= QUOTA_MAX[quota]:
        raise click.BadParameter(f"must be between 1 and {QUOTA_MAX[quota]}")
    return number


#: ``--max-… default``: back to the deployment's default.
DEFAULT = object()


def quota_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add ``--max-<quota>`` for every quota (docs/quotas.md)."""
    for quota in reversed(QUOTA_OPTIONS):
        command = click.option(
            f"--max-{quota.replace('_', '-')}",
            f"max_{quota}",
            callback=_quota_value,
            metavar="N",
            help=f"This client's own {quota} quota (else the deployment's default).",
        )(command)
    return command


def _set_quotas(client: Any, values: dict[str, object]) -> list[str]:
    """Set the quota columns given in ``values``; what changed, in words."""
    changed = []
    for column, value in values.items():
        if value is None:
            continue
        setattr(client, column, None if value is DEFAULT else value)
        shown = "default" if value is DEFAULT else str(value)
        changed.append(f"{column.removeprefix('max_')}={shown}")
    return changed


@clients.command()
@click.argument("name", callback=_check_name)
@click.option("--admin", is_flag=True, help="May use /v1/admin/* and the /admin dashboard.")
@quota_options
@one_line_errors
def create(name: str, admin: bool, **limits: object) -> None:
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
                _set_quotas(client, limits)
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
    """Show every API client: name, admin, created, revoked, own quotas (never a key)."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from offpost.models import Client

    with _sessions() as sessions, sessions() as session:
        rows = session.scalars(select(Client).order_by(Client.created_at, Client.name)).all()
    if not rows:
        click.echo("no API clients yet; create one with `offpost clients create NAME`")
        return
    table = Table("name", "admin")
    # Times are read whole (a script greps them); the quotas wrap instead.
    table.add_column("created", no_wrap=True)
    table.add_column("revoked", no_wrap=True)
    table.add_column("own quotas")
    for client in rows:
        own = [
            f"{quota}={getattr(client, f'max_{quota}')}"
            for quota in QUOTA_OPTIONS
            if getattr(client, f"max_{quota}") is not None
        ]
        table.add_row(
            client.name,
            "yes" if client.is_admin else "no",
            _when(client.created_at),
            _when(client.revoked_at) if client.revoked_at else "-",
            ", ".join(own) or "-",
        )
    Console().print(table)


@clients.command()
@click.argument("name", callback=_check_name)
@quota_options
@one_line_errors
def update(name: str, **limits: object) -> None:
    """Set the quotas of the API client NAME; `default` returns one to the deployment's."""
    from sqlalchemy import select

    from offpost.models import Client

    if all(value is None for value in limits.values()):
        raise click.UsageError("give at least one --max-… option (see --help)")
    with _sessions() as sessions, sessions.begin() as session:
        client = session.scalar(select(Client).where(Client.name == name).with_for_update())
        if client is None:
            raise _unknown(name)
        changed = _set_quotas(client, limits)
    click.echo(f"client {name!r}: {', '.join(changed)}")


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
            raise _unknown(name)
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


def _unknown(name: str) -> ClientCommandError:
    return ClientCommandError(f"there is no API client named {name!r}: see `offpost clients list`")


def _duplicate(name: str) -> ClientCommandError:
    return ClientCommandError(
        f"an API client named {name!r} already exists: choose another name "
        "(see `offpost clients list`)"
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")

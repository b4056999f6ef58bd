"""``offpost import FILE.csv --client NAME``: bulk-schedule posts from a CSV file (the README).

The format and the rules are in ``docs/import.md``; the logic is in
:mod:`offpost.posts.csv_import`. This module opens the file and the
database, and reports:

- every bad line on stderr, as ``line N: field: message``, as soon as it is seen;
- with bad lines and no ``--skip-bad``: nothing is scheduled, and a last line
  says so; exit status 1;
- otherwise ``scheduled N posts`` on stdout; exit status 0 (with ``--skip-bad``
  also when lines were skipped: they were reported).

The file is read as a stream and written in batches, all in one transaction,
so a file of any size is imported whole or not at all, also when the command
fails or is interrupted half-way. Only credentials' ids, statuses and Pages are
read, never a token, so no encryption key is needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import click

from offpost.cli.common import one_line_errors, process_settings
from offpost.errors import OffpostError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from offpost.models import Credential


#: Posts per INSERT statement; every batch is in the same transaction.
DEFAULT_BATCH_SIZE = 1000


class ImportRefusedError(OffpostError):
    """The file has bad lines and ``--skip-bad`` was not given: nothing was scheduled."""


def _zone_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from offpost.recurrence import RuleError, load_zone

    if value is None:
        return None
    try:
        load_zone(value)
    except RuleError as exc:
        raise click.BadParameter(exc.message) from None
    return value


@click.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--client", "client_name", required=True, help="The API client the posts belong to.")
@click.option(
    "--credential",
    "credential_id",
    default=None,
    help="Post every line with this credential (cred_…) instead of finding it by target.",
)
@click.option(
    "--timezone",
    "default_zone",
    default=None,
    callback=_zone_option,
    help="IANA time zone for lines whose timezone cell is empty (e.g. Europe/Berlin).",
)
@click.option(
    "--skip-bad", is_flag=True, help="Schedule the good lines even if some are bad (reported)."
)
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(min=1, max=10_000),
    help="Posts per INSERT (all in one transaction).",
)
@one_line_errors
def import_csv(
    file: Path,
    client_name: str,
    credential_id: str | None,
    default_zone: str | None,
    skip_bad: bool,
    batch_size: int,
) -> None:
    """Schedule a post for every line of a CSV file, or none if a line is bad.

    Columns: target,message,link,photo_url,publish_at,timezone (header
    required; see docs/import.md). Every bad line is reported with its number;
    a file with bad lines schedules nothing unless --skip-bad.
    """
    from datetime import timedelta

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
    from rich.text import Text

    from offpost.models import make_engine, make_sessionmaker, utcnow
    from offpost.models.migrate import ensure_schema_current
    from offpost.posts import csv_import
    from offpost.posts.store import NewPost, insert_posts
    from offpost.recurrence import load_zone

    settings = process_settings()
    zone = load_zone(default_zone) if default_zone else None
    engine = make_engine(settings.database_url)
    stderr = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[summary]}"),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )

    def report(problem: csv_import.LineProblem) -> None:
        if progress.disable:
            click.echo(str(problem), err=True)
        else:  # above the bar, which stays at the bottom
            progress.console.print(Text(str(problem)), soft_wrap=True)

    try:
        ensure_schema_current(engine)
        now = utcnow()
        with (
            file.open("rb") as raw,
            progress,
            make_sessionmaker(engine).begin() as session,
        ):
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            client_id, credentials = _load_client(session, client_name)
            index = csv_import.CredentialIndex(credentials, credential_id)
            task = progress.add_task(
                f"importing {file.name}", total=file.stat().st_size, summary=""
            )

            written = 0

            def insert(posts: list[NewPost]) -> None:
                nonlocal written
                # Each batch a little later than the one before, so that "newest first"
                # lists the posts in the reverse order of the file, as one batch would.
                insert_posts(session, client_id, posts, now + timedelta(microseconds=written))
                written += len(posts)

            def show(counts: csv_import.ImportCounts) -> None:
                if counts.lines % 100 == 0:
                    progress.update(
                        task,
                        completed=raw.tell(),
                        summary=f"{counts.lines - counts.bad} good, {counts.bad} bad lines",
                    )

            counts = csv_import.import_rows(
                csv_import.read_rows(text),
                lambda row: csv_import.check_row(row, index, now, default_zone=zone),
                insert,
                report,
                skip_bad=skip_bad,
                batch_size=batch_size,
                progress=show,
            )
            progress.update(task, completed=file.stat().st_size)
            if counts.bad and not skip_bad:
                good = counts.lines - counts.bad
                # Raised inside the transaction: whatever was inserted is rolled back.
                raise ImportRefusedError(
                    f"{counts.bad} of {counts.lines} lines of {file.name} are bad (above); "
                    "nothing was scheduled: fix them and import again"
                    + (f", or pass --skip-bad to schedule the {good} good ones" if good else "")
                )
    except KeyboardInterrupt:
        raise ImportRefusedError("interrupted: nothing was scheduled") from None
    finally:
        engine.dispose()
    if counts.bad:
        click.echo(f"skipped {counts.bad} bad lines (above)", err=True)
    click.echo(f"scheduled {counts.inserted} posts for client {client_name!r}")


def _load_client(session: Session, name: str) -> tuple[str, list[Credential]]:
    """The id of the client ``name`` and its credentials with their Pages, tokens not read."""
    from sqlalchemy import select
    from sqlalchemy.orm import defer, selectinload

    from offpost.models import Client, Credential, CredentialPage

    client = session.execute(
        select(Client.id, Client.revoked_at).where(Client.name == name)
    ).one_or_none()
    if client is None:
        raise ImportRefusedError(
            f"there is no API client named {name!r}: see `offpost clients list`"
        )
    if client.revoked_at is not None:
        raise ImportRefusedError(f"the API client {name!r} is revoked: its posts would never run")
    credentials = session.scalars(
        select(Credential)
        .where(Credential.client_id == client.id)
        .options(
            # raiseload: a token read here by mistake fails the tests instead of needing keys.
            defer(Credential.user_token, raiseload=True),
            selectinload(Credential.pages).defer(CredentialPage.page_token, raiseload=True),
        )
    ).all()
    return str(client.id), list(credentials)

"""The ``offpost`` command line (the README).

Exit status: 0 on success, 2 on bad usage (click's own), 1 on any other
failure, with one line on stderr that says what went wrong and what to do.
Commands import their heavy machinery lazily so that ``offpost --help`` is fast
and nothing is built at import time.
"""

from __future__ import annotations

import click

from offpost import __version__
from offpost.cli.clients import clients
from offpost.cli.common import configure_logging, one_line_errors, process_settings
from offpost.cli.demo import demo
from offpost.cli.importer import import_csv
from offpost.cli.keys import keys
from offpost.cli.roles import dispatcher, webhooks, worker
from offpost.cli.status import status
from offpost.cli.up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="offpost")
def main() -> None:
    """offpost: schedule Facebook Page posts and publish them later from the server."""
    configure_logging()


@main.command()
@one_line_errors
def migrate() -> None:
    """Bring the database schema to the newest version."""
    from offpost.models.migrate import upgrade_to_head

    settings = process_settings()
    before, after = upgrade_to_head(settings.database_url)
    if before == after:
        click.echo(f"database schema already at {after}")
    else:
        click.echo(f"database schema upgraded from {before or 'empty'} to {after}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@one_line_errors
def sandbox(host: str, port: int) -> None:
    """Run the Graph sandbox alone (a local imitation of the Graph API)."""
    from offpost.graph.sandbox.server import serve

    settings = process_settings()
    serve(
        host=host,
        port=port,
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value() if settings.app_secret else None,
        announce=click.echo,
    )


@main.command()
@click.option("--host", default=None, help="Interface to listen on [default: OFFPOST_API_HOST].")
@click.option(
    "--port", default=None, type=click.IntRange(1, 65535), help="[default: OFFPOST_API_PORT]"
)
@one_line_errors
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API (one replica of a distributed deployment)."""
    import uvicorn

    from offpost.api.app import create_app
    from offpost.models import make_engine
    from offpost.models.migrate import ensure_schema_current

    settings = process_settings()
    settings.require("app_id", "app_secret", "encryption_keys")
    # Refuse an outdated schema here, with one line, before uvicorn starts.
    engine = make_engine(settings.database_url)
    try:
        ensure_schema_current(engine)
    finally:
        engine.dispose()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        access_log=False,  # request lines would carry nothing useful that our logs lack
        log_config=None,  # keep the scrubbed logging configured at start
    )


main.add_command(clients)
main.add_command(keys)
main.add_command(dispatcher)
main.add_command(worker)
main.add_command(webhooks)
main.add_command(status)
main.add_command(up)
main.add_command(demo)
main.add_command(import_csv)

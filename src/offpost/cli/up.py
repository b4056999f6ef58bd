"""``offpost up``: everything in one process on embedded defaults (see ``scheduler.embedded``)."""

from __future__ import annotations

from pathlib import Path

import click

from offpost.cli.common import one_line_errors, process_settings


@click.command()
@click.option("--host", default=None, help="Interface to listen on [default: OFFPOST_API_HOST].")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="API port [default: OFFPOST_API_PORT].",
)
@click.option(
    "--sandbox",
    "force_sandbox",
    is_flag=True,
    help="Use the built-in Graph sandbox even when an app is configured.",
)
@click.option(
    "--sandbox-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Sandbox port [default: the API port + 1].",
)
@one_line_errors
def up(host: str | None, port: int | None, force_sandbox: bool, sandbox_port: int | None) -> None:
    """Run the API, a dispatcher, a worker (and the Graph sandbox) in one process.

    Data stays in ./offpost.db and the encryption key in ./.offpost-key, so a
    restart keeps every post and credential. Ctrl-C stops cleanly.
    """
    from offpost.cli.embedded import run_embedded

    settings = process_settings()
    api_port = port or settings.api_port
    run_embedded(
        settings,
        folder=Path.cwd(),
        host=host or settings.api_host,
        port=api_port,
        sandbox_port=sandbox_port or api_port + 1,
        force_sandbox=force_sandbox,
        announce=click.echo,
    )

"""The ``offpost`` command line (API.md §1).

Exit status: 0 on success, 2 on bad usage (click's own), 1 on any other
failure, with one line on stderr that says what went wrong and what to do.
Commands import their heavy machinery lazily so that ``offpost --help`` is fast
and nothing is built at import time.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from offpost import __version__
from offpost.errors import OffpostError
from offpost.redact import install_log_scrubbing
from offpost.scheduler.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str) -> None:
    click.echo(f"offpost: {message}", err=True)
    sys.exit(1)


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn offpost's own errors into the one-line, exit-1 contract of API.md §1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OffpostError as exc:
            _fail(str(exc))
            raise AssertionError("unreachable") from None

    return wrapper


def _settings() -> Settings:
    """Read the settings once for this process and keep its secrets out of every log line."""
    settings = load_settings()
    install_log_scrubbing([settings.app_secret.get_secret_value()] if settings.app_secret else [])
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="offpost")
def main() -> None:
    """offpost: schedule Facebook Page posts and publish them later from the server."""
    install_log_scrubbing()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@main.command()
@one_line_errors
def migrate() -> None:
    """Bring the database schema to the newest version."""
    from offpost.models.migrate import upgrade_to_head

    settings = _settings()
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

    settings = _settings()
    serve(
        host=host,
        port=port,
        app_id=settings.app_id,
        app_secret=settings.app_secret.get_secret_value() if settings.app_secret else None,
        announce=click.echo,
    )

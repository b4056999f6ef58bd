"""What every ``offpost`` command shares: the one-line error contract and process settings."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from offpost.errors import OffpostError
from offpost.redact import install_log_scrubbing
from offpost.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> NoReturn:
    """Stop the command: one line on stderr, exit status 1 (the README)."""
    click.echo(f"offpost: {message}", err=True)
    sys.exit(1)


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn offpost's own errors into the one-line, exit-1 contract of the README."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OffpostError as exc:
            fail(str(exc))

    return wrapper


def process_settings() -> Settings:
    """Read the settings once for this process and keep its secrets out of every log line."""
    settings = load_settings()
    install_log_scrubbing([settings.app_secret.get_secret_value()] if settings.app_secret else [])
    return settings


def configure_logging(level: int = logging.INFO) -> None:
    """Scrubbed logs on stderr; chatty libraries only above INFO, so errors stay one line."""
    install_log_scrubbing()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

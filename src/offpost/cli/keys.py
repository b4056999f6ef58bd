"""``offpost keys rotate``: re-encrypt every stored token with the newest key (the README).

The procedure it is one step of: put the new key first in
``OFFPOST_ENCRYPTION_KEYS`` (``NEW,OLD``) everywhere and restart, run
``offpost keys rotate``, then remove ``OLD``. The rotation commits batch by
batch (:func:`offpost.models.keys.rotate_in_batches`), so it can be stopped at
any moment and run again: what was done stays done, and a rerun skips it.

stdout carries only the summary; the progress display goes to stderr, and only
when stderr is a terminal, so that a failure still leaves one line there.
"""

from __future__ import annotations

import click

from offpost.cli.common import one_line_errors, process_settings
from offpost.errors import OffpostError

#: Rows re-encrypted per transaction unless ``--batch-size`` says otherwise.
DEFAULT_BATCH_SIZE = 500


class RotationInterruptedError(OffpostError):
    """The rotation was stopped (Ctrl-C) before it finished."""


@click.group()
def keys() -> None:
    """Manage the keys that encrypt stored tokens (OFFPOST_ENCRYPTION_KEYS)."""


@keys.command()
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows re-encrypted per transaction.",
)
@one_line_errors
def rotate(batch_size: int) -> None:
    """Re-encrypt every stored token with the newest key of OFFPOST_ENCRYPTION_KEYS.

    Safe to interrupt and to run again: each batch commits on its own, and
    tokens already on the newest key are skipped.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from offpost.models import make_engine
    from offpost.models.keys import count_ciphertexts, rotate_in_batches
    from offpost.models.migrate import ensure_schema_current

    settings = process_settings()
    settings.require("encryption_keys")
    key_list = settings.encryption_key_list()
    engine = make_engine(settings.database_url)
    rotated: dict[str, int] = {}
    seen = 0
    try:
        ensure_schema_current(engine)
        totals = count_ciphertexts(engine)
        rotated = {target.label: 0 for target, _ in totals}
        stderr = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=stderr,
            disable=not stderr.is_terminal,
        ) as progress:
            tasks = {
                target.label: progress.add_task(target.label, total=total)
                for target, total in totals
            }
            for batch in rotate_in_batches(engine, key_list, batch_size=batch_size):
                rotated[batch.target.label] += batch.rotated
                seen += batch.seen
                progress.advance(tasks[batch.target.label], batch.seen)
    except KeyboardInterrupt:
        done = sum(rotated.values())
        raise RotationInterruptedError(
            f"interrupted after re-encrypting {done} tokens; the batches done are kept: "
            "run `offpost keys rotate` again to finish"
        ) from None
    finally:
        engine.dispose()
    total = sum(rotated.values())
    per_column = ", ".join(f"{label} {count}" for label, count in rotated.items())
    click.echo(
        f"re-encrypted {total} tokens with the newest key ({per_column}); "
        f"{seen - total} were on it already"
    )
    if len(key_list) > 1:
        click.echo(
            "every stored token now opens with the newest key alone: once every offpost "
            "process runs with it first, remove the older keys from OFFPOST_ENCRYPTION_KEYS"
        )

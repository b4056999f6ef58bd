"""Key rotation: re-encrypt every stored secret with the newest key.

Two ways to run it, sharing one batch step (:func:`_rotate_batch`):

- :func:`rotate_in_batches` is what ``offpost keys rotate`` runs: each batch of
  rows is its own transaction, so a rotation of millions of rows holds no lock
  for long, and an interrupted one keeps what it did. Rows whose ciphertext the
  newest key already opens are left alone, so a rerun only does what is left.
- :func:`rotate_all` rotates everything in one transaction (all or nothing),
  for small databases and tests.

Afterwards every ciphertext opens with the first key alone, and the old keys
may be removed from ``OFFPOST_ENCRYPTION_KEYS``.

The columns to rotate are found in the metadata (every
:class:`~offpost.models.types.EncryptedToken` column), so a new encrypted
column is rotated without changing this module. Ciphertexts are read and
written raw (as text), never decrypted into ORM objects, and each row is
updated only if its ciphertext is still the one that was read: a token that a
worker refreshes during the rotation is never overwritten with the old one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Column, Table, Text, func, select, tuple_, type_coerce, update
from sqlalchemy.engine import Connection, Engine

from offpost.models.base import Base
from offpost.models.types import EncryptedToken, cipher_of, make_cipher, rotate_ciphertext

logger = logging.getLogger(__name__)

#: Rows read and rewritten per transaction by :func:`rotate_in_batches`.
BATCH_SIZE = 500

#: A row's primary key, in the order of the table's primary key columns.
RowKey = tuple[object, ...]


@dataclass(frozen=True)
class EncryptedColumn:
    """One encrypted column of one table."""

    table: Table
    column: Column[str]

    @property
    def label(self) -> str:
        """``table.column``, for messages."""
        return f"{self.table.name}.{self.column.name}"


@dataclass(frozen=True)
class RotatedBatch:
    """What one committed batch of :func:`rotate_in_batches` did to one column."""

    target: EncryptedColumn
    #: Non-NULL ciphertexts read in this batch.
    seen: int
    #: How many of them were re-encrypted; the rest already opened with the newest key.
    rotated: int


def encrypted_columns() -> list[EncryptedColumn]:
    """Every :class:`EncryptedToken` column of offpost's schema, in table order."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedToken):
                found.append(EncryptedColumn(table, column))
    return found


def count_ciphertexts(engine: Engine) -> list[tuple[EncryptedColumn, int]]:
    """How many non-NULL ciphertexts each encrypted column holds (wiped tokens are NULL)."""
    with engine.connect() as connection:
        return [
            (
                target,
                connection.execute(
                    select(func.count()).select_from(target.table).where(target.column.is_not(None))
                ).scalar_one(),
            )
            for target in encrypted_columns()
        ]


def rotate_in_batches(
    engine: Engine, keys: Sequence[str], *, batch_size: int = BATCH_SIZE
) -> Iterator[RotatedBatch]:
    """Re-encrypt every stored secret with ``keys[0]``, one committed batch at a time.

    ``keys`` are the Fernet keys, newest first, as in ``OFFPOST_ENCRYPTION_KEYS``
    (``engine`` needs none: ciphertexts are handled raw). Yields after each
    batch has been committed. Rows are visited in primary-key order, at most
    ``batch_size`` per transaction; a ciphertext that ``keys[0]`` alone already
    opens is skipped, so running this again after an interruption, or after it
    finished, only rotates what is left.

    Raises :class:`~offpost.models.errors.TokenDecryptionError`, naming the
    column and the row (never the value), when a ciphertext opens with none of
    ``keys``; the batches committed before it stay rotated, and every row
    still opens with ``keys``. Raises ``ValueError`` for an empty ``keys``, a
    malformed key or a ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cipher = make_cipher(list(keys))
    newest = Fernet(keys[0])
    for target in encrypted_columns():
        after: RowKey | None = None
        while True:
            with engine.begin() as connection:
                seen, rotated, after = _rotate_batch(
                    connection, target, cipher, newest=newest, after=after, limit=batch_size
                )
            if seen == 0:
                break
            yield RotatedBatch(target, seen, rotated)


def rotate_all(engine: Engine) -> int:
    """Re-encrypt every stored secret with the newest key of ``engine``; return how many.

    Runs in one transaction: either every ciphertext is rotated or none is.
    Raises :class:`~offpost.models.errors.EncryptionKeysMissingError` when the
    engine has no keys, and :class:`~offpost.models.errors.TokenDecryptionError`
    (naming the table, column and row, never the value) when a ciphertext
    opens with none of them.
    """
    cipher = cipher_of(engine.dialect)  # fail before touching anything
    rotated = 0
    with engine.begin() as connection:
        for target in encrypted_columns():
            count = 0
            after: RowKey | None = None
            while True:
                seen, batch_rotated, after = _rotate_batch(
                    connection, target, cipher, newest=None, after=after, limit=BATCH_SIZE
                )
                if seen == 0:
                    break
                count += batch_rotated
            logger.info(
                "rotated %s ciphertexts in %s",
                count,
                target.label,
                extra={"action": "keys_rotated", "column": target.label, "count": count},
            )
            rotated += count
    return rotated


def _rotate_batch(
    connection: Connection,
    target: EncryptedColumn,
    cipher: MultiFernet,
    *,
    newest: Fernet | None,
    after: RowKey | None,
    limit: int,
) -> tuple[int, int, RowKey | None]:
    """Rotate up to ``limit`` ciphertexts of ``target`` whose row key follows ``after``.

    Returns ``(rows read, rows re-encrypted, key of the last row read)``; the
    last item is ``after`` itself when no row was left. With ``newest``,
    ciphertexts it opens are left as they are.
    """
    key_columns = list(target.table.primary_key.columns)
    # type_coerce to Text: read and write the stored ciphertext as it is,
    # bypassing EncryptedToken's decryption.
    raw = type_coerce(target.column, Text)
    query = select(*key_columns, raw).where(target.column.is_not(None))
    if after is not None:
        # Keyset pagination on the primary key: updated rows never move.
        query = query.where(tuple_(*key_columns) > tuple_(*after))
    rows = connection.execute(query.order_by(*key_columns).limit(limit)).all()
    rotated = 0
    last_key = after
    for row in rows:
        last_key = tuple(row[: len(key_columns)])
        old: str = row[-1]
        if newest is not None and _opens_with(newest, old):
            continue
        where = f"the value in {target.label} of row {_describe(key_columns, last_key)}"
        new = rotate_ciphertext(cipher, old, where=where)
        values: dict[str, object] = {target.column.name: type_coerce(new, Text)}
        if "updated_at" in target.table.columns:
            # A re-encryption is not a change clients should see in updated_at.
            values["updated_at"] = target.table.columns["updated_at"]
        result = connection.execute(
            update(target.table)
            .where(
                *(column == value for column, value in zip(key_columns, last_key, strict=True)),
                # Compare-and-set: a value written since it was read (a refreshed
                # token) is newer than ours and is kept.
                raw == type_coerce(old, Text),
            )
            .values(values)
        )
        rotated += result.rowcount
    return len(rows), rotated, last_key


def _opens_with(fernet: Fernet, ciphertext: str) -> bool:
    # Fernet tokens do not name their key: trying the newest one (an HMAC check)
    # is how a rerun tells what is already done.
    try:
        fernet.decrypt(ciphertext.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def _describe(key_columns: list[Column[object]], key: RowKey) -> str:
    if len(key_columns) == 1:
        return str(key[0])
    return "(" + ", ".join(f"{c.name}={v}" for c, v in zip(key_columns, key, strict=True)) + ")"

"""Key rotation: re-encrypt every stored secret with the newest key.

``offpost keys rotate`` calls :func:`rotate_all` with an engine built with the
new key first and the old keys after it. Afterwards every ciphertext opens
with the first key alone, and the old keys may be removed from
``OFFPOST_ENCRYPTION_KEYS``.

The columns to rotate are found in the metadata (every
:class:`~offpost.models.types.EncryptedToken` column), so a new encrypted
column is rotated without changing this module. Ciphertexts are read and
written raw (as text), never decrypted into ORM objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Column, Table, Text, select, tuple_, type_coerce, update
from sqlalchemy.engine import Connection, Engine

from offpost.models.base import Base
from offpost.models.types import EncryptedToken, cipher_of, rotate_ciphertext

logger = logging.getLogger(__name__)

#: Rows read per query while rotating one column.
BATCH_SIZE = 500


@dataclass(frozen=True)
class EncryptedColumn:
    """One encrypted column of one table."""

    table: Table
    column: Column[str]

    @property
    def label(self) -> str:
        """``table.column``, for messages."""
        return f"{self.table.name}.{self.column.name}"


def encrypted_columns() -> list[EncryptedColumn]:
    """Every :class:`EncryptedToken` column of offpost's schema, in table order."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedToken):
                found.append(EncryptedColumn(table, column))
    return found


def rotate_all(engine: Engine) -> int:
    """Re-encrypt every stored secret with the newest key of ``engine``; return how many.

    Runs in one transaction: either every ciphertext is rotated or none is.
    Raises :class:`~offpost.models.errors.EncryptionKeysMissingError` when the
    engine has no keys, and :class:`~offpost.models.errors.TokenDecryptionError`
    (naming the table and column, never the value) when a ciphertext opens with
    none of them.
    """
    cipher_of(engine.dialect)  # fail before touching anything
    rotated = 0
    with engine.begin() as connection:
        for target in encrypted_columns():
            count = _rotate_column(connection, target)
            logger.info(
                "rotated %s ciphertexts in %s",
                count,
                target.label,
                extra={"action": "keys_rotated", "column": target.label, "count": count},
            )
            rotated += count
    return rotated


def _rotate_column(connection: Connection, target: EncryptedColumn) -> int:
    cipher = cipher_of(connection.dialect)
    key_columns = list(target.table.primary_key.columns)
    # type_coerce to Text: read and write the stored ciphertext as it is,
    # bypassing EncryptedToken's decryption.
    raw = type_coerce(target.column, Text)
    rotated = 0
    last_key: tuple[object, ...] | None = None
    while True:
        query = select(*key_columns, raw).where(target.column.is_not(None))
        if last_key is not None:
            # Keyset pagination on the primary key: updated rows never move.
            query = query.where(tuple_(*key_columns) > tuple_(*last_key))
        rows = connection.execute(query.order_by(*key_columns).limit(BATCH_SIZE)).all()
        if not rows:
            return rotated
        for row in rows:
            key = tuple(row[: len(key_columns)])
            new = rotate_ciphertext(cipher, row[-1], where=f"a value in {target.label}")
            values: dict[str, object] = {target.column.name: type_coerce(new, Text)}
            if "updated_at" in target.table.columns:
                # A re-encryption is not a change clients should see in updated_at.
                values["updated_at"] = target.table.columns["updated_at"]
            connection.execute(
                update(target.table)
                .where(*(column == value for column, value in zip(key_columns, key, strict=True)))
                .values(values)
            )
            rotated += 1
            last_key = key

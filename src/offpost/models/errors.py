"""The errors the persistence layer raises on purpose.

::

    OffpostError
     └── PersistenceError
          ├── NaiveDatetimeError          a datetime without tzinfo was written
          ├── EncryptionKeysMissingError  an encrypted column on an engine without keys
          ├── TokenDecryptionError        no configured key opens a stored ciphertext
          ├── DatabaseUnavailableError    the database cannot be reached
          ├── MigrationError              ``offpost migrate`` could not finish
          └── SchemaMismatchError         the schema is not the one this code needs
               ├── SchemaOutdatedError    empty or older: run ``offpost migrate``
               └── SchemaTooNewError      newer than this code: upgrade offpost

Every message is one line that says what to do, and never contains a token,
a ciphertext, a key or a database password. The engines built by
:func:`offpost.models.db.make_engine` raise these unwrapped (not as
``sqlalchemy.exc.StatementError``), so callers may catch them by type.
"""

from __future__ import annotations

from offpost.errors import OffpostError


class PersistenceError(OffpostError):
    """Base class of the persistence layer's own errors."""


class NaiveDatetimeError(PersistenceError, ValueError):
    """A datetime without a time zone was about to be stored.

    offpost stores UTC and cannot guess which zone a naive value meant.
    """


class EncryptionKeysMissingError(PersistenceError):
    """An encrypted column was read or written on an engine built without keys."""

    def __init__(self) -> None:
        super().__init__(
            "this database engine has no encryption keys, so it cannot read or write "
            "tokens: build it with make_engine(url, encryption_keys=[...]) "
            "(OFFPOST_ENCRYPTION_KEYS, newest first)"
        )


class TokenDecryptionError(PersistenceError):
    """A stored ciphertext opens with none of the configured keys."""

    def __init__(self, where: str = "a stored token") -> None:
        super().__init__(
            f"{where} cannot be decrypted with any key in OFFPOST_ENCRYPTION_KEYS: "
            "the key that encrypted it is not configured (was it removed before "
            "`offpost keys rotate` ran?); put the old key back after the new one, "
            "run `offpost keys rotate`, and only then remove it"
        )


class DatabaseUnavailableError(PersistenceError):
    """The database could not be reached; the message names it without its password."""


class MigrationError(PersistenceError):
    """Migrating the schema failed; the message is the cause's first line."""


class SchemaMismatchError(PersistenceError):
    """The database schema is not the revision this code was written for."""


class SchemaOutdatedError(SchemaMismatchError):
    """The schema is missing or older than this code needs."""


class SchemaTooNewError(SchemaMismatchError):
    """The schema was migrated by a newer offpost than this one."""

"""Column types: UTC datetimes, encrypted tokens, string enums, JSON documents.

- :class:`UTCDateTime` stores UTC and always gives back an aware UTC
  ``datetime``, on SQLite (which has no time zones) as on PostgreSQL
  (``timestamptz``, returned in the session's zone). A naive value is refused.
- :class:`EncryptedToken` stores Fernet ciphertext as text. The cipher is not a
  global: :func:`attach_cipher` puts a :class:`~cryptography.fernet.MultiFernet`
  on one engine's dialect, and the type finds it there on every read and write.
  Two engines with different keys can therefore live in one process (tests,
  ``offpost keys rotate``), and nothing is built at import time.
- :class:`StrEnumType` stores a :class:`enum.StrEnum` as plain text and gives
  back the member; the CHECK constraint that limits the values lives with the
  table (see :func:`offpost.models.base.check_in`), not in a native PostgreSQL
  enum, which would need its own migration for every new value.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import JSON, DateTime, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.types import TypeDecorator, TypeEngine

from offpost.models.errors import (
    EncryptionKeysMissingError,
    NaiveDatetimeError,
    TokenDecryptionError,
)

E = TypeVar("E", bound=enum.StrEnum)

#: The attribute of an engine's dialect that holds its cipher.
CIPHER_ATTRIBUTE = "offpost_cipher"

#: JSON on SQLite, JSONB on PostgreSQL (comparable, groupable, indexable).
JSONDocument: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
#: The same, where Python ``None`` is SQL ``NULL`` (a CHECK may test ``IS NOT NULL``);
#: plain :data:`JSONDocument` stores JSON ``null`` for it.
NullableJSONDocument: TypeEngine[Any] = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, stored in UTC, read back as an aware UTC ``datetime``.

    Writing a naive ``datetime`` raises :class:`NaiveDatetimeError`; an aware
    one in any zone is converted to UTC first, so ``09:00+01:00`` is stored
    and read back as ``08:00Z``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = to_utc(value)
        if dialect.name == "sqlite":
            # SQLite's DATETIME is text without a zone: store the UTC wall clock,
            # so that text order is time order and comparisons stay correct.
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def to_utc(value: datetime) -> datetime:
    """Return ``value`` converted to UTC; raise :class:`NaiveDatetimeError` if it is naive."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"refusing to store the naive datetime {value.isoformat()}: "
            "give it a time zone (e.g. datetime.now(UTC)); offpost stores UTC"
        )
    return value.astimezone(UTC)


class EncryptedToken(TypeDecorator[str]):
    """A secret (access token, webhook secret) stored as Fernet ciphertext.

    Reads and writes need an engine built with keys (:func:`attach_cipher`);
    otherwise :class:`EncryptionKeysMissingError`. A ciphertext that none of
    the keys opens raises :class:`TokenDecryptionError`. ``None`` is stored as
    ``NULL``, which is how a deleted credential forgets its tokens.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return cipher_of(dialect).encrypt(value.encode("utf-8")).decode("ascii")

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return decrypt(cipher_of(dialect), value)


def new_encryption_key() -> str:
    """A new random Fernet key, as text: the one place offpost makes an encryption key."""
    return Fernet.generate_key().decode("ascii")


def make_cipher(keys: list[str]) -> MultiFernet:
    """A cipher that encrypts with ``keys[0]`` and decrypts with any of ``keys``.

    Raises ``ValueError`` for an empty list or a malformed key (without
    echoing the key).
    """
    if not keys:
        raise ValueError("at least one Fernet key is needed")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise ValueError(f"encryption key #{position} is not a Fernet key") from None
    return MultiFernet(fernets)


def attach_cipher(engine: Engine, cipher: MultiFernet) -> None:
    """Make ``cipher`` the one that :class:`EncryptedToken` columns use on ``engine``."""
    setattr(engine.dialect, CIPHER_ATTRIBUTE, cipher)


def cipher_of(dialect: Dialect) -> MultiFernet:
    """The cipher attached to ``dialect``; :class:`EncryptionKeysMissingError` if none."""
    cipher = getattr(dialect, CIPHER_ATTRIBUTE, None)
    if not isinstance(cipher, MultiFernet):
        raise EncryptionKeysMissingError()
    return cipher


def decrypt(cipher: MultiFernet, ciphertext: str, *, where: str = "a stored token") -> str:
    """Open ``ciphertext``; :class:`TokenDecryptionError` (naming ``where``) if no key can."""
    try:
        return cipher.decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        # ``from None``: the Fernet exception chain carries nothing useful and
        # must not drag the ciphertext into a traceback.
        raise TokenDecryptionError(where) from None


def rotate_ciphertext(
    cipher: MultiFernet, ciphertext: str, *, where: str = "a stored token"
) -> str:
    """Re-encrypt ``ciphertext`` with the newest key of ``cipher``.

    The result opens with the first key alone, so older keys can be removed
    once every stored ciphertext has been rotated. Raises
    :class:`TokenDecryptionError` when no key of ``cipher`` opens it.
    """
    try:
        return cipher.rotate(ciphertext.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise TokenDecryptionError(where) from None


class StrEnumType(TypeDecorator[E]):
    """A :class:`enum.StrEnum` member stored as its string value.

    Writing a value that is not a member raises ``ValueError`` before the
    database sees it; the table's CHECK constraint guards writes that bypass
    the ORM.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum_class = enum_class
        self.length = length

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        return self.enum_class(value)

    def __repr__(self) -> str:
        return f"StrEnumType({self.enum_class.__name__})"

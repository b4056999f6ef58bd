"""Column types without a database: UTC normalisation, token encryption, string enums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from offpost.models.errors import (
    EncryptionKeysMissingError,
    NaiveDatetimeError,
    TokenDecryptionError,
)
from offpost.models.post import PostStatus
from offpost.models.types import (
    CIPHER_ATTRIBUTE,
    EncryptedToken,
    StrEnumType,
    UTCDateTime,
    make_cipher,
    new_encryption_key,
    rotate_ciphertext,
    to_utc,
)

TOKEN = "EAAGm0PX4ZCpsBAPLAINTEXTtoken123"


def _sqlite() -> Dialect:
    return sqlite.dialect()


def _postgresql() -> Dialect:
    return postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


def _dialect_with_keys(*keys: str) -> Dialect:
    dialect = _sqlite()
    setattr(dialect, CIPHER_ATTRIBUTE, make_cipher(list(keys)))
    return dialect


# --- UTCDateTime -----------------------------------------------------------


@pytest.mark.parametrize("dialect", [_sqlite(), _postgresql()], ids=["sqlite", "postgresql"])
def test_a_naive_datetime_is_refused(dialect: Dialect) -> None:
    with pytest.raises(NaiveDatetimeError, match="naive datetime 2026-01-01T09:00:00"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1, 9, 0), dialect)


def test_a_naive_datetime_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="time zone"):
        to_utc(datetime(2026, 1, 1))


def test_something_else_than_a_datetime_is_refused() -> None:
    with pytest.raises(TypeError, match="expected a datetime, got str"):
        UTCDateTime().process_bind_param("2026-01-01T09:00:00Z", _postgresql())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected_utc"),
    [
        (datetime(2026, 1, 1, 9, 0, tzinfo=UTC), datetime(2026, 1, 1, 9, 0)),
        (datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=1))), datetime(2026, 1, 1, 8)),
        (
            datetime(2026, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2026, 1, 2, 4, 30),
        ),
        # Summer time in Berlin is UTC+2.
        (datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")), datetime(2026, 7, 1, 7, 0)),
        (
            datetime(2026, 1, 1, 9, 0, 0, 123456, tzinfo=ZoneInfo("Asia/Kolkata")),
            datetime(2026, 1, 1, 3, 30, 0, 123456),
        ),
    ],
)
def test_aware_datetimes_are_stored_in_utc(value: datetime, expected_utc: datetime) -> None:
    stored_pg = UTCDateTime().process_bind_param(value, _postgresql())
    assert stored_pg == expected_utc.replace(tzinfo=UTC)
    assert stored_pg is not None
    assert stored_pg.utcoffset() == timedelta(0)
    # SQLite keeps text without a zone: the UTC wall clock, so text order is time order.
    assert UTCDateTime().process_bind_param(value, _sqlite()) == expected_utc


def test_none_is_stored_and_read_as_none() -> None:
    assert UTCDateTime().process_bind_param(None, _sqlite()) is None
    assert UTCDateTime().process_result_value(None, _postgresql()) is None


def test_a_naive_value_read_from_sqlite_is_utc() -> None:
    read = UTCDateTime().process_result_value(datetime(2026, 1, 1, 8, 0), _sqlite())
    assert read == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    assert read is not None
    assert read.tzinfo is UTC


def test_a_value_read_in_another_session_zone_is_converted_to_utc() -> None:
    # psycopg returns timestamptz in the session's TimeZone setting.
    in_session_zone = datetime(2026, 1, 1, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    read = UTCDateTime().process_result_value(in_session_zone, _postgresql())
    assert read is not None
    assert read.tzinfo is UTC
    assert (read.hour, read.minute) == (9, 0)


# --- EncryptedToken --------------------------------------------------------


def test_a_token_is_stored_as_fernet_ciphertext_and_read_back() -> None:
    dialect = _dialect_with_keys(new_encryption_key())
    stored = EncryptedToken().process_bind_param(TOKEN, dialect)
    assert stored is not None
    assert TOKEN not in stored
    assert stored.startswith("gAAAAA")  # Fernet version byte 0x80, base64
    assert EncryptedToken().process_result_value(stored, dialect) == TOKEN


def test_two_writes_of_the_same_token_differ() -> None:
    dialect = _dialect_with_keys(new_encryption_key())
    first = EncryptedToken().process_bind_param(TOKEN, dialect)
    assert first != EncryptedToken().process_bind_param(TOKEN, dialect)


def test_none_stays_null_even_without_keys() -> None:
    assert EncryptedToken().process_bind_param(None, _sqlite()) is None
    assert EncryptedToken().process_result_value(None, _sqlite()) is None


def test_a_dialect_without_keys_refuses_to_write_or_read_a_token() -> None:
    with pytest.raises(EncryptionKeysMissingError, match="encryption_keys"):
        EncryptedToken().process_bind_param(TOKEN, _sqlite())
    with pytest.raises(EncryptionKeysMissingError):
        EncryptedToken().process_result_value("gAAAAAB...", _sqlite())


def test_a_ciphertext_of_a_removed_key_says_what_to_do_without_token_material() -> None:
    old = _dialect_with_keys(new_encryption_key())
    new = _dialect_with_keys(new_encryption_key())
    stored = EncryptedToken().process_bind_param(TOKEN, old)
    assert stored is not None
    with pytest.raises(TokenDecryptionError) as caught:
        EncryptedToken().process_result_value(stored, new)
    message = str(caught.value)
    assert "offpost keys rotate" in message
    assert "OFFPOST_ENCRYPTION_KEYS" in message
    assert TOKEN not in message
    assert stored not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_the_first_key_encrypts_and_any_key_decrypts() -> None:
    old_key, new_key = new_encryption_key(), new_encryption_key()
    stored_with_old = EncryptedToken().process_bind_param(TOKEN, _dialect_with_keys(old_key))
    both = _dialect_with_keys(new_key, old_key)
    assert EncryptedToken().process_result_value(stored_with_old, both) == TOKEN
    stored_with_both = EncryptedToken().process_bind_param(TOKEN, both)
    assert EncryptedToken().process_result_value(stored_with_both, _dialect_with_keys(new_key))


def test_rotating_a_ciphertext_makes_the_newest_key_alone_enough() -> None:
    old_key, new_key = new_encryption_key(), new_encryption_key()
    stored = make_cipher([old_key]).encrypt(TOKEN.encode()).decode()
    rotated = rotate_ciphertext(make_cipher([new_key, old_key]), stored)
    assert Fernet(new_key).decrypt(rotated.encode()).decode() == TOKEN
    with pytest.raises(TokenDecryptionError):
        rotate_ciphertext(make_cipher([new_key]), stored)


def test_make_cipher_refuses_a_bad_key_without_echoing_it() -> None:
    good = new_encryption_key()
    with pytest.raises(ValueError, match="key #2 is not a Fernet key") as caught:
        make_cipher([good, "not-a-key-secret"])
    assert "not-a-key-secret" not in str(caught.value)
    with pytest.raises(ValueError, match="at least one"):
        make_cipher([])


# --- StrEnumType -----------------------------------------------------------


def test_a_status_is_stored_as_its_value_and_read_as_the_member() -> None:
    column_type = StrEnumType(PostStatus)
    assert column_type.process_bind_param(PostStatus.QUEUED, _sqlite()) == "queued"
    assert column_type.process_bind_param("queued", _sqlite()) == "queued"
    read = column_type.process_result_value("needs_reauth", _sqlite())
    assert read is PostStatus.NEEDS_REAUTH


def test_an_unknown_status_is_refused_before_the_database() -> None:
    with pytest.raises(ValueError, match="'posted' is not a valid PostStatus"):
        StrEnumType(PostStatus).process_bind_param("posted", _sqlite())

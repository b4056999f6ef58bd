"""The dashboard's session tokens, CSRF tokens and origin check: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from offpost.api.dashboard.session import (
    SESSION_TTL,
    SessionSigner,
    derive_secrets,
    same_origin,
)
from offpost.models.types import new_encryption_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLIENT = "cli_" + "a" * 20
KEY_HASH = "ab" * 32


@pytest.fixture
def keys() -> list[str]:
    return [new_encryption_key(), new_encryption_key()]


def test_a_token_verifies_until_it_expires(keys: list[str]) -> None:
    signer = SessionSigner(derive_secrets(keys))
    token = signer.issue(CLIENT, KEY_HASH, NOW)
    session = signer.verify(token, KEY_HASH, NOW + SESSION_TTL / 2)
    assert session is not None
    assert session.client_id == CLIENT
    assert signer.claimed_client(token) == CLIENT
    assert signer.verify(token, KEY_HASH, NOW + SESSION_TTL) is None


def test_a_token_holds_no_secret(keys: list[str]) -> None:
    token = SessionSigner(derive_secrets(keys)).issue(CLIENT, KEY_HASH, NOW)
    assert KEY_HASH not in token
    assert not any(key.rstrip("=") in token for key in keys)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace(CLIENT, "cli_" + "b" * 20),  # another client
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
        lambda t: t.replace(".", ".9", 2).replace(".9", ".", 1),  # the expiry
        lambda t: t + "x",
        lambda t: "",
    ],
)
def test_a_changed_token_is_refused(keys: list[str], change: object) -> None:
    signer = SessionSigner(derive_secrets(keys))
    token = signer.issue(CLIENT, KEY_HASH, NOW)
    assert signer.verify(change(token), KEY_HASH, NOW) is None  # type: ignore[operator]


def test_a_new_key_hash_ends_the_session(keys: list[str]) -> None:
    signer = SessionSigner(derive_secrets(keys))
    token = signer.issue(CLIENT, KEY_HASH, NOW)
    assert signer.verify(token, "cd" * 32, NOW) is None


def test_rotating_the_encryption_keys_keeps_sessions(keys: list[str]) -> None:
    before = SessionSigner(derive_secrets(keys[1:]))
    token = before.issue(CLIENT, KEY_HASH, NOW)
    after = SessionSigner(derive_secrets(keys))  # a newer key in front
    session = after.verify(token, KEY_HASH, NOW)
    assert session is not None
    assert after.csrf_matches(session, before.csrf_token(session))
    assert SessionSigner(derive_secrets(keys[:1])).verify(token, KEY_HASH, NOW) is None


def test_csrf_tokens_belong_to_one_session(keys: list[str]) -> None:
    signer = SessionSigner(derive_secrets(keys))
    one = signer.verify(signer.issue(CLIENT, KEY_HASH, NOW), KEY_HASH, NOW)
    two = signer.verify(signer.issue(CLIENT, KEY_HASH, NOW), KEY_HASH, NOW)
    assert one is not None
    assert two is not None
    assert signer.csrf_matches(one, signer.csrf_token(one))
    assert not signer.csrf_matches(two, signer.csrf_token(one))
    assert not signer.csrf_matches(one, None)
    assert not signer.csrf_matches(one, "")


def test_no_keys_no_sessions() -> None:
    with pytest.raises(ValueError, match="OFFPOST_ENCRYPTION_KEYS"):
        derive_secrets([])


@pytest.mark.parametrize(
    ("origin", "referer", "expected"),
    [
        ("https://ops.example", None, True),
        ("https://ops.example/", None, True),
        ("https://evil.example", "https://ops.example/admin", False),  # Origin decides
        ("null", None, False),
        ("http://ops.example", None, False),  # another scheme is another origin
        (None, "https://ops.example/admin/posts/x", True),
        (None, "https://evil.example/admin", False),
        (None, None, True),  # nothing said: the CSRF token alone decides
    ],
)
def test_same_origin(origin: str | None, referer: str | None, expected: bool) -> None:
    assert same_origin(origin, referer, "https://ops.example") is expected

"""``offpost keys rotate`` on SQLite and PostgreSQL: batched, interruptible, rerunnable.

Tokens are written under key A; the operator then configures ``B,A``, rotates,
and finally runs with ``B`` alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from offpost.cli.main import main
from offpost.models import (
    Client,
    Credential,
    CredentialPage,
    Webhook,
    hash_api_key,
    make_engine,
    make_sessionmaker,
    new_api_key,
)
from offpost.models import keys as keys_module
from offpost.models.errors import TokenDecryptionError
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key

EngineFactory = Callable[..., Engine]
#: (table, row id) -> plaintext; composite keys are joined with "/".
Tokens = dict[tuple[str, str], str]

CLIENTS = 3
PAGES_PER_CREDENTIAL = 2
# Per client: a user token, its Page tokens and a webhook secret.
TOKENS = CLIENTS * (1 + PAGES_PER_CREDENTIAL + 1)
SUMMARY = re.compile(r"^re-encrypted (\d+) tokens with the newest key \((.*)\); (\d+) were on it")


@pytest.fixture
def migrated_url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    upgrade_to_head(database_url)
    monkeypatch.setenv("OFFPOST_DATABASE_URL", database_url)
    return database_url


@pytest.fixture
def engines(migrated_url: str) -> Iterator[EngineFactory]:
    """Build engines on the migrated database with the given keys; all disposed afterwards."""
    built: list[Engine] = []

    def build(*keys: str) -> Engine:
        engine = make_engine(migrated_url, encryption_keys=list(keys) or None)
        built.append(engine)
        return engine

    yield build
    for engine in built:
        engine.dispose()


@pytest.fixture
def key_a() -> str:
    return new_encryption_key()


@pytest.fixture
def key_b() -> str:
    return new_encryption_key()


@pytest.fixture
def stored(engines: EngineFactory, key_a: str) -> Tokens:
    """Tokens written under key A, plus one credential whose tokens were wiped (NULL)."""
    with make_sessionmaker(engines(key_a)).begin() as session:
        for n in range(CLIENTS):
            client = Client(name=f"app-{n}", key_hash=hash_api_key(new_api_key()))
            session.add(client)
            session.flush()
            session.add(
                Credential(
                    client_id=client.id,
                    fb_user_id=f"1000{n}",
                    user_token=f"EAAuserToken{n}Plaintext0123456789",
                    pages=[
                        CredentialPage(
                            page_id=f"20{n}{p}", name="Page", page_token=f"EAApage{n}{p}Plaintext"
                        )
                        for p in range(PAGES_PER_CREDENTIAL)
                    ],
                )
            )
            session.add(
                Webhook(client_id=client.id, url="https://example.com/h", secret=f"whsec_{n}")
            )
        wiped = Credential(client_id=client.id, fb_user_id="99999", user_token="EAAwiped")
        wiped.pages = [CredentialPage(page_id="9999", name="Gone", page_token="EAAwipedpage")]
        session.add(wiped)
        session.flush()
        wiped.forget_tokens()
    tokens = _read_tokens(engines(key_a))
    assert len(tokens) == TOKENS
    return tokens


def _read_tokens(engine: Engine) -> Tokens:
    """Every stored token, decrypted through the ORM (wiped ones are left out)."""
    with make_sessionmaker(engine)() as session:
        found: Tokens = {}
        for credential in session.scalars(select(Credential)):
            if credential.user_token is not None:
                found["credentials", credential.id] = credential.user_token
        for page in session.scalars(select(CredentialPage)):
            if page.page_token is not None:
                found["credential_pages", f"{page.credential_id}/{page.page_id}"] = page.page_token
        for webhook in session.scalars(select(Webhook)):
            found["webhooks", webhook.id] = webhook.secret
        return found


def _raw_ciphertexts(engine: Engine) -> dict[tuple[str, str], str | None]:
    """Every stored ciphertext as it is in the database, NULLs included."""
    queries = {
        "credentials": "SELECT id, user_token FROM credentials",
        "credential_pages": (
            "SELECT credential_id || '/' || page_id, page_token FROM credential_pages"
        ),
        "webhooks": "SELECT id, secret FROM webhooks",
    }
    with engine.connect() as connection:
        return {
            (table, row_id): value
            for table, query in queries.items()
            for row_id, value in connection.execute(text(query))
        }


def _rotate(monkeypatch: pytest.MonkeyPatch, keys: str, *args: str) -> Result:
    monkeypatch.setenv("OFFPOST_ENCRYPTION_KEYS", keys)
    return CliRunner().invoke(main, ["keys", "rotate", *args])


def _summary(result: Result) -> tuple[int, dict[str, int], int]:
    """(re-encrypted, per column, already on the newest key) from the summary line."""
    assert result.exit_code == 0, result.output
    match = SUMMARY.match(result.stdout.splitlines()[0])
    assert match, result.stdout
    per_column = {
        label: int(count)
        for label, count in (part.rsplit(" ", 1) for part in match.group(2).split(", "))
    }
    return int(match.group(1)), per_column, int(match.group(3))


def _opens_with(key: str, ciphertext: str | None) -> bool:
    assert ciphertext is not None
    try:
        Fernet(key).decrypt(ciphertext.encode())
    except Exception:  # noqa: BLE001 - InvalidToken: not this key
        return False
    return True


@pytest.mark.parametrize("batch_size", ["500", "2"])
def test_rotation_lets_the_new_key_alone_read_every_token(
    monkeypatch: pytest.MonkeyPatch,
    engines: EngineFactory,
    stored: Tokens,
    key_a: str,
    key_b: str,
    batch_size: str,
) -> None:
    before = _raw_ciphertexts(engines(key_a))

    result = _rotate(monkeypatch, f"{key_b},{key_a}", "--batch-size", batch_size)

    total, per_column, already = _summary(result)
    assert total == TOKENS
    assert already == 0
    assert per_column == {
        "credentials.user_token": CLIENTS,
        "credential_pages.page_token": CLIENTS * PAGES_PER_CREDENTIAL,
        "webhooks.secret": CLIENTS,
    }
    assert result.stderr == ""  # no progress display when stderr is not a terminal
    assert _read_tokens(engines(key_b)) == stored
    after = _raw_ciphertexts(engines(key_b))
    assert after.keys() == before.keys()
    for row, ciphertext in after.items():
        if before[row] is None:
            assert ciphertext is None  # wiped tokens stay wiped
        else:
            assert ciphertext != before[row]
            assert _opens_with(key_b, ciphertext)
            assert not _opens_with(key_a, ciphertext)


def test_rotation_keeps_updated_at(
    monkeypatch: pytest.MonkeyPatch, engines: EngineFactory, stored: Tokens, key_a: str, key_b: str
) -> None:
    def updated_at(engine: Engine) -> list[Any]:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(Credential.updated_at).order_by(Credential.id)))

    before = updated_at(engines(key_a))
    _summary(_rotate(monkeypatch, f"{key_b},{key_a}"))
    assert updated_at(engines(key_b)) == before


def test_before_rotation_the_new_key_alone_can_neither_read_nor_rotate(
    monkeypatch: pytest.MonkeyPatch, engines: EngineFactory, stored: Tokens, key_a: str, key_b: str
) -> None:
    before = _raw_ciphertexts(engines(key_a))
    with pytest.raises(TokenDecryptionError, match="offpost keys rotate"):
        _read_tokens(engines(key_b))

    result = _rotate(monkeypatch, key_b)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    named = re.search(r"credentials\.user_token of row (\S+) ", lines[0])
    assert named, lines[0]
    assert ("credentials", named.group(1)) in stored
    assert "cannot be decrypted with any key in OFFPOST_ENCRYPTION_KEYS" in lines[0]
    assert "put the old key back after the new one" in lines[0]
    for secret in [*stored.values(), *filter(None, before.values()), key_a, key_b]:
        assert secret not in result.output
    assert _raw_ciphertexts(engines(key_a)) == before


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_rotation_keeps_every_token_readable_and_a_rerun_finishes(
    monkeypatch: pytest.MonkeyPatch,
    engines: EngineFactory,
    stored: Tokens,
    key_a: str,
    key_b: str,
    interruption: type[BaseException],
) -> None:
    real_batch = keys_module._rotate_batch
    calls = 0

    def second_batch_fails(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        outcome = real_batch(*args, **kwargs)
        if calls == 2:
            # After the batch's UPDATEs, before its commit: they must roll back.
            raise interruption()
        return outcome

    monkeypatch.setattr(keys_module, "_rotate_batch", second_batch_fails)

    interrupted = _rotate(monkeypatch, f"{key_b},{key_a}", "--batch-size", "2")

    assert interrupted.exit_code == 1
    if interruption is KeyboardInterrupt:
        lines = interrupted.stderr.splitlines()
        assert len(lines) == 1, interrupted.stderr
        assert "interrupted after re-encrypting 2 tokens" in lines[0]
        assert "run `offpost keys rotate` again" in lines[0]
    else:
        assert isinstance(interrupted.exception, RuntimeError)
    assert _read_tokens(engines(key_b, key_a)) == stored
    raw = _raw_ciphertexts(engines(key_a))
    on_b = [row for row, ciphertext in raw.items() if ciphertext and _opens_with(key_b, ciphertext)]
    assert len(on_b) == 2  # the first batch only
    with pytest.raises(TokenDecryptionError):
        _read_tokens(engines(key_b))

    rerun = _rotate(monkeypatch, f"{key_b},{key_a}", "--batch-size", "2")

    total, _, already = _summary(rerun)
    assert (total, already) == (TOKENS - 2, 2)
    assert _read_tokens(engines(key_b)) == stored
    after = _raw_ciphertexts(engines(key_b))
    for row in on_b:
        assert after[row] == raw[row]  # done by the first run, left alone by the rerun


def test_rerunning_after_success_is_harmless(
    monkeypatch: pytest.MonkeyPatch, engines: EngineFactory, stored: Tokens, key_a: str, key_b: str
) -> None:
    assert _summary(_rotate(monkeypatch, f"{key_b},{key_a}"))[0] == TOKENS
    rotated = _raw_ciphertexts(engines(key_b))

    total, _, already = _summary(_rotate(monkeypatch, f"{key_b},{key_a}"))
    assert (total, already) == (0, TOKENS)
    total, _, already = _summary(_rotate(monkeypatch, key_b))
    assert (total, already) == (0, TOKENS)

    assert _raw_ciphertexts(engines(key_b)) == rotated
    assert _read_tokens(engines(key_b)) == stored


def test_an_empty_database_rotates_nothing(
    monkeypatch: pytest.MonkeyPatch, migrated_url: str, key_a: str
) -> None:
    result = _rotate(monkeypatch, key_a)

    total, per_column, already = _summary(result)
    assert (total, already) == (0, 0)
    assert set(per_column.values()) == {0}


def test_rotation_needs_the_encryption_keys(migrated_url: str) -> None:
    result = CliRunner().invoke(main, ["keys", "rotate"])

    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "OFFPOST_ENCRYPTION_KEYS is not set" in lines[0]


def test_rotation_refuses_an_unmigrated_database(
    monkeypatch: pytest.MonkeyPatch, database_url: str, key_a: str
) -> None:
    monkeypatch.setenv("OFFPOST_DATABASE_URL", database_url)

    result = _rotate(monkeypatch, key_a)

    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "offpost migrate" in lines[0]


def test_a_batch_size_below_one_is_bad_usage(
    monkeypatch: pytest.MonkeyPatch, migrated_url: str, key_a: str
) -> None:
    assert _rotate(monkeypatch, key_a, "--batch-size", "0").exit_code == 2

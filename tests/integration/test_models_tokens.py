"""Tokens at rest, on SQLite and PostgreSQL: encrypted, unreadable without the key, rotatable."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from offpost.models import (
    Client,
    Credential,
    CredentialPage,
    CredentialStatus,
    Webhook,
    hash_api_key,
    make_engine,
    make_sessionmaker,
    new_api_key,
)
from offpost.models.errors import EncryptionKeysMissingError, TokenDecryptionError
from offpost.models.keys import rotate_all
from offpost.models.migrate import upgrade_to_head
from offpost.models.types import new_encryption_key

USER_TOKEN = "EAAGm0PX4ZCpsBAUserTokenPlaintext0123456789"
PAGE_TOKEN = "EAAGm0PX4ZCpsBAPageTokenPlaintext9876543210"
WEBHOOK_SECRET = "whsec_PlaintextWebhookSecret"

EngineFactory = Callable[..., Engine]


@pytest.fixture
def migrated_url(database_url: str) -> str:
    upgrade_to_head(database_url)
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
def old_key() -> str:
    return new_encryption_key()


@pytest.fixture
def new_key() -> str:
    return new_encryption_key()


def _store_credential(engine: Engine) -> str:
    with make_sessionmaker(engine).begin() as session:
        client = Client(name="app", key_hash=hash_api_key(new_api_key()))
        session.add(client)
        session.flush()
        credential = Credential(
            client_id=client.id,
            fb_user_id="10001",
            user_token=USER_TOKEN,
            scopes=["pages_manage_posts", "pages_show_list"],
            pages=[CredentialPage(page_id="2001", name="Bakery", page_token=PAGE_TOKEN)],
        )
        session.add(credential)
        session.add(
            Webhook(client_id=client.id, url="https://example.com/hook", secret=WEBHOOK_SECRET)
        )
        session.flush()
        return credential.id


def _read_tokens(engine: Engine, credential_id: str) -> tuple[str | None, str | None]:
    with make_sessionmaker(engine)() as session:
        credential = session.get_one(Credential, credential_id)
        return credential.user_token, credential.pages[0].page_token


def _raw_user_token(engine: Engine, credential_id: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                text("SELECT user_token FROM credentials WHERE id = :id"), {"id": credential_id}
            ).scalar_one()
        )


def test_tokens_round_trip_through_the_orm(engines: EngineFactory, old_key: str) -> None:
    engine = engines(old_key)
    credential_id = _store_credential(engine)
    assert _read_tokens(engine, credential_id) == (USER_TOKEN, PAGE_TOKEN)
    with make_sessionmaker(engine)() as session:
        credential = session.get_one(Credential, credential_id)
        assert credential.status is CredentialStatus.ACTIVE
        assert credential.scopes == ["pages_manage_posts", "pages_show_list"]
        assert session.scalars(select(Webhook.secret)).one() == WEBHOOK_SECRET


def test_the_stored_value_is_fernet_ciphertext_not_the_token(
    engines: EngineFactory, old_key: str
) -> None:
    engine = engines(old_key)
    credential_id = _store_credential(engine)
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT c.user_token, p.page_token, w.secret FROM credentials c "
                "JOIN credential_pages p ON p.credential_id = c.id "
                "JOIN webhooks w ON w.client_id = c.client_id WHERE c.id = :id"
            ),
            {"id": credential_id},
        ).one()
    for stored, plaintext in zip(row, (USER_TOKEN, PAGE_TOKEN, WEBHOOK_SECRET), strict=True):
        assert plaintext not in stored
        assert stored.startswith("gAAAAA")
        assert Fernet(old_key).decrypt(stored.encode()).decode() == plaintext


def test_another_key_cannot_read_the_token(
    engines: EngineFactory, old_key: str, new_key: str
) -> None:
    credential_id = _store_credential(engines(old_key))
    with pytest.raises(TokenDecryptionError) as caught:
        _read_tokens(engines(new_key), credential_id)
    assert "offpost keys rotate" in str(caught.value)
    assert USER_TOKEN not in str(caught.value)


def test_an_engine_without_keys_cannot_read_or_write_tokens(
    engines: EngineFactory, old_key: str
) -> None:
    credential_id = _store_credential(engines(old_key))
    keyless = engines()
    with pytest.raises(EncryptionKeysMissingError):
        _read_tokens(keyless, credential_id)
    with keyless.connect() as connection:
        client_id = connection.execute(select(Client.id)).scalar_one()
    with make_sessionmaker(keyless)() as session:
        session.add(Credential(client_id=client_id, fb_user_id="10002", user_token="EAAnew"))
        with pytest.raises(EncryptionKeysMissingError):
            session.commit()
    # Columns that hold no secret are still readable without keys.
    with keyless.connect() as connection:
        assert connection.execute(select(Credential.fb_user_id)).scalar_one() == "10001"


def test_the_new_key_first_and_the_old_key_after_read_old_tokens(
    engines: EngineFactory, old_key: str, new_key: str
) -> None:
    credential_id = _store_credential(engines(old_key))
    assert _read_tokens(engines(new_key, old_key), credential_id) == (USER_TOKEN, PAGE_TOKEN)


def test_rotating_lets_the_new_key_alone_read_every_token(
    engines: EngineFactory, old_key: str, new_key: str
) -> None:
    credential_id = _store_credential(engines(old_key))
    before = _raw_user_token(engines(old_key), credential_id)

    assert rotate_all(engines(new_key, old_key)) == 3  # user token, Page token, webhook secret

    new_only = engines(new_key)
    assert _read_tokens(new_only, credential_id) == (USER_TOKEN, PAGE_TOKEN)
    with make_sessionmaker(new_only)() as session:
        assert session.scalars(select(Webhook.secret)).one() == WEBHOOK_SECRET
    assert _raw_user_token(new_only, credential_id) != before
    with pytest.raises(TokenDecryptionError):
        _read_tokens(engines(old_key), credential_id)


def test_rotation_keeps_updated_at(engines: EngineFactory, old_key: str, new_key: str) -> None:
    credential_id = _store_credential(engines(old_key))
    with make_sessionmaker(engines(old_key))() as session:
        before = session.get_one(Credential, credential_id).updated_at
    rotate_all(engines(new_key, old_key))
    with make_sessionmaker(engines(new_key))() as session:
        assert session.get_one(Credential, credential_id).updated_at == before


def test_rotation_with_a_missing_old_key_changes_nothing(
    engines: EngineFactory, old_key: str, new_key: str
) -> None:
    credential_id = _store_credential(engines(old_key))
    before = _raw_user_token(engines(old_key), credential_id)
    with pytest.raises(TokenDecryptionError, match=r"credentials\.user_token"):
        rotate_all(engines(new_key))
    assert _raw_user_token(engines(old_key), credential_id) == before


def test_forgetting_tokens_wipes_the_ciphertexts(engines: EngineFactory, old_key: str) -> None:
    engine = engines(old_key)
    credential_id = _store_credential(engine)
    with make_sessionmaker(engine).begin() as session:
        session.get_one(Credential, credential_id).forget_tokens()
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT c.user_token, p.page_token, c.status FROM credentials c "
                "JOIN credential_pages p ON p.credential_id = c.id WHERE c.id = :id"
            ),
            {"id": credential_id},
        ).one()
    assert tuple(row) == (None, None, "deleted")

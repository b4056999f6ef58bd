"""Settings: every variable of the README's table, defaults, one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from offpost.models.types import new_encryption_key
from offpost.settings import Settings, SettingsError, load_settings


def test_defaults_match_the_contract() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./offpost.db"
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.broker_url_is_set is False
    assert settings.graph_url == "https://graph.facebook.com"
    assert settings.graph_version == "v26.0"
    assert settings.graph_base_url == "https://graph.facebook.com/v26.0"
    assert settings.app_id is None
    assert settings.app_secret is None
    assert settings.encryption_keys is None
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.refresh_margin_hours == 72
    assert settings.appsecret_time is True


def test_every_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_encryption_key()
    values = {
        "OFFPOST_DATABASE_URL": "postgresql+psycopg://u@db:5432/offpost",
        "OFFPOST_BROKER_URL": "redis://cache:6379/3",
        "OFFPOST_GRAPH_URL": "http://127.0.0.1:8001/",
        "OFFPOST_GRAPH_VERSION": "v25.0",
        "OFFPOST_APP_ID": "1234567890",
        "OFFPOST_APP_SECRET": "s3cr3t",
        "OFFPOST_ENCRYPTION_KEYS": f"{key}, {new_encryption_key()}",
        "OFFPOST_API_HOST": "0.0.0.0",
        "OFFPOST_API_PORT": "9000",
        "OFFPOST_REFRESH_MARGIN_HOURS": "24",
        "OFFPOST_APPSECRET_TIME": "false",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database_url == values["OFFPOST_DATABASE_URL"]
    assert settings.broker_url_is_set is True
    assert settings.graph_url == "http://127.0.0.1:8001"
    assert settings.graph_base_url == "http://127.0.0.1:8001/v25.0"
    assert settings.app_id == "1234567890"
    assert settings.app_secret is not None
    assert settings.app_secret.get_secret_value() == "s3cr3t"
    assert settings.encryption_key_list()[0] == key
    assert len(settings.encryption_key_list()) == 2
    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 9000)
    assert settings.refresh_margin_hours == 24
    assert settings.appsecret_time is False


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OFFPOST_API_PORT=8123\n")
    assert load_settings().api_port == 8123


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OFFPOST_API_PORT", "abc", "OFFPOST_API_PORT: "),
        ("OFFPOST_API_PORT", "70000", "OFFPOST_API_PORT: "),
        (
            "OFFPOST_DATABASE_URL",
            "not a url",
            "OFFPOST_DATABASE_URL: not a SQLAlchemy database URL",
        ),
        ("OFFPOST_DATABASE_URL", "mysql://x/y", "OFFPOST_DATABASE_URL: only sqlite"),
        ("OFFPOST_BROKER_URL", "localhost:6379", "OFFPOST_BROKER_URL: expected a broker URL"),
        ("OFFPOST_GRAPH_URL", "graph.facebook.com", "OFFPOST_GRAPH_URL: expected an http(s) URL"),
        ("OFFPOST_GRAPH_VERSION", "26", "OFFPOST_GRAPH_VERSION: expected a version"),
        ("OFFPOST_APP_ID", "my-app", "OFFPOST_APP_ID: a Facebook app id is a number"),
        (
            "OFFPOST_ENCRYPTION_KEYS",
            "not-a-key",
            "OFFPOST_ENCRYPTION_KEYS: key #1 is not a Fernet key",
        ),
        ("OFFPOST_ENCRYPTION_KEYS", " , ", "OFFPOST_ENCRYPTION_KEYS: empty"),
        ("OFFPOST_REFRESH_MARGIN_HOURS", "-1", "OFFPOST_REFRESH_MARGIN_HOURS: "),
        ("OFFPOST_APPSECRET_TIME", "maybe", "OFFPOST_APPSECRET_TIME: "),
    ],
)
def test_malformed_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_bad_encryption_key_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    good = new_encryption_key()
    monkeypatch.setenv("OFFPOST_ENCRYPTION_KEYS", f"{good},tooshort-but-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "key #2" in str(caught.value)
    assert "tooshort-but-secret" not in str(caught.value)
    assert good not in str(caught.value)


def test_require_names_the_missing_variable() -> None:
    settings = Settings(app_id="1")
    settings.require("app_id")
    with pytest.raises(SettingsError, match=r"^OFFPOST_APP_SECRET is not set"):
        settings.require("app_id", "app_secret")


def test_multi_fernet_encrypts_with_the_first_key() -> None:
    new, old = new_encryption_key(), new_encryption_key()
    settings = Settings(encryption_keys=f"{new},{old}")
    token = settings.multi_fernet().encrypt(b"x")
    assert Fernet(new).decrypt(token) == b"x"
    assert settings.multi_fernet().decrypt(Fernet(old).encrypt(b"y")) == b"y"


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings(app_secret="very-secret-value", encryption_keys=new_encryption_key())
    assert "very-secret-value" not in repr(settings)
    assert settings.encryption_key_list()[0] not in repr(settings)

"""No secret leaves through text: the scrubber and the process-wide log filter."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from offpost import redact
from offpost.redact import REDACTED, hide_password, install_log_scrubbing, scrub

USER_TOKEN = "EAAGm0PX4ZCpsBAKZAvQ9xZC0ZAhZB1ZBiZA7ZBb8ZCxZAZC3" + "x" * 80
SECRET = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "text",
    [
        f"token {USER_TOKEN} here",
        f"GET https://graph.facebook.com/v26.0/me?access_token={USER_TOKEN}&fields=id",
        "POST /oauth/access_token?client_secret=abcdef123456&fb_exchange_token=short-lived-123",
        "debug_token?input_token=anything-at-all&access_token=123456789%7Cdeadbeefdeadbeef",
        '{"access_token": "plain-json-value-1234"}',
        "Authorization: Bearer opk_abcdefghijklmnop1234",
        "app token 1234567890|0123456789abcdef0123456789abcdef",
        f"appsecret_proof=deadbeef{'0' * 56}",
    ],
)
def test_scrub_removes_every_token_shape(text: str) -> None:
    out = scrub(text)
    assert REDACTED in out
    for secret in (
        USER_TOKEN,
        "abcdef123456",
        "short-lived-123",
        "anything-at-all",
        "plain-json-value-1234",
        "opk_abcdefghijklmnop1234",
        "0123456789abcdef0123456789abcdef",
        "deadbeef",
    ):
        assert secret not in out


def test_scrub_removes_named_secrets_and_keeps_ordinary_text() -> None:
    assert scrub(f"secret is {SECRET}!", [SECRET]) == f"secret is {REDACTED}!"
    assert (
        scrub("post_abc published to page 1234 at 09:00")
        == "post_abc published to page 1234 at 09:00"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /v26.0/debug_token?access_token=1234567%7C{SECRET}&x=1", "access_token=[redacted]&"),
        (f"GET /v26.0/debug_token?access_token=1234567|{SECRET}", "access_token=[redacted]"),
        (f'{{"access_token": "1234567|{SECRET}"}}', '"access_token": "[redacted]"}'),
        (f"Authorization: OAuth 1234567|{SECRET}", "OAuth [redacted]"),
    ],
)
def test_an_app_token_whose_secret_is_known_is_one_clean_redaction(
    text: str, expected: str
) -> None:
    # The secret goes by value first; the parameter's pattern must then swallow the
    # marker whole instead of ending at its "]" (which left "[redacted]]").
    out = scrub(text, [SECRET])
    assert expected in out
    assert out.count(REDACTED) == 1
    assert "]]" not in out
    assert "1234567" not in out


@pytest.fixture
def scrubbed_logging() -> Iterator[None]:
    original = logging.getLogRecordFactory()
    process_secrets = list(redact._process_secrets)
    install_log_scrubbing([SECRET])
    yield
    logging.setLogRecordFactory(original)
    redact._process_secrets[:] = process_secrets


def test_log_records_are_scrubbed_including_tracebacks(
    scrubbed_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("httpx")
    with caplog.at_level(logging.INFO, logger="httpx"):
        logger.info("HTTP Request: GET %s", f"https://g/v26.0/me?access_token={USER_TOKEN}")
        try:
            raise RuntimeError(f"failed with {USER_TOKEN} and {SECRET}")
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text
    assert USER_TOKEN not in text
    assert SECRET not in text
    assert "RuntimeError" in text  # the traceback itself is kept
    assert text.count(REDACTED) >= 3


def test_install_is_idempotent_and_accumulates_secrets(
    scrubbed_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    install_log_scrubbing(["another-secret-value"])
    factory = logging.getLogRecordFactory()
    install_log_scrubbing([])
    assert logging.getLogRecordFactory() is factory
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info("a %s b %s", SECRET, "another-secret-value")
    assert caplog.records[-1].getMessage() == f"a {REDACTED} b {REDACTED}"


def test_a_short_secret_does_not_redact_ordinary_words(
    scrubbed_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    # A test's fake app secret ("unused") once took that word out of every later
    # error text of the process. Only values of a secret's length go by value.
    install_log_scrubbing(["unused", "password"])
    text = "unused credential: wrong password"
    assert scrub(text) == text
    assert scrub(text, ["credential"]) == text
    assert scrub(f"{text} {SECRET}") == f"{text} {REDACTED}"
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info(text)
    assert caplog.records[-1].getMessage() == text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://offpost:s3cr%40t@db:5432/offpost",
            "postgresql+psycopg://offpost:***@db:5432/offpost",
        ),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("sqlite:///./offpost.db", "sqlite:///./offpost.db"),
    ],
)
def test_urls_are_printed_without_their_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown

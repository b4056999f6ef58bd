"""Keep secrets out of text: token-shaped strings, secret query parameters, known secrets.

:func:`scrub` is used wherever text may leave the process (error messages, log
records); besides the patterns, it redacts the secrets the process named at
start. :func:`install_log_scrubbing` is called once at every process start with
those secrets; it wraps the log-record factory, so every record from every
logger — ours, httpx's (which logs request URLs with their query strings),
uvicorn's, Celery's — is scrubbed before any handler sees it, tracebacks included.

This module imports nothing of offpost, so every layer may use it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"

# Facebook access tokens (user, Page, app-scoped) start with "EAA" and are long
# base62 strings; client-side tokens in the wild are 100-250 characters.
_FACEBOOK_TOKEN = re.compile(r"\bEAA[A-Za-z0-9]{20,}")
# offpost's own secrets carry recognisable prefixes: API keys and webhook secrets.
_OFFPOST_KEY = re.compile(r"\b(?:opk|whsec)_[A-Za-z0-9_-]{16,}")
# Values of query/form parameters that carry secrets, in URLs and bodies alike.
_SECRET_PARAMS = (
    "access_token",
    "input_token",
    "fb_exchange_token",
    "client_secret",
    "appsecret_proof",
    "app_secret",
)
# A known secret is redacted by value first, so a value may already hold the marker
# ("1234|[redacted]" for an app token): the marker counts as part of the value, or
# the value would end at its "]" and leave that bracket behind ("[redacted]]").
_MARKED = re.escape(REDACTED)
_SECRET_PARAM = re.compile(
    r"(?P<key>\b(?:" + "|".join(_SECRET_PARAMS) + r")(?:=|%3D|\"\s*:\s*\"|'\s*:\s*'))"
    r"(?P<value>(?:" + _MARKED + r"|[^&\s\"',;)}\]])+)"
)
# OAuth codes (``code=...``) are long; short values are Graph error codes ("code=32").
_CODE_PARAM = re.compile(r"(?P<key>\bcode(?:=|%3D|\"\s*:\s*\"))(?P<value>[A-Za-z0-9_-]{16,})")
# "Authorization: Bearer <key>" and "OAuth <token>" headers echoed in text.
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|oauth)\s+(?:" + _MARKED + r"|[A-Za-z0-9._|~+/=-]){8,}")
# App access tokens are "<app id>|<app secret>".
_APP_TOKEN = re.compile(r"\b\d{5,}(?:\||%7C)[A-Za-z0-9_-]{8,}", re.IGNORECASE)


#: The secrets of this process (the app secret), given at start to :func:`install_log_scrubbing`.
#: Not token-shaped, so no pattern finds them: :func:`scrub` redacts them by value.
_process_secrets: list[str] = []

#: A secret is redacted by value only from this length on: a shorter value could be
#: an ordinary word ("unused", "password") and would vanish from every later text of
#: the process. Real ones are far longer: app secrets have 32 characters, tokens 100+.
MIN_SECRET_LENGTH = 16


def hide_password(url: str) -> str:
    """``url`` with the password in it (if any) shown as ``***``, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with tokens, secret parameters, the given ``secrets`` and the
    process's own secrets (:func:`install_log_scrubbing`) redacted.

    A secret shorter than :data:`MIN_SECRET_LENGTH` is not looked for by value.
    """
    for secret in (*secrets, *_process_secrets):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    text = _SECRET_PARAM.sub(lambda m: m.group("key") + REDACTED, text)
    text = _CODE_PARAM.sub(lambda m: m.group("key") + REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _APP_TOKEN.sub(REDACTED, text)
    text = _FACEBOOK_TOKEN.sub(REDACTED, text)
    return _OFFPOST_KEY.sub(REDACTED, text)


class _ScrubbingFactory:
    """A log-record factory that scrubs each record as it is made."""

    def __init__(self, inner: Any, secrets: list[str]) -> None:
        self.inner = inner
        self.secrets = secrets
        self._formatter = logging.Formatter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not hide the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = scrub(message, self.secrets)
        record.args = None
        if record.exc_info:
            # Format the traceback now, scrubbed, and drop the live exception so no
            # handler can format it again from the unscrubbed original.
            record.exc_text = scrub(self._formatter.formatException(record.exc_info), self.secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.secrets)
        return record


_install_lock = threading.Lock()


def install_log_scrubbing(secrets: Iterable[str] = ()) -> None:
    """Scrub every log record of this process from now on (idempotent; secrets accumulate).

    The ``secrets`` are also redacted by every later :func:`scrub` in this process,
    so the error texts that leave it (API answers, ``last_error``) lose them too.
    """
    wanted = [s for s in secrets if s]
    with _install_lock:
        _process_secrets.extend(s for s in wanted if s not in _process_secrets)
        current = logging.getLogRecordFactory()
        if isinstance(current, _ScrubbingFactory):
            current.secrets.extend(s for s in wanted if s not in current.secrets)
            return
        logging.setLogRecordFactory(_ScrubbingFactory(current, wanted))

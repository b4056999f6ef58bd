"""Dashboard sign-in: a signed session cookie, its CSRF token and the same-origin check.

The admin key is typed once into the sign-in form (a POST body, never a URL)
and is not kept anywhere afterwards. The cookie holds a session token instead::

    v1.<client id>.<expires, unix s>.<nonce>.<signature>

``signature`` is HMAC-SHA256 over the other fields *and the client's stored key
hash*, keyed by a secret derived from offpost's own encryption key
(``OFFPOST_ENCRYPTION_KEYS``). So the token is verifiable without any server-side
session store, and it dies with its key: revoking the client, re-keying it or
demoting it ends every session signed for it. Tokens are signed with the newest
encryption key and accepted under any configured one, as Fernet does, so
rotating the keys signs nobody out. The app secret is not used: it belongs to
the Facebook app and may be rotated in Meta's console for reasons of its own.

Logging out deletes the cookie; a copy of the token stolen before stays valid
until it expires (:data:`SESSION_TTL`), the usual cost of a stateless session.

CSRF: every form that changes something carries :func:`csrf_token`, an HMAC of
the session's nonce, checked in constant time; the cookie is ``SameSite=Strict``
too, and a POST whose ``Origin`` (or else ``Referer``) names another origin is
refused before anything else (:func:`same_origin`) — the sign-in form included,
which has no session yet to tie a token to. "Our origin" is the scheme and host
the request arrived with, so a TLS-terminating proxy must pass
``X-Forwarded-Proto`` to a uvicorn that trusts it (``FORWARDED_ALLOW_IPS``); the
cookie is ``Secure`` whenever that scheme is https.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

#: Name and path of the session cookie; the path keeps it off the JSON API.
COOKIE_NAME = "offpost_admin"
COOKIE_PATH = "/admin"
#: How long a sign-in lasts.
SESSION_TTL = timedelta(hours=8)

_VERSION = "v1"
_CONTEXT = b"offpost dashboard session v1"
_TOKEN_RE = re.compile(
    r"^v1\.(cli_[A-Za-z0-9]{1,64})\.(\d{1,12})\.([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})$"
)


def derive_secrets(encryption_keys: Sequence[str]) -> list[bytes]:
    """One signing secret per Fernet key, newest first (the first one signs).

    A derivation, not the key itself: the session MAC and the token cipher
    never share key material.
    """
    if not encryption_keys:
        raise ValueError("the dashboard needs OFFPOST_ENCRYPTION_KEYS to sign its sessions")
    return [
        hmac.new(base64.urlsafe_b64decode(key.encode()), _CONTEXT, hashlib.sha256).digest()
        for key in encryption_keys
    ]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(secret: bytes, *parts: str) -> str:
    return _b64(hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A verified sign-in: whose, until when, and the nonce its CSRF token derives from."""

    client_id: str
    expires_at: int
    nonce: str


@dataclass(frozen=True, slots=True)
class SessionSigner:
    """Makes and checks session tokens and CSRF tokens with :func:`derive_secrets` output."""

    secrets: Sequence[bytes]

    def issue(self, client_id: str, key_hash: str, now: datetime) -> str:
        """A fresh session token for ``client_id`` whose key hashes to ``key_hash``."""
        expires = str(int((now + SESSION_TTL).timestamp()))
        nonce = secrets.token_urlsafe(18)
        signature = _mac(self.secrets[0], _VERSION, client_id, expires, nonce, key_hash)
        return f"{_VERSION}.{client_id}.{expires}.{nonce}.{signature}"

    @staticmethod
    def claimed_client(token: str) -> str | None:
        """The client id a well-formed token claims (unverified), to look its key hash up."""
        match = _TOKEN_RE.match(token)
        return match.group(1) if match else None

    def verify(self, token: str, key_hash: str, now: datetime) -> DashboardSession | None:
        """The session in ``token`` if its signature holds for ``key_hash`` and it is not over."""
        match = _TOKEN_RE.match(token)
        if match is None:
            return None
        client_id, expires, nonce, signature = match.groups()
        valid = False
        for secret in self.secrets:  # every key, so that timing says nothing about which
            expected = _mac(secret, _VERSION, client_id, expires, nonce, key_hash)
            valid |= hmac.compare_digest(expected, signature)
        if not valid or int(expires) <= now.timestamp():
            return None
        return DashboardSession(client_id=client_id, expires_at=int(expires), nonce=nonce)

    def csrf_token(self, session: DashboardSession) -> str:
        """The token every state-changing form of ``session`` must send back."""
        return _mac(self.secrets[0], "csrf", session.client_id, session.nonce)

    def csrf_matches(self, session: DashboardSession, sent: str | None) -> bool:
        """Whether ``sent`` is ``session``'s CSRF token (under any key, in constant time)."""
        if not sent:
            return False
        valid = False
        for secret in self.secrets:
            valid |= hmac.compare_digest(
                _mac(secret, "csrf", session.client_id, session.nonce), sent
            )
        return valid


def same_origin(origin: str | None, referer: str | None, own_origin: str) -> bool:
    """Whether a POST comes from our own pages, as far as the browser says.

    ``Origin`` decides when present (``null`` is foreign); otherwise the
    ``Referer``'s origin; with neither (some privacy settings strip both) the
    CSRF token alone decides.
    """
    if origin is not None:
        return origin.rstrip("/") == own_origin
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own_origin
    return True

"""Tokens found dead: the one place a Page token or the user token is declared so.

Publishing depends on Page tokens, not on the user token (docs/tokens.md): a Page
token derived from a long-lived user token has no expiry of its own and outlives
the user token. So there are two deaths, with different consequences:

- :func:`mark_pages_dead`: Graph rejects a Page token and it cannot be derived
  again (the user lost their role on the Page, or the user token that would
  derive it is dead too). That Page's token is wiped, its waiting posts are
  parked (nothing is lost), the credential becomes ``needs_reauth`` and the
  client's webhook hears ``credential.needs_reauth`` once per stored token and set
  of dead Pages. The credential's other Pages keep publishing.
- :func:`mark_user_token_dead`: Graph no longer accepts the user token. Nothing is
  parked: the Page tokens still work. The credential becomes
  ``user_token_expired`` and the webhook hears ``credential.user_token_expired``
  once per stored token.

The finder names the user token it held (the stored ciphertext, read raw), so a
token a client renewed in the meantime is never declared dead for the old one's
sake: a renewal re-derives every Page token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Text, select, type_coerce
from sqlalchemy.orm import Session

from offpost.models import Credential, CredentialStatus, PageTokenStatus
from offpost.models.transitions import park_page_posts, settle_credential
from offpost.models.types import cipher_of, decrypt
from offpost.models.webhook_event import EventType
from offpost.outbox import record_credential_event, token_dedupe_key

logger = logging.getLogger(__name__)

#: The statuses of a credential that still holds tokens.
ALIVE = (
    CredentialStatus.ACTIVE,
    CredentialStatus.EXPIRING,
    CredentialStatus.USER_TOKEN_EXPIRED,
    CredentialStatus.NEEDS_REAUTH,
)


def stored_ciphertext(session: Session, credential_id: str) -> str | None:
    """The credential's user token as stored (ciphertext, read raw: never decrypted)."""
    raw: str | None = session.scalar(
        select(type_coerce(Credential.user_token, Text)).where(Credential.id == credential_id)
    )
    return raw


def ciphertext_if_still(session: Session, credential_id: str, user_token: str) -> str | None:
    """The stored ciphertext if it still holds ``user_token``; None if another was stored."""
    raw = stored_ciphertext(session, credential_id)
    if raw is None:
        return None
    cipher = cipher_of(session.get_bind().dialect)
    return raw if decrypt(cipher, raw) == user_token else None


def locked_credential(
    session: Session, credential_id: str, expected_token: str | None
) -> Credential | None:
    """The credential, row-locked and fresh, if it still holds tokens and (with
    ``expected_token``, a raw ciphertext) still the same user token; else None."""
    credential = session.scalars(
        select(Credential)
        .where(Credential.id == credential_id, Credential.status.in_(ALIVE))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if credential is None:
        return None
    if expected_token is not None and stored_ciphertext(session, credential_id) != expected_token:
        return None
    return credential


def mark_pages_dead(
    session: Session,
    credential_id: str,
    page_ids: Iterable[str],
    now: datetime,
    *,
    expected_token: str | None = None,
) -> list[str]:
    """These Pages' tokens are dead and cannot be derived again (see the module).

    Returns the Pages newly found dead (none when another user token was stored
    since ``expected_token`` was read, or they were dead already). The caller commits.
    """
    credential = locked_credential(session, credential_id, expected_token)
    if credential is None:
        return []
    wanted = set(page_ids)
    newly = [
        page
        for page in credential.pages
        if page.page_id in wanted and page.token_status is PageTokenStatus.VALID
    ]
    if not newly:
        return []
    for page in newly:
        page.token_status = PageTokenStatus.DEAD
        page.page_token = None
        page.checked_at = now
    dead = [page.page_id for page in newly]
    parked = park_page_posts(session, credential_id, dead, now)
    credential.last_checked_at = now
    settle_credential(credential, now)
    session.flush()
    every_dead = sorted(
        page.page_id for page in credential.pages if page.token_status is PageTokenStatus.DEAD
    )
    record_credential_event(
        session,
        credential_id,
        EventType.CREDENTIAL_NEEDS_REAUTH,
        now,
        dedupe_key=token_dedupe_key(
            session, EventType.CREDENTIAL_NEEDS_REAUTH, credential_id, *every_dead
        ),
    )
    logger.warning(
        "credential %s: the token of Page(s) %s is dead (%d waiting posts parked)",
        credential_id,
        ", ".join(dead),
        parked,
        extra={"action": "page_token_dead", "credential_id": credential_id},
    )
    return dead


def mark_user_token_dead(
    session: Session, credential_id: str, now: datetime, *, expected_token: str | None = None
) -> bool:
    """Graph no longer accepts the user token (see the module); whether that is news.

    Nothing is parked: posts go on with the Page tokens. The caller commits.
    """
    credential = locked_credential(session, credential_id, expected_token)
    if credential is None or credential.user_token_dead_at is not None:
        return False
    credential.user_token_dead_at = now
    credential.last_checked_at = now
    status = settle_credential(credential, now)
    session.flush()
    record_credential_event(
        session,
        credential_id,
        EventType.CREDENTIAL_USER_TOKEN_EXPIRED,
        now,
        dedupe_key=token_dedupe_key(
            session, EventType.CREDENTIAL_USER_TOKEN_EXPIRED, credential_id
        ),
    )
    logger.warning(
        "credential %s: Graph no longer accepts the user token; posts continue on the "
        "Page tokens (%s)",
        credential_id,
        status.value,
        extra={"action": "user_token_dead", "credential_id": credential_id},
    )
    return True

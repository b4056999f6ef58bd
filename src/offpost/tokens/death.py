"""A credential found dead: the one place it becomes ``needs_reauth``.

Whoever finds that Graph rejects a credential's user token for good — a
worker's publish, the daily expiry sweep, a client's own request — calls
:func:`mark_credential_dead` in its transaction: the credential waits for a
fresh token, its pending posts are parked (nothing is lost), and the client's
webhook hears ``credential.needs_reauth`` once per stored token.

The finder names the token it found dead (the stored ciphertext it read, raw),
so a token a client renewed in the meantime is never marked dead for the old
one's sake.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Text, and_, select, type_coerce, update
from sqlalchemy.orm import Session

from offpost.models import Credential, CredentialStatus
from offpost.models.transitions import park_credential_posts
from offpost.models.types import cipher_of, decrypt
from offpost.outbox import record_credential_needs_reauth

logger = logging.getLogger(__name__)

#: The statuses a credential can be found dead in.
ALIVE = (CredentialStatus.ACTIVE, CredentialStatus.EXPIRING)


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


def mark_credential_dead(
    session: Session, credential_id: str, now: datetime, *, expected_token: str | None = None
) -> bool:
    """Credential → ``needs_reauth``, its pending posts parked, ``credential.needs_reauth``.

    With ``expected_token`` (the raw stored ciphertext that was found dead) nothing
    happens if another token was stored since. Returns whether it changed anything.
    The caller commits.
    """
    guard = [Credential.id == credential_id, Credential.status.in_(ALIVE)]
    if expected_token is not None:
        guard.append(type_coerce(Credential.user_token, Text) == expected_token)
    result = session.execute(
        update(Credential)
        .where(and_(*guard))
        .values(status=CredentialStatus.NEEDS_REAUTH, last_checked_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    parked = park_credential_posts(session, credential_id, now)
    record_credential_needs_reauth(session, credential_id, now)
    logger.warning(
        "credential %s needs a fresh token (%d pending posts parked)",
        credential_id,
        parked,
        extra={"action": "credential_needs_reauth", "credential_id": credential_id},
    )
    return True

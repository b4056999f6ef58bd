"""The expiry sweep: docs/design.md steps 3-5.

A long-lived user token lives about 60 days and cannot be extended from the
server (docs/graph.md: re-exchanging it returns the same token). What offpost can
do is notice in time. Once a day (:mod:`offpost.scheduler.housekeeping` guards
that) the sweep looks at every ``active`` or ``expiring`` credential whose token
expires within the refresh margin, or before the ``publish_at`` of one of its
pending posts, and for each:

1. ``debug_token``. Invalid → the credential is dead: ``needs_reauth``, its
   pending posts parked as ``needs_reauth``, event ``credential.needs_reauth``.
2. Valid → try a re-exchange; keep its token only if it expires later than the
   stored one (a failed or useless refresh never overwrites a good token).
3. Re-derive the Page tokens from ``/me/accounts``.
4. Still at risk → ``expiring`` and event ``credential.expiring``, once per
   credential and expiry date (not once a day); no longer at risk → ``active``.

Graph being unreachable for one credential skips that credential until the
next sweep. Writes are guarded: the credential row is locked and its stored
token compared with the one checked, so a fresh token a client submitted
meanwhile is never overwritten or declared dead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Text, func, or_, select, type_coerce
from sqlalchemy.orm import Session, sessionmaker

from offpost.graph.client import GraphClient
from offpost.graph.errors import GraphAuthError, GraphError
from offpost.graph.types import PageAccount
from offpost.models import Credential, CredentialPage, CredentialStatus, Post
from offpost.models.post import WAITING_STATUSES
from offpost.models.webhook_event import EventType
from offpost.outbox import (
    expiring_dedupe_key,
    record_credential_event,
)
from offpost.tokens.death import ALIVE, mark_credential_dead

logger = logging.getLogger(__name__)

#: Statuses the sweep looks at.
SWEPT = ALIVE
#: Posts that still wait for their credential.
PENDING = WAITING_STATUSES


@dataclass
class SweepResult:
    """What one sweep did, by credential id."""

    checked: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    expiring: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _raw_token(session: Session, credential_id: str) -> str | None:
    """The ciphertext as stored (not decrypted): equal only if nobody stored a token since."""
    value: str | None = session.scalar(
        select(type_coerce(Credential.user_token, Text)).where(Credential.id == credential_id)
    )
    return value


def _latest_pending_publish_at(session: Session, credential_id: str) -> datetime | None:
    value: datetime | None = session.scalar(
        select(func.max(Post.publish_at)).where(
            Post.credential_id == credential_id, Post.status.in_(PENDING)
        )
    )
    return value


def at_risk(
    expires_at: datetime | None,
    now: datetime,
    margin: timedelta,
    latest_publish_at: datetime | None,
) -> bool:
    """Whether a token expiring at ``expires_at`` (None: never) needs the client's attention."""
    if expires_at is None:
        return False
    if expires_at <= now + margin:
        return True
    return latest_publish_at is not None and expires_at < latest_publish_at


def credentials_to_check(session: Session, now: datetime, margin: timedelta) -> list[str]:
    """Ids of the credentials the sweep checks (see the module docstring)."""
    later_post = (
        select(Post.id)
        .where(
            Post.credential_id == Credential.id,
            Post.status.in_(PENDING),
            Post.publish_at > Credential.expires_at,
        )
        .exists()
    )
    return list(
        session.scalars(
            select(Credential.id)
            .where(
                Credential.status.in_(SWEPT),
                Credential.expires_at.is_not(None),
                or_(Credential.expires_at <= now + margin, later_post),
            )
            .order_by(Credential.expires_at)
        )
    )


@dataclass(frozen=True)
class ExpirySweep:
    """The sweep, with what it needs as plain values."""

    sessions: sessionmaker[Session]
    graph: GraphClient
    margin: timedelta

    def run(self, now: datetime) -> SweepResult:
        """Check every credential at risk at ``now``; one at a time."""
        result = SweepResult()
        with self.sessions() as session:
            ids = credentials_to_check(session, now, self.margin)
        for credential_id in ids:
            outcome = self.check(credential_id, now)
            result.checked.append(credential_id)
            getattr(result, outcome).append(credential_id)
        logger.info(
            "expiry sweep: %d checked, %d refreshed, %d expiring, %d dead, %d skipped",
            len(result.checked),
            len(result.refreshed),
            len(result.expiring),
            len(result.dead),
            len(result.skipped),
            extra={"action": "expiry_sweep"},
        )
        return result

    def check(self, credential_id: str, now: datetime) -> str:
        """One credential; returns ``refreshed``, ``expiring``, ``dead`` or ``skipped``."""
        with self.sessions() as session:
            credential = session.get(Credential, credential_id)
            if credential is None or credential.status not in SWEPT:
                return "skipped"
            token = credential.user_token
            raw = _raw_token(session, credential_id)
        if token is None or not isinstance(raw, str):
            return "skipped"
        try:
            info = self.graph.debug_token(token)
            if not info.is_valid:
                return self._dead(credential_id, raw, now)
            # Graph's word on the stored token's expiry (None: it never expires).
            expires_at = info.expires_at
            token, expires_at = self._try_refresh(credential_id, token, expires_at, now)
            pages = self.graph.accounts(token).pages
        except GraphAuthError:
            return self._dead(credential_id, raw, now)
        except GraphError as exc:
            logger.warning(
                "expiry sweep: Graph could not check credential %s (%s); next sweep retries",
                credential_id,
                exc.message,
                extra={"action": "expiry_check_failed", "credential_id": credential_id},
            )
            return "skipped"
        return self._store(credential_id, raw, token, expires_at, pages, now)

    def _try_refresh(
        self, credential_id: str, token: str, expires_at: datetime | None, now: datetime
    ) -> tuple[str, datetime | None]:
        """A re-exchange that extends the expiry, or the token we have (docs/graph.md)."""
        if expires_at is None:
            return token, None
        try:
            exchanged = self.graph.exchange_token(token)
            if exchanged.expires_in is not None:
                new_expiry: datetime | None = now + timedelta(seconds=exchanged.expires_in)
            else:
                checked = self.graph.debug_token(exchanged.access_token)
                if not checked.is_valid:
                    return token, expires_at
                new_expiry = checked.expires_at
        except GraphError as exc:
            # A failed refresh is no news: keep the good token.
            logger.info(
                "re-exchange of credential %s failed (%s); keeping its token",
                credential_id,
                exc.message,
                extra={"action": "token_refresh_failed", "credential_id": credential_id},
            )
            return token, expires_at
        # Only a real gain counts: the same token re-exchanged comes back with the
        # same expiry give or take clock noise.
        if new_expiry is None or new_expiry > expires_at + timedelta(hours=1):
            return exchanged.access_token, new_expiry
        return token, expires_at

    def _dead(self, credential_id: str, raw: str, now: datetime) -> str:
        with self.sessions.begin() as session:
            changed = mark_credential_dead(session, credential_id, now, expected_token=raw)
        return "dead" if changed else "skipped"

    def _store(
        self,
        credential_id: str,
        raw: str,
        token: str,
        expires_at: datetime | None,
        pages: tuple[PageAccount, ...],
        now: datetime,
    ) -> str:
        with self.sessions.begin() as session:
            credential = session.scalars(
                select(Credential)
                .where(Credential.id == credential_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).one_or_none()
            # Locked now; a token stored meanwhile (a renewal) wins over ours.
            if (
                credential is None
                or credential.status not in SWEPT
                or _raw_token(session, credential_id) != raw
            ):
                return "skipped"
            refreshed = token != credential.user_token
            if refreshed:
                credential.user_token = token
            credential.expires_at = expires_at
            credential.last_checked_at = now
            _update_page_tokens(credential, pages)
            risky = at_risk(
                expires_at, now, self.margin, _latest_pending_publish_at(session, credential_id)
            )
            credential.status = CredentialStatus.EXPIRING if risky else CredentialStatus.ACTIVE
            session.flush()
            if risky:
                record_credential_event(
                    session,
                    credential_id,
                    EventType.CREDENTIAL_EXPIRING,
                    now,
                    dedupe_key=expiring_dedupe_key(credential_id, expires_at),
                )
        if risky:
            logger.warning(
                "credential %s expires at %s and cannot be refreshed from the server",
                credential_id,
                expires_at,
                extra={"action": "credential_expiring", "credential_id": credential_id},
            )
            return "expiring"
        return "refreshed"


def _update_page_tokens(credential: Credential, pages: tuple[PageAccount, ...]) -> None:
    """Fresh Page tokens for the Pages Graph listed; new Pages added, others left alone."""
    known = {page.page_id: page for page in credential.pages}
    for account in pages:
        if account.access_token is None:
            continue
        page = known.get(account.id)
        if page is None:
            credential.pages.append(
                CredentialPage(
                    page_id=account.id,
                    name=account.name or account.id,
                    page_token=account.access_token,
                )
            )
        else:
            page.page_token = account.access_token

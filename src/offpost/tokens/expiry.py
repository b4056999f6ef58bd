"""The token health sweep: every credential's tokens, checked once a day (docs/tokens.md).

Publishing depends on Page tokens. A Page token derived from a long-lived user token
has no expiry date of its own and keeps working after the user token ends (docs/
graph.md), so the sweep never parks a post because the *user* token ends. For each
credential that still holds tokens (:mod:`offpost.scheduler.housekeeping` runs it
once a day) it asks Graph:

1. ``debug_token`` on the user token.
2. Valid → near its end, try a re-exchange (kept only if it ends later); then
   ``/me/accounts``: each listed Page gets its fresh token and the user's tasks on
   it (a Page dead before and listed again lives again: its parked posts resume).
   A stored Page no longer listed has its own token checked with ``debug_token``.
3. Not valid → the user token is dead (:func:`~offpost.tokens.death.mark_user_token_dead`:
   nothing parked); each live Page token is checked with ``debug_token``.
4. A Page token Graph rejects and that cannot be derived again →
   :func:`~offpost.tokens.death.mark_pages_dead` (that Page's posts park).
5. The status is settled; ``credential.expiring`` warns at each of the configured
   days before the user token's end (14, 3 and 1 by default), each once.

Graph being unreachable for one credential skips it until the next sweep. Writes
are guarded: the credential row is locked and its stored token compared with the
one checked, so a fresh token a client submitted meanwhile is never overwritten
or declared dead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from offpost.graph.client import GraphClient
from offpost.graph.errors import GraphAuthError, GraphError
from offpost.graph.types import PageAccount
from offpost.models import Credential, CredentialPage, CredentialStatus, PageTokenStatus
from offpost.models.transitions import resume_parked_posts, settle_credential
from offpost.models.webhook_event import EventType
from offpost.outbox import expiring_dedupe_key, record_credential_event
from offpost.settings import Settings
from offpost.tokens.death import (
    ALIVE,
    locked_credential,
    mark_pages_dead,
    mark_user_token_dead,
    stored_ciphertext,
)

logger = logging.getLogger(__name__)

#: Statuses the sweep looks at: every credential that still holds tokens.
SWEPT = ALIVE
#: When to warn before the user token ends, in days (the setting's default).
DEFAULT_WARNING_DAYS = (14, 3, 1)


@dataclass
class SweepResult:
    """What one sweep did, by credential id (a credential in one list besides ``checked``)."""

    checked: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    expiring: list[str] = field(default_factory=list)
    user_token_expired: list[str] = field(default_factory=list)
    needs_reauth: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Findings:
    """What Graph said about one credential's tokens, gathered before any write."""

    user_valid: bool
    token: str
    expires_at: datetime | None
    #: Pages listed by ``/me/accounts`` (only when the user token is valid).
    listed: dict[str, PageAccount]
    #: Stored Pages whose own token Graph rejected (and that were not listed again).
    dead: frozenset[str]


def credentials_to_check(session: Session) -> list[str]:
    """Ids of the credentials the sweep checks: every one that still holds tokens."""
    return list(
        session.scalars(
            select(Credential.id)
            .where(Credential.status.in_(SWEPT), Credential.user_token.is_not(None))
            .order_by(Credential.expires_at, Credential.id)
        )
    )


def due_warning(
    expires_at: datetime | None, now: datetime, warning_days: tuple[int, ...]
) -> int | None:
    """The warning due now: the smallest number of days before ``expires_at`` that
    ``now`` has reached, or None. A warning the sweep missed is not sent late: only
    the most urgent one reached counts."""
    if expires_at is None or expires_at <= now:
        return None
    reached = [days for days in warning_days if expires_at - now <= timedelta(days=days)]
    return min(reached) if reached else None


@dataclass(frozen=True)
class ExpirySweep:
    """The sweep, with what it needs as plain values."""

    sessions: sessionmaker[Session]
    graph: GraphClient
    #: How near its end a user token is re-exchanged (Graph rarely extends it).
    margin: timedelta
    warning_days: tuple[int, ...] = DEFAULT_WARNING_DAYS

    @classmethod
    def from_settings(
        cls, sessions: sessionmaker[Session], graph: GraphClient, settings: Settings
    ) -> ExpirySweep:
        return cls(
            sessions,
            graph,
            timedelta(hours=settings.refresh_margin_hours),
            warning_days=settings.warning_days(),
        )

    @property
    def warn_within(self) -> timedelta:
        return timedelta(days=max(self.warning_days, default=0))

    def run(self, now: datetime) -> SweepResult:
        """Check every credential that holds tokens; one at a time."""
        result = SweepResult()
        with self.sessions() as session:
            ids = credentials_to_check(session)
        for credential_id in ids:
            outcome = self.check(credential_id, now)
            result.checked.append(credential_id)
            getattr(result, outcome).append(credential_id)
        logger.info(
            "token sweep: %d checked, %d active, %d expiring, %d user token expired, "
            "%d need a fresh token, %d skipped",
            len(result.checked),
            len(result.active),
            len(result.expiring),
            len(result.user_token_expired),
            len(result.needs_reauth),
            len(result.skipped),
            extra={"action": "expiry_sweep"},
        )
        return result

    def check(self, credential_id: str, now: datetime) -> str:
        """One credential; returns its status after the check, or ``skipped``."""
        with self.sessions() as session:
            credential = session.get(Credential, credential_id)
            if credential is None or credential.status not in SWEPT:
                return "skipped"
            token = credential.user_token
            raw = stored_ciphertext(session, credential_id)
            expires_at = credential.expires_at
            page_tokens = {
                page.page_id: page.page_token
                for page in credential.pages
                if page.token_status is PageTokenStatus.VALID and page.page_token
            }
        if token is None or raw is None:
            return "skipped"
        try:
            findings = self._ask(credential_id, token, expires_at, page_tokens, now)
        except GraphError as exc:
            logger.warning(
                "token sweep: Graph could not check credential %s (%s); next sweep retries",
                credential_id,
                exc.message,
                extra={"action": "expiry_check_failed", "credential_id": credential_id},
            )
            return "skipped"
        return self._store(credential_id, raw, findings, now)

    def _ask(
        self,
        credential_id: str,
        token: str,
        expires_at: datetime | None,
        page_tokens: dict[str, str],
        now: datetime,
    ) -> Findings:
        """Graph's word on the user token and each Page token (no writes)."""
        info = self.graph.debug_token(token)
        listed: dict[str, PageAccount] = {}
        user_valid = info.is_valid
        if user_valid:
            # Graph's word on the stored token's expiry (None: it never expires).
            expires_at = info.expires_at
            if expires_at is not None and expires_at <= now + self.margin:
                token, expires_at = self._try_refresh(credential_id, token, expires_at, now)
            try:
                accounts = self.graph.accounts(token).pages
            except GraphAuthError:
                user_valid = False
            else:
                listed = {account.id: account for account in accounts if account.access_token}
        unlisted = {pid: value for pid, value in page_tokens.items() if pid not in listed}
        dead = frozenset(
            page_id
            for page_id, page_token in unlisted.items()
            if not self.graph.debug_token(page_token).is_valid
        )
        return Findings(user_valid, token, expires_at, listed, dead)

    def _try_refresh(
        self, credential_id: str, token: str, expires_at: datetime, now: datetime
    ) -> tuple[str, datetime | None]:
        """A re-exchange that extends the expiry, or the token we have (docs/graph.md)."""
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

    def _store(self, credential_id: str, raw: str, found: Findings, now: datetime) -> str:
        with self.sessions.begin() as session:
            # Locked now; a token stored meanwhile (a renewal) wins over ours.
            credential = locked_credential(session, credential_id, raw)
            if credential is None:
                return "skipped"
            credential.last_checked_at = now
            for page in credential.pages:
                page.checked_at = now
            if found.user_valid:
                if found.token != credential.user_token:
                    credential.user_token = found.token
                credential.expires_at = found.expires_at
                credential.user_token_dead_at = None
                revived = update_pages(credential, found.listed.values())
                session.flush()
                resume_parked_posts(session, credential_id, revived, now)
            if not found.user_valid:
                mark_user_token_dead(session, credential_id, now)
            if found.dead:
                mark_pages_dead(session, credential_id, found.dead, now)
            status = settle_credential(credential, now, self.warn_within)
            session.flush()
            days = due_warning(credential.expires_at, now, self.warning_days)
            if found.user_valid and days is not None:
                record_credential_event(
                    session,
                    credential_id,
                    EventType.CREDENTIAL_EXPIRING,
                    now,
                    dedupe_key=expiring_dedupe_key(credential_id, credential.expires_at, days),
                )
                logger.warning(
                    "credential %s: the user token ends at %s (within %d days)",
                    credential_id,
                    credential.expires_at,
                    days,
                    extra={"action": "credential_expiring", "credential_id": credential_id},
                )
        return status.value if status is not CredentialStatus.DELETED else "skipped"


def update_pages(credential: Credential, accounts: Iterable[PageAccount]) -> list[str]:
    """Fresh Page tokens and tasks for the Pages Graph listed; new Pages added, others
    left alone. Returns the Pages that were dead and live again."""
    known = {page.page_id: page for page in credential.pages}
    revived: list[str] = []
    for account in accounts:
        if account.access_token is None:
            continue
        page = known.get(account.id)
        if page is None:
            page = CredentialPage(page_id=account.id, name=account.name or account.id)
            credential.pages.append(page)
        elif page.token_status is PageTokenStatus.DEAD:
            revived.append(account.id)
        page.name = account.name or page.name
        page.page_token = account.access_token
        page.token_status = PageTokenStatus.VALID
        page.tasks = list(account.tasks)
    return revived

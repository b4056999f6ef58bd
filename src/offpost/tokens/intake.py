"""The token store's intake: a short-lived user token in, long-lived tokens kept.

docs/design.md, step 1. :func:`take_in_token` asks Graph
(``debug_token`` → ``fb_exchange_token`` → ``/me/accounts``) *before* touching the
database, so a token Graph rejects, or a Graph that cannot be reached, stores
nothing. A second token for the same Facebook user renews the same credential
and puts its ``needs_reauth`` posts back to ``scheduled``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from offpost.errors import OffpostError
from offpost.graph.client import GraphClient
from offpost.graph.errors import (
    GraphAuthError,
    GraphError,
    GraphPermissionError,
    GraphRateLimitedError,
    GraphRejectedError,
)
from offpost.graph.types import PageAccount, TokenInfo
from offpost.models import (
    Credential,
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
    Post,
    PostStatus,
    transitions,
)
from offpost.models.post import (
    OUTCOME_UNKNOWN_AT_DELETION,
    WAITING_STATUSES,
    error_document,
)
from offpost.models.transitions import park_page_posts, resume_parked_posts, settle_credential
from offpost.tokens.expiry import DEFAULT_WARNING_DAYS, update_pages

logger = logging.getLogger(__name__)

#: How long before the user token's end a credential counts as ``expiring`` when the
#: caller names no setting: the largest default warning.
WARN_WITHIN = timedelta(days=max(DEFAULT_WARNING_DAYS))
#: How long to tell a client to wait when Graph could not be reached.
GRAPH_RETRY_AFTER_S = 30


#: What offpost needs the user to have granted (docs/tokens.md): listing the Pages and
#: their tokens, publishing, and reading the Page, which reconciliation needs to tell
#: whether a post whose reply was lost is on the Page (without it exactly-once fails).
REQUIRED_SCOPES = ("pages_show_list", "pages_manage_posts", "pages_read_engagement")


class TokenRejectedError(OffpostError):
    """Graph (or offpost's own checks) says this token cannot be used. Nothing was stored."""


class MissingPermissionsError(TokenRejectedError):
    """The user did not grant a permission offpost needs. Nothing was stored."""

    def __init__(self, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(
            f"the user did not grant {', '.join(missing)}: offpost needs "
            f"{', '.join(REQUIRED_SCOPES)}; ask for them in Facebook Login and submit the new token"
        )


class GraphUnavailableError(OffpostError):
    """Graph could not be asked (down, timing out, rate-limiting us). Nothing was stored."""

    def __init__(self, message: str, retry_after_s: int = GRAPH_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What Graph said about a submitted token, ready to be stored."""

    fb_user_id: str
    long_lived_token: str
    expires_at: datetime | None
    data_access_expires_at: datetime | None
    scopes: tuple[str, ...]
    pages: tuple[PageAccount, ...]


def check_token_info(info: TokenInfo, app_id: str) -> str:
    """The Facebook user id of a usable user token, or :class:`TokenRejectedError` saying why."""
    if not info.is_valid:
        why = info.error.message if info.error else "Graph says the token is not valid"
        raise TokenRejectedError(f"the access token is not valid: {why}")
    if info.app_id != app_id:
        raise TokenRejectedError("the access token was issued for another Facebook app")
    if (info.type or "").upper() != "USER":
        kind = (info.type or "unknown").lower()
        raise TokenRejectedError(f"a user access token is required, this is a {kind} token")
    if not info.user_id:
        raise TokenRejectedError("debug_token names no user for this token")
    missing = tuple(scope for scope in REQUIRED_SCOPES if scope not in info.scopes)
    if missing:
        raise MissingPermissionsError(missing)
    return info.user_id


def verify_with_graph(
    graph: GraphClient, app_id: str, short_token: str, now: datetime
) -> VerifiedToken:
    """Check, exchange and expand a short-lived user token; raises the two errors above."""
    try:
        info = graph.debug_token(short_token)
        fb_user_id = check_token_info(info, app_id)
        exchanged = graph.exchange_token(short_token)
        if exchanged.expires_in is not None:
            expires_at: datetime | None = now + timedelta(seconds=exchanged.expires_in)
            data_access = info.data_access_expires_at
        else:
            # docs/graph.md: no expires_in. Ask debug_token about the long-lived token
            # itself; its expires_at of 0 (None here) means it does not expire.
            long_info = graph.debug_token(exchanged.access_token)
            expires_at = long_info.expires_at
            data_access = long_info.data_access_expires_at or info.data_access_expires_at
        accounts = graph.accounts(exchanged.access_token)
    except (GraphAuthError, GraphRejectedError, GraphPermissionError) as exc:
        raise TokenRejectedError(f"Graph rejected the access token: {exc.message}") from exc
    except GraphRateLimitedError as exc:
        raise GraphUnavailableError(
            "Graph is rate-limiting this app; try again later", retry_after_s=exc.retry_after_s
        ) from exc
    except GraphError as exc:
        raise GraphUnavailableError(f"the Graph API could not be reached: {exc.message}") from exc
    return VerifiedToken(
        fb_user_id=fb_user_id,
        long_lived_token=exchanged.access_token,
        expires_at=expires_at,
        data_access_expires_at=data_access,
        scopes=info.scopes,
        pages=accounts.pages,
    )


def store_verified_token(
    session: Session,
    client_id: str,
    verified: VerifiedToken,
    now: datetime,
    warn_within: timedelta = WARN_WITHIN,
) -> tuple[Credential, bool]:
    """Create or renew the client's credential for this user; returns ``(credential, created)``.

    Commits. Renewing resumes the ``needs_reauth`` posts of every Page that can be
    posted on again.
    """
    for _ in range(2):
        credential = session.scalars(
            select(Credential).where(
                Credential.client_id == client_id, Credential.fb_user_id == verified.fb_user_id
            )
        ).one_or_none()
        created = credential is None
        if credential is None:
            credential = Credential(client_id=client_id, fb_user_id=verified.fb_user_id)
            session.add(credential)
        gone = _apply(session, credential, verified, now, warn_within)
        try:
            session.flush()
        except IntegrityError:
            # Another request stored the same user in the meantime: renew that row.
            session.rollback()
            continue
        postable = [page.page_id for page in credential.pages if page.postable]
        resumed = 0 if created else resume_parked_posts(session, credential.id, postable, now)
        if gone:
            park_page_posts(session, credential.id, gone, now)
        session.commit()
        logger.info(
            "credential %s for client %s: %d pages, %d posts resumed",
            "created" if created else "renewed",
            client_id,
            len(verified.pages),
            resumed,
            extra={"action": "credential_stored", "credential_id": credential.id},
        )
        return credential, created
    raise OffpostError("the credential changed concurrently twice; try again")


def _apply(
    session: Session,
    credential: Credential,
    verified: VerifiedToken,
    now: datetime,
    warn_within: timedelta,
) -> list[str]:
    """Store what Graph said; returns the Pages the user no longer manages that posts
    still wait for (their tokens are dead now)."""
    credential.user_token = verified.long_lived_token
    credential.expires_at = verified.expires_at
    credential.data_access_expires_at = verified.data_access_expires_at
    credential.scopes = list(verified.scopes)
    credential.user_token_dead_at = None
    credential.last_checked_at = now
    listed = {account.id for account in verified.pages}
    update_pages(credential, verified.pages)
    waited_on = _pages_with_waiting_posts(session, credential) if credential.id else set()
    kept: list[CredentialPage] = []
    gone: list[str] = []
    for page in credential.pages:
        page.checked_at = now
        if page.page_id in listed:
            kept.append(page)
        elif page.page_id in waited_on:
            # The user no longer manages it, but posts wait for it: they wait visibly
            # (needs_reauth) until the client cancels them or the role comes back.
            page.token_status = PageTokenStatus.DEAD
            page.page_token = None
            kept.append(page)
            gone.append(page.page_id)
    # Other Pages the user no longer manages go (with their tokens).
    credential.pages = kept
    # A fresh token revives a deleted credential of the same user too; settled below.
    credential.status = CredentialStatus.ACTIVE
    settle_credential(credential, now, warn_within)
    return gone


def _pages_with_waiting_posts(session: Session, credential: Credential) -> set[str]:
    return set(
        session.scalars(
            select(Post.target)
            .where(
                Post.credential_id == credential.id,
                Post.status.in_([*WAITING_STATUSES, PostStatus.NEEDS_REAUTH]),
            )
            .distinct()
        )
    )


def take_in_token(
    session: Session,
    graph: GraphClient,
    *,
    app_id: str,
    client_id: str,
    short_token: str,
    now: datetime,
    warn_within: timedelta = WARN_WITHIN,
) -> tuple[Credential, bool]:
    """The whole intake: verify with Graph, then store. ``(credential, created)``."""
    verified = verify_with_graph(graph, app_id, short_token, now)
    return store_verified_token(session, client_id, verified, now, warn_within)


def forget_credential(session: Session, credential: Credential, now: datetime) -> int:
    """Wipe the credential's tokens and cancel its unpublished posts; returns how many. Commits.

    A post whose last attempt may have published it cannot be said to be
    canceled, and without a token nobody can read the Page to find out: it
    becomes ``failed`` with the code ``outcome_unknown`` instead (not counted).
    """
    credential.forget_tokens()
    canceled = transitions.end_credential_posts(
        session,
        credential.id,
        now,
        error_document("outcome_unknown", OUTCOME_UNKNOWN_AT_DELETION),
    )
    session.commit()
    return canceled

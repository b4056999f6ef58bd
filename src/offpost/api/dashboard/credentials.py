"""The dashboard's credentials page: every client's credentials, their health, what waits on them.

A page of credentials takes three queries, whatever its size:

1. the credentials themselves with their client's name, newest first by
   ``(created_at, id)`` (the posts list's cursor, over credential ids);
2. the Pages of those credentials;
3. the posts that depend on them: one ``GROUP BY credential_id, target,
   status`` over the statuses of :data:`DEPENDENT_STATUSES`, served by
   ``ix_posts_credential_status``.

Every query names its columns. Loading a :class:`~offpost.models.Credential`
or a :class:`~offpost.models.CredentialPage` as an object would decrypt its
token (and a credential pulls in its Pages' tokens too): this page has no use
for a token, so it never reads one, and it needs no encryption key to render.
The same holds for :func:`page_names`, which the posts list and the schedules
pages use to name the Page each post goes to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offpost.models import (
    Client,
    Credential,
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
    Post,
    PostStatus,
)
from offpost.models.post import PENDING_POST_STATUSES
from offpost.posts.rules import Cursor, older_than, split_page
from offpost.views import ADVICE, PageOut

#: Posts in these states still need their credential's Page token to be published,
#: in the order the page lists them.
DEPENDENT_STATUSES = PENDING_POST_STATUSES


@dataclass(frozen=True, slots=True)
class PageHealth:
    """One Page of a credential: its public health (:class:`PageOut`), and what waits on it."""

    health: PageOut
    #: Dependent posts aimed at this Page, by status (statuses with none left out).
    waiting: dict[str, int]

    @property
    def waiting_total(self) -> int:
        return sum(self.waiting.values())


@dataclass(frozen=True, slots=True)
class CredentialHealth:
    """One row of the page: a credential's facts and health, never a token."""

    id: str
    client_id: str
    client_name: str
    fb_user_id: str
    status: str
    advice: str
    expires_at: datetime | None
    user_token_expired_at: datetime | None
    data_access_expires_at: datetime | None
    last_checked_at: datetime | None
    created_at: datetime
    pages: list[PageHealth] = field(default_factory=list)
    #: Dependent posts of this credential by status, whichever Page they aim at.
    waiting: dict[str, int] = field(default_factory=dict)

    @property
    def waiting_total(self) -> int:
        return sum(self.waiting.values())

    @property
    def dead_pages(self) -> int:
        return sum(1 for p in self.pages if p.health.token == PageTokenStatus.DEAD)

    @property
    def waiting_elsewhere(self) -> int:
        """Dependent posts aimed at a Page the credential no longer lists."""
        return self.waiting_total - sum(p.waiting_total for p in self.pages)


def list_credentials(
    session: Session,
    *,
    limit: int,
    status: CredentialStatus | None = None,
    client_id: str | None = None,
    after: Cursor | None = None,
) -> tuple[list[CredentialHealth], Cursor | None]:
    """A page of credentials with their Pages and dependent posts, and the next page's cursor."""
    query = (
        select(
            Credential.id,
            Credential.client_id,
            Client.name,
            Credential.fb_user_id,
            Credential.status,
            Credential.expires_at,
            Credential.user_token_dead_at,
            Credential.data_access_expires_at,
            Credential.last_checked_at,
            Credential.created_at,
        )
        .join(Client, Client.id == Credential.client_id)
        .order_by(Credential.created_at.desc(), Credential.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(Credential.status == status)
    if client_id is not None:
        query = query.where(Credential.client_id == client_id)
    if after is not None:
        query = query.where(older_than(Credential.created_at, Credential.id, after))
    rows, next_page = split_page(
        session.execute(query).all(), limit, lambda r: (r.created_at, r.id)
    )
    if not rows:
        return [], None
    ids = [row.id for row in rows]
    waiting, waiting_by_page = _dependent_posts(session, ids)
    pages = _pages(session, ids, waiting_by_page)
    return [
        CredentialHealth(
            id=row.id,
            client_id=row.client_id,
            client_name=row.name,
            fb_user_id=row.fb_user_id,
            status=row.status.value,
            advice=ADVICE[row.status],
            expires_at=row.expires_at,
            user_token_expired_at=row.user_token_dead_at,
            data_access_expires_at=row.data_access_expires_at,
            last_checked_at=row.last_checked_at,
            created_at=row.created_at,
            pages=pages.get(row.id, []),
            waiting=waiting.get(row.id, {}),
        )
        for row in rows
    ], next_page


_Counts = dict[str, dict[str, int]]


def _dependent_posts(
    session: Session, credential_ids: list[str]
) -> tuple[_Counts, dict[tuple[str, str], dict[str, int]]]:
    """Dependent posts by credential and status, and by (credential, Page) and status.

    One grouped query for the whole page of credentials, not one per credential.
    """
    rows = session.execute(
        select(Post.credential_id, Post.target, Post.status, func.count())
        .where(Post.credential_id.in_(credential_ids), Post.status.in_(DEPENDENT_STATUSES))
        .group_by(Post.credential_id, Post.target, Post.status)
    )
    found: dict[tuple[str, str], dict[PostStatus, int]] = defaultdict(dict)
    for credential_id, target, status, count in rows:
        found[(credential_id, target)][status] = int(count)
    by_credential: dict[str, dict[PostStatus, int]] = defaultdict(lambda: defaultdict(int))
    for (credential_id, _), counts in found.items():
        for status, count in counts.items():
            by_credential[credential_id][status] += count
    return (
        {cid: _in_order(counts) for cid, counts in by_credential.items()},
        {key: _in_order(counts) for key, counts in found.items()},
    )


def _in_order(counts: dict[PostStatus, int]) -> dict[str, int]:
    return {s.value: counts[s] for s in DEPENDENT_STATUSES if counts.get(s)}


def _pages(
    session: Session,
    credential_ids: list[str],
    waiting_by_page: dict[tuple[str, str], dict[str, int]],
) -> dict[str, list[PageHealth]]:
    """The Pages of the credentials, by credential, each as the API shows it."""
    rows = session.execute(
        select(
            CredentialPage.credential_id,
            CredentialPage.page_id,
            CredentialPage.name,
            CredentialPage.token_status,
            CredentialPage.tasks,
            CredentialPage.checked_at,
        )
        .where(CredentialPage.credential_id.in_(credential_ids))
        .order_by(CredentialPage.credential_id, CredentialPage.page_id)
    )
    pages: dict[str, list[PageHealth]] = defaultdict(list)
    for row in rows:
        # A transient object built from the columns read, never from the session: the
        # model keeps the rule of who can post (PageOut.of asks it), and no token is in it.
        page = CredentialPage(
            page_id=row.page_id,
            name=row.name,
            token_status=row.token_status,
            tasks=row.tasks,
            checked_at=row.checked_at,
        )
        pages[row.credential_id].append(
            PageHealth(
                health=PageOut.of(page),
                waiting=waiting_by_page.get((row.credential_id, row.page_id), {}),
            )
        )
    return pages


def page_names(session: Session, pages: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The names of ``(credential_id, page_id)`` Pages, in one query whatever their number.

    The name column only, never the row: a :class:`CredentialPage` object would
    decrypt its token. A Page its credential no longer lists has no entry.
    """
    wanted = set(pages)
    if not wanted:
        return {}
    rows = session.execute(
        select(CredentialPage.credential_id, CredentialPage.page_id, CredentialPage.name).where(
            CredentialPage.credential_id.in_({credential_id for credential_id, _ in wanted}),
            CredentialPage.page_id.in_({page_id for _, page_id in wanted}),
        )
    )
    found = {(credential_id, page_id): name for credential_id, page_id, name in rows}
    return {key: name for key, name in found.items() if key in wanted}

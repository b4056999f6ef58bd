"""The post state machine as guarded SQL: each state change is one statement.

::

    scheduled ──claim_due──▶ queued ──claim_for_publishing──▶ publishing ──leave_*──▶ published
        ▲                      │ requeue_stale (re-send)        │               failed
        │                      ▼                                │               needs_reauth
        └──────── leave_scheduled / reap_expired ◀──────────────┘               scheduled

Every statement names the state it expects (``WHERE status = …``, and for a
lease holder ``AND lease_owner = :worker``), so a duplicate delivery, a second
dispatcher or a worker whose lease ran out changes nothing: the statement
matches no row and the caller learns it lost. On PostgreSQL the batch claims use
``FOR UPDATE SKIP LOCKED`` so that several dispatchers never wait on each other;
SQLite serialises writers, and the guarded outer ``WHERE`` keeps the claim
correct there too. procrastinate's ``procrastinate_fetch_job`` is the model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    Interval,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from offpost.models.attempt import Attempt, AttemptOutcome, Sent
from offpost.models.clock import db_now, is_postgresql
from offpost.models.credential import Credential, CredentialStatus, PageTokenStatus
from offpost.models.ids import IdPrefix, id_factory
from offpost.models.post import (
    CANCELABLE_STATUSES,
    EDITABLE_STATUSES,
    WAITING_STATUSES,
    Post,
    PostStatus,
)
from offpost.models.types import UTCDateTime

POSTS: Table = Post.__table__  # type: ignore[assignment]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]


def _skip_locked(session: Session) -> dict[str, Any]:
    """``FOR UPDATE SKIP LOCKED`` where the database has it."""
    if session.get_bind().dialect.name == "postgresql":
        return {"skip_locked": True}
    return {}


def _in_status(status: PostStatus) -> Any:
    """``status = '<value>'`` with the value inlined, not bound.

    The due/queued/lease indexes are partial (``WHERE status = 'scheduled'`` …);
    PostgreSQL can only use them when the plan sees the literal value, which a
    generic plan for a bound parameter does not.
    """
    return Post.status == literal_column(f"'{status.value}'")


def _picked(query: Any, session: Session, name: str) -> Any:
    """The rows to change, chosen once: a MATERIALIZED CTE, locked with SKIP LOCKED.

    Written as ``WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` the
    planner may run the subquery more than once and change more than ``n`` rows
    (or rows locked meanwhile); a materialized CTE is evaluated exactly once.
    """
    options = _skip_locked(session)
    if options:
        query = query.with_for_update(**options)
    return select(query.cte(name).prefix_with("MATERIALIZED").c.id)


def claim_due(session: Session, now: datetime, limit: int) -> list[str]:
    """Move up to ``limit`` due posts from ``scheduled`` to ``queued``; their ids, oldest first.

    The caller commits, and only then sends them to the broker: a post is never
    sent before the database says it is queued.
    """
    return [post_id for post_id, _ in claim_due_timed(session, now, limit)]


def claim_due_timed(session: Session, now: datetime, limit: int) -> list[tuple[str, datetime]]:
    """:func:`claim_due`, with each post's due time (how late the hand-off is)."""
    due = _picked(
        select(Post.id)
        .where(_in_status(PostStatus.SCHEDULED), Post.due_at <= now)
        .order_by(Post.due_at)
        .limit(limit),
        session,
        "due",
    )
    result = session.execute(
        update(Post)
        .where(Post.id.in_(due), Post.status == PostStatus.SCHEDULED)
        .values(status=PostStatus.QUEUED, queued_at=now, updated_at=now)
        .returning(Post.id, Post.due_at)
        .execution_options(synchronize_session=False)
    )
    return [(row.id, row.due_at) for row in sorted(result, key=lambda r: r.due_at)]


def requeue_stale(session: Session, now: datetime, older_than: timedelta, limit: int) -> list[str]:
    """Re-stamp ``queued`` posts sent longer ago than ``older_than``; their ids, to re-send.

    Their message was lost (a dispatcher died between commit and send, the broker
    lost it) or is still waiting behind a backlog; a second message is harmless
    because the worker's claim accepts only ``queued`` rows.
    """
    stale = _picked(
        select(Post.id)
        .where(_in_status(PostStatus.QUEUED), Post.queued_at < now - older_than)
        .order_by(Post.queued_at)
        .limit(limit),
        session,
        "stale",
    )
    result = session.execute(
        update(Post)
        .where(
            Post.id.in_(stale),
            Post.status == PostStatus.QUEUED,
            Post.queued_at < now - older_than,
        )
        .values(queued_at=now, updated_at=now)
        .returning(Post.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


def reap_expired(session: Session, now: datetime, limit: int) -> list[str]:
    """Put ``publishing`` posts whose lease ran out back to ``scheduled``, owing reconciliation.

    Their worker died or hung, possibly after Graph published: the next worker
    reads the Page before calling Graph again (``reconcile_since``). The attempt
    left in flight is closed as ``retry`` with the offpost code ``lease_expired``.

    Whether a lease ran out is decided by the database's clock inside the
    statement (:func:`~offpost.models.clock.db_now`), the clock that set the
    lease's end: a reaper whose machine runs ahead cannot take a post back while
    its worker's call is still within the lease. ``now`` only stamps the rows
    (and is the clock on SQLite, where everything shares one machine).
    """
    database_now = db_now(session, now)
    expired = _picked(
        select(Post.id)
        .where(_in_status(PostStatus.PUBLISHING), Post.lease_expires_at < database_now)
        .order_by(Post.lease_expires_at)
        .limit(limit),
        session,
        "expired",
    )
    result = session.execute(
        update(Post)
        .where(
            Post.id.in_(expired),
            Post.status == PostStatus.PUBLISHING,
            Post.lease_expires_at < database_now,
        )
        .values(
            status=PostStatus.SCHEDULED,
            due_at=now,
            lease_owner=None,
            lease_expires_at=None,
            reconcile_since=func.coalesce(Post.reconcile_since, Post.queued_at, now),
            updated_at=now,
        )
        .returning(Post.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(result.scalars())
    if ids:
        session.execute(
            update(Attempt)
            .where(Attempt.post_id.in_(ids), Attempt.outcome.is_(None))
            .values(
                outcome=AttemptOutcome.RETRY,
                finished_at=now,
                error_code="lease_expired",
                error_message="the worker stopped before recording an outcome",
            )
            .execution_options(synchronize_session=False)
        )
    return ids


@dataclass(frozen=True, slots=True)
class ClaimedPost:
    """What a worker needs of a post it holds the lease on."""

    id: str
    client_id: str
    credential_id: str
    target: str
    message: str | None
    link: str | None
    photo_url: str | None
    #: Photos, a video or a Reel (``offpost.posts.media``); ``None`` for none.
    media: dict[str, Any] | None
    #: Posted as the Page once the post is published (a follow-up).
    first_comment: str | None
    publish_at: datetime
    attempts: int
    max_attempts: int
    reconcile_since: datetime | None
    schedule_id: str | None
    #: When this worker's lease ends (the reaper may take the post back then).
    lease_expires_at: datetime | None = None
    #: The lease's end on this process's monotonic clock (:func:`time.monotonic`):
    #: the seconds the database granted, counted from the claim's reply, so that
    #: this machine's wall clock plays no part in deciding whether it still holds it.
    lease_deadline: float | None = None


def claim_for_publishing(
    session: Session, ids: Sequence[str], worker: str, now: datetime, lease: timedelta
) -> list[ClaimedPost]:
    """Take the lease on those of ``ids`` that are ``queued``; the others are dropped.

    A post not ``queued`` was claimed by another delivery of the same message,
    canceled, or is already done: the worker must not touch it.

    The lease ends ``lease`` after the database's time of the statement; each
    post comes back with that end also as a deadline on this process's
    monotonic clock (``lease_deadline``), which is what the worker checks.
    """
    if not ids:
        return []
    database_now = db_now(session, now)
    result = session.execute(
        update(Post)
        .where(Post.id.in_(list(ids)), Post.status == PostStatus.QUEUED)
        .values(
            status=PostStatus.PUBLISHING,
            lease_owner=worker,
            lease_expires_at=_later(session, database_now, now, lease),
            updated_at=now,
        )
        .returning(
            Post.id,
            Post.client_id,
            Post.credential_id,
            Post.target,
            Post.message,
            Post.link,
            Post.photo_url,
            Post.media,
            Post.first_comment,
            Post.publish_at,
            Post.attempts,
            Post.max_attempts,
            Post.reconcile_since,
            Post.schedule_id,
            Post.lease_expires_at,
            database_now.label("claimed_at"),
        )
        .execution_options(synchronize_session=False)
    )
    answered = time.monotonic()
    claimed = []
    for row in result:
        values = row._asdict()
        granted = (values["lease_expires_at"] - values.pop("claimed_at")).total_seconds()
        claimed.append(ClaimedPost(**values, lease_deadline=answered + granted))
    return claimed


def extend_lease(
    session: Session, post_id: str, worker: str, now: datetime, lease: timedelta
) -> float | None:
    """Move the lease's end to ``lease`` after the database's now, if ``worker`` still
    holds it (a publish of several calls, between two of them); the new end on this
    process's monotonic clock, or ``None`` when the lease is lost."""
    database_now = db_now(session, now)
    row = session.execute(
        update(Post)
        .where(_held(post_id, worker))
        .values(lease_expires_at=_later(session, database_now, now, lease), updated_at=now)
        .returning(Post.lease_expires_at, database_now.label("extended_at"))
        .execution_options(synchronize_session=False)
    ).first()
    answered = time.monotonic()
    if row is None:
        return None
    granted: timedelta = row.lease_expires_at - row.extended_at
    return answered + granted.total_seconds()


def _later(session: Session, database_now: Any, now: datetime, lease: timedelta) -> Any:
    """``database_now + lease`` as SQL (the lease's end on the database's clock)."""
    if is_postgresql(session):
        return type_coerce(database_now + literal(lease, Interval()), UTCDateTime())
    return literal(now + lease, UTCDateTime())


def begin_attempt(
    session: Session, post_id: str, worker: str, now: datetime, sent: Sent | None = None
) -> Attempt:
    """Record that a Graph call for ``post_id`` starts now (outcome still unknown).

    ``sent`` is what the call sends; ``None`` for an attempt that sends nothing
    (a post found by reconciliation).
    """
    number = session.scalar(
        select(func.coalesce(func.max(Attempt.number), 0)).where(Attempt.post_id == post_id)
    )
    attempt = Attempt(
        post_id=post_id,
        number=int(number or 0) + 1,
        started_at=now,
        worker=worker,
        **(sent.columns() if sent else {}),
    )
    session.add(attempt)
    session.flush()
    return attempt


def begin_attempts(
    session: Session, sends: Mapping[str, Sent], worker: str, now: datetime
) -> dict[str, str]:
    """:func:`begin_attempt` for many posts (``{post_id: what its call sends}``) in two
    statements; returns ``{post_id: attempt_id}``.

    One lookup of the posts' highest attempt numbers, one multi-row INSERT. The
    rows commit with the caller's transaction, before any of the Graph calls.
    """
    if not sends:
        return {}
    post_ids = list(sends)
    numbers: dict[str, int] = {
        post_id: int(number)
        for post_id, number in session.execute(
            select(Attempt.post_id, func.max(Attempt.number))
            .where(Attempt.post_id.in_(list(post_ids)))
            .group_by(Attempt.post_id)
        )
    }
    new_id = id_factory(IdPrefix.ATTEMPT)
    rows = [
        {
            "id": new_id(),
            "post_id": post_id,
            "number": numbers.get(post_id, 0) + 1,
            "started_at": now,
            "worker": worker,
            **sends[post_id].columns(),
        }
        for post_id in post_ids
    ]
    # Core statements on the tables (not the ORM's bulk paths): the same SQL, less Python.
    session.execute(insert(ATTEMPTS), rows)
    return {str(row["post_id"]): str(row["id"]) for row in rows}


@dataclass(frozen=True, slots=True)
class Published:
    """A post Graph created: what :func:`finish_published` writes."""

    post_id: str
    graph_post_id: str
    attempts: int


def finish_published(
    session: Session, published: Sequence[Published], worker: str, now: datetime
) -> set[str]:
    """:func:`leave_published` for many posts; the ids whose lease was still held.

    On PostgreSQL one ``UPDATE … FROM (VALUES …)`` guarded exactly like
    :func:`leave_published`; elsewhere one guarded UPDATE per post in the same
    transaction.
    """
    if not published:
        return set()
    common = {
        "status": PostStatus.PUBLISHED,
        "published_at": now,
        "last_error": None,
        "reconcile_since": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if session.get_bind().dialect.name != "postgresql":
        return {
            p.post_id
            for p in published
            if leave_published(
                session, p.post_id, worker, now, graph_post_id=p.graph_post_id, attempts=p.attempts
            )
            is not None
        }
    result = session.execute(
        _FINISH_PUBLISHED.values(**common),
        {
            # Not named after columns: an UPDATE takes such parameters as values to SET.
            "done_ids": [p.post_id for p in published],
            "done_graph_post_ids": [p.graph_post_id for p in published],
            "done_attempts": [p.attempts for p in published],
            "done_by": worker,
        },
    )
    return set(result.scalars())


# One array per column, unnested: the statement is the same whatever the number of
# posts, so it is compiled and parsed once (a VALUES list of literal rows was compiled
# for every batch).
_DONE = (
    func.unnest(
        cast(bindparam("done_ids"), postgresql.ARRAY(String)),
        cast(bindparam("done_graph_post_ids"), postgresql.ARRAY(String)),
        cast(bindparam("done_attempts"), postgresql.ARRAY(Integer)),
    )
    .table_valued("id", "graph_post_id", "attempts")
    .render_derived(name="done")
)
_FINISH_PUBLISHED = (
    update(POSTS)
    .where(
        POSTS.c.id == _DONE.c.id,
        POSTS.c.status == PostStatus.PUBLISHING,
        POSTS.c.lease_owner == bindparam("done_by"),
    )
    .values(graph_post_id=_DONE.c.graph_post_id, attempts=_DONE.c.attempts)
    .returning(POSTS.c.id)
)


def close_attempts(
    session: Session, attempt_ids: Sequence[str], outcome: AttemptOutcome, now: datetime
) -> None:
    """Record one outcome for several attempts (a batch that all went the same way)."""
    if attempt_ids:
        session.execute(
            update(ATTEMPTS)
            .where(ATTEMPTS.c.id.in_(list(attempt_ids)))
            .values(outcome=outcome, finished_at=now)
        )


def _held(post_id: str, worker: str) -> Any:
    return and_(
        Post.id == post_id, Post.status == PostStatus.PUBLISHING, Post.lease_owner == worker
    )


class _Keep:
    """The default of a column a transition leaves as it is."""

    def __repr__(self) -> str:
        return "KEEP"


#: Leave the column as it is.
KEEP: Any = _Keep()

#: What a transition wrote: the columns and their values (None when the lease was lost).
Written = dict[str, Any] | None


def _leave(
    session: Session, post_id: str, worker: str, now: datetime, values: dict[str, Any]
) -> Written:
    """Leave ``publishing`` with ``values`` if this worker still holds the lease.

    Returns the values written, or None when the lease was lost (reaped
    meanwhile): then nothing changed.
    """
    values = {k: v for k, v in values.items() if v is not KEEP}
    values.update(lease_owner=None, lease_expires_at=None)
    result = session.execute(
        update(Post)
        .where(_held(post_id, worker))
        .values(updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return values if result.rowcount else None  # type: ignore[attr-defined]


def leave_published(
    session: Session, post_id: str, worker: str, now: datetime, *, graph_post_id: str, attempts: int
) -> Written:
    """``publishing → published``: Graph made ``graph_post_id`` (or reconciliation found it)."""
    return _leave(
        session,
        post_id,
        worker,
        now,
        {
            "status": PostStatus.PUBLISHED,
            "graph_post_id": graph_post_id,
            "published_at": now,
            "attempts": attempts,
            "last_error": None,
            "reconcile_since": None,
        },
    )


def leave_scheduled(
    session: Session,
    post_id: str,
    worker: str,
    now: datetime,
    *,
    due_at: datetime,
    attempts: Any = KEEP,
    last_error: Any = KEEP,
    reconcile_since: Any = KEEP,
) -> Written:
    """``publishing → scheduled``, due at ``due_at``: a retry, a wait, or handed back."""
    after = {"attempts": attempts, "last_error": last_error, "reconcile_since": reconcile_since}
    return _leave(
        session, post_id, worker, now, {"status": PostStatus.SCHEDULED, "due_at": due_at, **after}
    )


def leave_failed(
    session: Session,
    post_id: str,
    worker: str,
    now: datetime,
    *,
    attempts: Any = KEEP,
    last_error: Any = KEEP,
    reconcile_since: Any = KEEP,
) -> Written:
    """``publishing → failed``: a permanent error, or no attempts left."""
    after = {"attempts": attempts, "last_error": last_error, "reconcile_since": reconcile_since}
    return _leave(session, post_id, worker, now, {"status": PostStatus.FAILED, **after})


def leave_needs_reauth(
    session: Session, post_id: str, worker: str, now: datetime, *, last_error: Any = KEEP
) -> Written:
    """``publishing → needs_reauth``: the credential waits for a fresh token."""
    return _leave(
        session,
        post_id,
        worker,
        now,
        {"status": PostStatus.NEEDS_REAUTH, "last_error": last_error},
    )


def leave_canceled(
    session: Session, post_id: str, worker: str, now: datetime, *, last_error: dict[str, Any]
) -> Written:
    """``publishing → canceled``: its credential is gone, and nothing reached Graph."""
    return _leave(
        session, post_id, worker, now, {"status": PostStatus.CANCELED, "last_error": last_error}
    )


def park_page_posts(
    session: Session, credential_id: str, page_ids: Iterable[str], now: datetime
) -> int:
    """The waiting posts of Pages whose token died wait as ``needs_reauth`` (nothing is
    lost); returns how many. The credential's other Pages are not touched.

    Posts held by a worker are left to it; it parks its own post when it learns.
    """
    result = session.execute(
        update(Post)
        .where(
            Post.credential_id == credential_id,
            Post.target.in_(list(page_ids)),
            # A failed post failed for its own reason; only waiting ones are parked.
            Post.status.in_(WAITING_STATUSES),
        )
        .values(status=PostStatus.NEEDS_REAUTH, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def next_due_at(session: Session) -> datetime | None:
    """When the earliest ``scheduled`` post is due (one index lookup), or None."""
    value: datetime | None = session.scalar(
        select(func.min(Post.due_at)).where(_in_status(PostStatus.SCHEDULED))
    )
    return value


# --- changes a client (or an operator) asks for ----------------------------------------------

#: The guard that keeps edits and cancels away from a post whose last attempt may have
#: published it: only once a worker has read the Page (reconciliation) is it known.
OUTCOME_KNOWN = Post.reconcile_since.is_(None)


def _owned(post_id: str, client_id: str | None) -> Any:
    condition = Post.id == post_id
    return and_(condition, Post.client_id == client_id) if client_id is not None else condition


def _change(
    session: Session,
    client_id: str | None,
    post_id: str,
    allowed: Iterable[PostStatus],
    values: Mapping[str, Any],
    *guards: Any,
) -> Post | None:
    """Apply ``values`` if the post is in ``allowed`` (one UPDATE … RETURNING); the post or None."""
    statement = (
        update(Post)
        .where(_owned(post_id, client_id), Post.status.in_(list(allowed)), *guards)
        .values(**values)
        .returning(Post)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return session.scalars(statement).one_or_none()


def edit(
    session: Session,
    client_id: str | None,
    post_id: str,
    values: Mapping[str, Any],
    *guards: Any,
) -> Post | None:
    """Change an editable post's content or times (``values``; no status), only while its
    outcome is known; the post, or None when no row matched."""
    if "status" in values:
        raise ValueError("an edit does not change a post's status")
    return _change(session, client_id, post_id, EDITABLE_STATUSES, values, OUTCOME_KNOWN, *guards)


def cancel(session: Session, client_id: str | None, post_id: str, now: datetime) -> Post | None:
    """``scheduled | queued | failed | needs_reauth → canceled``, while its outcome is known."""
    values = {"status": PostStatus.CANCELED, "updated_at": now}
    return _change(session, client_id, post_id, CANCELABLE_STATUSES, values, OUTCOME_KNOWN)


def retry_failed(
    session: Session, client_id: str | None, post_id: str, now: datetime, more_attempts: int
) -> Post | None:
    """``failed → scheduled``, due now, with ``more_attempts`` more.

    ``last_error`` stays (it says why it failed before), and so does
    ``reconcile_since``: an attempt whose outcome is unknown is reconciled first.
    """
    values = {
        "status": PostStatus.SCHEDULED,
        "due_at": now,
        "max_attempts": Post.attempts + more_attempts,
        "updated_at": now,
    }
    return _change(session, client_id, post_id, [PostStatus.FAILED], values)


def cancel_where(
    session: Session, where: Iterable[Any], now: datetime, last_error: dict[str, Any]
) -> list[Any]:
    """Cancel the posts matching ``where`` whose outcome is known; their rows
    ``(id, schedule_id, occurrence_at)``. A post whose last attempt may have published
    it is left to the worker, which reads the Page first: ``canceled`` is never said
    of a post that may be on the Page."""
    return list(
        session.execute(
            update(Post)
            .where(*where, OUTCOME_KNOWN)
            .values(status=PostStatus.CANCELED, last_error=last_error, updated_at=now)
            .returning(Post.id, Post.schedule_id, Post.occurrence_at)
            .execution_options(synchronize_session=False)
        ).all()
    )


def end_credential_posts(
    session: Session, credential_id: str, now: datetime, unknown_error: dict[str, Any]
) -> int:
    """A deleted credential's unpublished posts: canceled, or — when an earlier attempt
    may have published one and no token is left to read the Page with — ``failed`` with
    ``unknown_error``. Returns how many were canceled."""
    mine = [Post.credential_id == credential_id, Post.status.in_(CANCELABLE_STATUSES)]
    session.execute(
        update(Post)
        .where(*mine, Post.reconcile_since.is_not(None))
        .values(status=PostStatus.FAILED, last_error=unknown_error, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(
        update(Post)
        .where(*mine, OUTCOME_KNOWN)
        .values(status=PostStatus.CANCELED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def resume_parked_posts(
    session: Session, credential_id: str, page_ids: Iterable[str], now: datetime
) -> int:
    """``needs_reauth → scheduled`` for the posts of Pages that can be posted on again,
    due at their time or now; returns how many."""
    result = session.execute(
        update(Post)
        .where(
            Post.credential_id == credential_id,
            Post.target.in_(list(page_ids)),
            Post.status == PostStatus.NEEDS_REAUTH,
        )
        .values(
            status=PostStatus.SCHEDULED,
            due_at=case((Post.publish_at > now, Post.publish_at), else_=now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def settle_credential(
    credential: Credential, now: datetime, warn_within: timedelta | None = None
) -> CredentialStatus:
    """Set the credential's status from what is known of its tokens; the one place a
    credential's status is chosen (docs/tokens.md), besides deletion.

    A dead Page token outranks an expired user token, which outranks a near end.
    ``warn_within`` is how long before the user token's end it counts as
    ``expiring``; ``None`` keeps ``expiring`` as it was (callers that learned
    nothing about the user token's end).
    """
    if credential.status is CredentialStatus.DELETED:
        return credential.status
    expires_at = credential.expires_at
    if any(page.token_status is PageTokenStatus.DEAD for page in credential.pages):
        status = CredentialStatus.NEEDS_REAUTH
    elif credential.user_token_dead_at is not None or (
        expires_at is not None and expires_at <= now
    ):
        status = CredentialStatus.USER_TOKEN_EXPIRED
    elif warn_within is None:
        status = (
            CredentialStatus.EXPIRING
            if credential.status is CredentialStatus.EXPIRING
            else CredentialStatus.ACTIVE
        )
    elif expires_at is not None and expires_at <= now + warn_within:
        status = CredentialStatus.EXPIRING
    else:
        status = CredentialStatus.ACTIVE
    credential.status = status
    return status


#: What a fresh occurrence row sets again on the canceled post it revives.
_REVIVED = (
    "credential_id",
    "target",
    "message",
    "link",
    "photo_url",
    "media",
    "media_kind",
    "first_comment",
    "first_comment_status",
    "publish_at",
    "due_at",
    "status",
    "updated_at",
)


def insert_occurrences(
    session: Session, rows: Sequence[Mapping[str, Any]], revivable_codes: Sequence[str]
) -> list[str]:
    """Insert one post per schedule occurrence, exactly once (``INSERT … ON CONFLICT`` on
    ``(schedule_id, occurrence_at)``); returns the ids of the posts created or revived.

    An occurrence that already has a post keeps it, unless offpost itself canceled that
    post before any attempt (``last_error.code`` in ``revivable_codes``: the schedule was
    paused or changed): then ``canceled → scheduled`` with the fresh row's content.
    """
    dialect = postgresql if is_postgresql(session) else sqlite
    statement = dialect.insert(Post).values(list(rows))
    revived: dict[str, Any] = {name: getattr(statement.excluded, name) for name in _REVIVED}
    revived["last_error"] = None
    statement = statement.on_conflict_do_update(
        index_elements=[Post.schedule_id, Post.occurrence_at],
        set_=revived,
        where=and_(
            Post.status == PostStatus.CANCELED,
            Post.attempts == 0,
            Post.last_error["code"].as_string().in_(list(revivable_codes)),
        ),
    )
    # RETURNING, not rowcount: a multi-row upsert's rowcount is -1 on psycopg.
    return list(session.scalars(statement.returning(Post.id)))

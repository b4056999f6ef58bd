"""The operators' numbers: one document, computed from the database at a given ``now``.

:func:`collect_stats` is what ``GET /v1/admin/stats``, ``offpost status`` and
the dashboard show (the OpenAPI document). It runs a handful of aggregate queries,
each written so that an index can serve it (a literal status that matches the
partial indexes, plain range predicates on stored columns, no function of a
column in a ``WHERE``):

- posts by status: one ``GROUP BY status`` (an index-only scan of
  ``ix_posts_credential_status`` on PostgreSQL);
- due but not dispatched: ``status = 'scheduled' AND due_at <= now``, a range of
  the partial index ``ix_posts_due``;
- the last hour: ``status = 'published' AND published_at >= now - 1h`` and
  ``status = 'failed' AND updated_at >= now - 1h``;
- top errors: attempts with an error code that finished within the last day;
- credentials by status: one ``GROUP BY`` (``ix_credentials_status_expires_at``).

The last two range predicates scan today; they are ready for an index on
``posts.published_at`` / ``attempts.finished_at`` should a deployment's history
grow large enough to want one.

Lateness is ``published_at - publish_at``: how long after the time its client
asked for a post went out. Its percentiles are computed by PostgreSQL itself
(``percentile_cont``); on SQLite the last hour's values are read and
:func:`percentiles` interpolates them the same way.

Nothing here knows the broker: the caller passes the queue depth it measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Float, cast, extract, func, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from offpost.models import Attempt, Client, Credential, CredentialStatus, Post, PostStatus

#: ``last_hour`` is exactly that.
LAST_HOUR = timedelta(hours=1)
#: ``top_errors`` counts the attempts that ended with an error within this window.
TOP_ERRORS_WINDOW = timedelta(hours=24)
TOP_ERRORS_LIMIT = 10
#: The percentiles of ``last_hour.lateness_seconds``.
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class PostCounts:
    """How many posts are in each status (every status, 0 included)."""

    scheduled: int = 0
    queued: int = 0
    publishing: int = 0
    published: int = 0
    failed: int = 0
    needs_reauth: int = 0
    canceled: int = 0
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class Lateness:
    """Percentiles of ``published_at - publish_at`` in seconds; ``None`` without data."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True, slots=True)
class LastHour:
    published: int = 0
    failed: int = 0
    lateness_seconds: Lateness = Lateness()


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """A Graph error code (or an offpost code such as ``timeout``) and how often it occurred."""

    code: str
    count: int


@dataclass(frozen=True, slots=True)
class CredentialCounts:
    """Credentials in each live status (deleted ones are not counted)."""

    active: int = 0
    expiring: int = 0
    user_token_expired: int = 0
    needs_reauth: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """The document of ``GET /v1/admin/stats`` (the OpenAPI document), plus ``due_not_dispatched``.

    ``queue_depth`` is ``None`` when the broker could not be asked (or is neither
    Redis nor the in-process broker of ``offpost up``).
    ``due_not_dispatched`` counts ``scheduled`` posts already due: a steady
    non-zero value means the dispatchers are not keeping up (or not running).
    """

    posts: PostCounts
    last_hour: LastHour
    top_errors: list[ErrorCount]
    credentials: CredentialCounts
    queue_depth: int | None
    due_not_dispatched: int


@dataclass(frozen=True, slots=True)
class ExpiringCredential:
    """A credential whose user token expires soon (no token: just the facts)."""

    id: str
    client_id: str
    client_name: str
    fb_user_id: str
    status: str
    expires_at: datetime


def percentiles(values: Iterable[float], quantiles: Sequence[float] = QUANTILES) -> list[float]:
    """Linearly interpolated percentiles, as PostgreSQL's ``percentile_cont`` computes them.

    Empty input gives an empty list. ``quantiles`` are fractions in ``[0, 1]``.
    """
    ordered = sorted(values)
    if not ordered:
        return []
    out = []
    for q in quantiles:
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is a fraction in [0, 1], got {q}")
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return out


def _status_is(status: PostStatus) -> ColumnElement[bool]:
    # Inlined, not bound: only a literal lets PostgreSQL match a partial index.
    return Post.status == literal_column(f"'{status.value}'")


def collect_stats(session: Session, now: datetime, *, queue_depth: int | None = None) -> Stats:
    """The stats document at ``now`` (aware); ``queue_depth`` as the caller measured it."""
    posts = count_posts(session)
    credentials = count_credentials(session)
    return Stats(
        posts=PostCounts(**{status.value: count for status, count in posts.items()}),
        last_hour=_last_hour(session, now),
        top_errors=top_errors(session, now),
        credentials=CredentialCounts(
            active=credentials[CredentialStatus.ACTIVE],
            expiring=credentials[CredentialStatus.EXPIRING],
            user_token_expired=credentials[CredentialStatus.USER_TOKEN_EXPIRED],
            needs_reauth=credentials[CredentialStatus.NEEDS_REAUTH],
        ),
        queue_depth=queue_depth,
        due_not_dispatched=due_not_dispatched(session, now)[0],
    )


def due_not_dispatched(session: Session, now: datetime) -> tuple[int, datetime | None]:
    """How many ``scheduled`` posts are due at ``now``, and the earliest ``due_at`` among them."""
    count, oldest = session.execute(
        select(func.count(), func.min(Post.due_at)).where(
            _status_is(PostStatus.SCHEDULED), Post.due_at <= now
        )
    ).one()
    return int(count), oldest


def _last_hour(session: Session, now: datetime) -> LastHour:
    since = now - LAST_HOUR
    published_recently = (
        _status_is(PostStatus.PUBLISHED),
        Post.published_at >= since,
        Post.published_at <= now,
    )
    if session.get_bind().dialect.name == "postgresql":
        lateness_s = cast(extract("epoch", Post.published_at - Post.publish_at), Float)
        row = session.execute(
            select(
                func.count(),
                *(func.percentile_cont(q).within_group(lateness_s.asc()) for q in QUANTILES),
            ).where(*published_recently)
        ).one()
        published = int(row[0])
        quantiles = [float(v) for v in row[1:]] if published else []
    else:
        # SQLite has no percentile aggregate: read the hour's pairs of times.
        pairs = session.execute(
            select(Post.published_at, Post.publish_at).where(*published_recently)
        )
        values = [(done - asked).total_seconds() for done, asked in pairs if done is not None]
        published = len(values)
        quantiles = percentiles(values)
    failed = session.scalar(
        select(func.count()).where(
            _status_is(PostStatus.FAILED),
            Post.updated_at >= since,
            Post.updated_at <= now,
        )
    )
    lateness = Lateness(*(round(v, 3) for v in quantiles)) if quantiles else Lateness()
    return LastHour(published=published, failed=int(failed or 0), lateness_seconds=lateness)


def top_errors(
    session: Session,
    now: datetime,
    *,
    window: timedelta = TOP_ERRORS_WINDOW,
    limit: int = TOP_ERRORS_LIMIT,
) -> list[ErrorCount]:
    """The most frequent error codes of attempts that ended within ``window`` before ``now``.

    Most frequent first; ties by code, so the order is stable.
    """
    count = func.count().label("n")
    rows = session.execute(
        select(Attempt.error_code, count)
        .where(
            Attempt.error_code.is_not(None),
            Attempt.finished_at >= now - window,
            Attempt.finished_at <= now,
        )
        .group_by(Attempt.error_code)
        .order_by(count.desc(), Attempt.error_code)
        .limit(limit)
    )
    return [ErrorCount(code=str(code), count=int(n)) for code, n in rows]


def count_posts(session: Session) -> dict[PostStatus, int]:
    """Posts in each status, every status present (0 included); one ``GROUP BY``."""
    # Not dict(result): a Result has .keys(), so dict() would take it for a mapping.
    found = {
        status: count
        for status, count in session.execute(
            select(Post.status, func.count()).group_by(Post.status)
        )
    }
    return {status: int(found.get(status, 0)) for status in PostStatus}


def count_credentials(session: Session) -> dict[CredentialStatus, int]:
    """Credentials in each status, every status present (deleted too); one ``GROUP BY``."""
    found = {
        status: count
        for status, count in session.execute(
            select(Credential.status, func.count()).group_by(Credential.status)
        )
    }
    return {status: int(found.get(status, 0)) for status in CredentialStatus}


def expiring_credentials(
    session: Session, now: datetime, within: timedelta, *, limit: int = 100
) -> list[ExpiringCredential]:
    """Live credentials whose user token expires before ``now + within``, soonest first.

    Reads no token column, so it needs no encryption keys (``offpost status``).
    Already expired ones are included: they are the most urgent.
    """
    rows = session.execute(
        select(
            Credential.id,
            Credential.client_id,
            Client.name,
            Credential.fb_user_id,
            Credential.status,
            Credential.expires_at,
        )
        .join(Client, Client.id == Credential.client_id)
        .where(
            Credential.status != CredentialStatus.DELETED,
            Credential.expires_at.is_not(None),
            Credential.expires_at <= now + within,
        )
        .order_by(Credential.expires_at, Credential.id)
        .limit(limit)
    )
    return [
        ExpiringCredential(
            id=cred_id,
            client_id=client_id,
            client_name=name,
            fb_user_id=fb_user_id,
            status=status.value,
            expires_at=expires_at,
        )
        for cred_id, client_id, name, fb_user_id, status, expires_at in rows
        if expires_at is not None
    ]

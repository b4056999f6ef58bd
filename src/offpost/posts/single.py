"""One new post (``POST /v1/posts``) on the event loop: three reads and one round trip to write.

The single route on PostgreSQL runs here, on a psycopg ``AsyncConnection`` in
autocommit mode (:class:`offpost.api.fastdb.AsyncDatabase`), with the
statements of :mod:`offpost.posts.pipeline`. The rules are the ones every
other way of creating posts uses (:func:`offpost.posts.store.prepare_posts`,
:mod:`offpost.posts.quotas`, :mod:`offpost.posts.idempotency`); only the order
of the transaction's statements differs from the batch route's, and they are
sent together:

1. ``BEGIN``;
2. with an ``Idempotency-Key``: delete the key's row if it has expired, then
   insert it with the answer already in it (the answer is known before the
   write: the post's values are made here). A concurrent duplicate's insert
   waits on the primary key ``(client_id, key)`` and collides once this
   transaction commits; it then replays this answer;
3. lock the client's row (:func:`offpost.posts.quotas.lock_client`), in a
   statement of its own, so that the next statement sees every post that the
   previous holder of the lock committed;
4. one statement counts the client's posts of the last 24 hours and its
   pending posts and inserts the post only if both stay within the quotas
   (``INSERT … SELECT … WHERE``), returning the counts and whether it wrote;
5. with a key: delete the key's row again if the post was not written, so
   that a refused request stores nothing;
6. ``COMMIT``.

The lock is held from 3 to 6 without waiting for this process: one client's
creations still commit one at a time (exact quotas), but each holds the lock
only as long as the server needs. The batch route inserts first and locks
after (its inserts are large and run in parallel); the two orders do not
deadlock, since the lock (``FOR NO KEY UPDATE``) does not conflict with the
``KEY SHARE`` lock of an insert's foreign key, and an idempotency key is
always taken before the client's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Integer, Table, bindparam, delete, exists, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from offpost.models import Client, CredentialStatus, IdempotencyKey, PageTokenStatus, Post
from offpost.models.credential import Credential, CredentialPage
from offpost.models.idempotency import IDEMPOTENCY_TTL
from offpost.posts import quotas
from offpost.posts.idempotency import IdempotencyConflictError, StoredAnswer
from offpost.posts.input import PostCreate
from offpost.posts.pipeline import (
    BEGIN,
    COMMIT,
    Prepared,
    Statement,
    fetch_all,
    fetch_one,
    run_pipeline,
)
from offpost.posts.quotas import DAY, Quotas
from offpost.posts.store import NULL_ON_INSERT, CredentialFacts, NewPost, PageFacts, new_post_rows

__all__ = ["create_post", "eligible", "find_answer", "find_client", "load_credential_facts"]

AsyncConnection = psycopg.AsyncConnection[Any]

_POSTS = cast(Table, Post.__table__)
_KEYS = cast(Table, IdempotencyKey.__table__)
_CLIENTS = cast(Table, Client.__table__)
_CREDENTIALS = cast(Table, Credential.__table__)
_PAGES = cast(Table, CredentialPage.__table__)
#: The columns a new post's row writes (:func:`offpost.posts.store.new_post_rows`).
_COLUMNS = (
    "id",
    "client_id",
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
    "schedule_id",
    "occurrence_at",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
)


def eligible(body: PostCreate) -> bool:
    """Whether ``body`` can be created here: everything its checks read is read by
    :func:`load_credential_facts`. An inline ``access_token`` (Graph calls), an
    upload (its row is locked and its use recorded) or a Reel (the Page's Reels
    of the day are counted) go through the session-based route instead."""
    if body.access_token is not None or body.reel is not None:
        return False
    sources = [*(body.photos or []), *([body.video] if body.video is not None else [])]
    return all(source.media_id is None for source in sources)


def _bind(table: Table, column: str, name: str | None = None) -> Any:
    return bindparam(name or column, type_=table.c[column].type)


# --- reads -------------------------------------------------------------------------------


def _client_by_key_hash() -> ClauseElement:
    return select(*_CLIENTS.c).where(_CLIENTS.c.key_hash == _bind(_CLIENTS, "key_hash"))


def _credential_facts() -> ClauseElement:
    return (
        select(
            _CREDENTIALS.c.id,
            _CREDENTIALS.c.status,
            _CREDENTIALS.c.scopes,
            _PAGES.c.page_id,
            _PAGES.c.token_status,
            _PAGES.c.tasks,
        )
        .select_from(
            _CREDENTIALS.outerjoin(
                _PAGES,
                (_PAGES.c.credential_id == _CREDENTIALS.c.id)
                & (_PAGES.c.page_id == _bind(_PAGES, "page_id")),
            )
        )
        .where(
            _CREDENTIALS.c.client_id == _bind(_CREDENTIALS, "client_id"),
            _CREDENTIALS.c.id == _bind(_CREDENTIALS, "id"),
        )
    )


def _stored_answer() -> ClauseElement:
    return select(
        _KEYS.c.request_hash, _KEYS.c.response_status, _KEYS.c.response_body, _KEYS.c.expires_at
    ).where(_KEYS.c.client_id == _bind(_KEYS, "client_id"), _KEYS.c.key == _bind(_KEYS, "key"))


_CLIENT_BY_KEY_HASH = Prepared(_client_by_key_hash)
_CREDENTIAL_FACTS = Prepared(_credential_facts)
_STORED_ANSWER = Prepared(_stored_answer)


async def find_client(conn: AsyncConnection, dialect: Dialect, key_hash: str) -> Client | None:
    """The client whose key hashes to ``key_hash`` (revoked or not), read now."""
    row = await fetch_one(conn, dialect, _CLIENT_BY_KEY_HASH, {"key_hash": key_hash})
    if row is None:
        return None
    # A detached object with the columns as read: what the session-based lookup gives.
    return Client(**{column.key: value for column, value in zip(_CLIENTS.c, row, strict=True)})


async def load_credential_facts(
    conn: AsyncConnection, dialect: Dialect, client_id: str, credential_id: str, page_id: str
) -> dict[str, CredentialFacts]:
    """:func:`offpost.posts.store.load_credential_facts` for one credential and one Page."""
    rows = await fetch_all(
        conn,
        dialect,
        _CREDENTIAL_FACTS,
        {"client_id": client_id, "id": credential_id, "page_id": page_id},
    )
    found: dict[str, CredentialFacts] = {}
    for id_, status, scopes, found_page, token_status, tasks in rows:
        facts = found.get(id_)
        if facts is None:
            facts = found[id_] = CredentialFacts(id_, CredentialStatus(status), scopes or [], {})
        if found_page is not None:
            facts.pages[found_page] = PageFacts(PageTokenStatus(token_status), tasks)
    return found


async def find_answer(
    conn: AsyncConnection,
    dialect: Dialect,
    client_id: str,
    key: str,
    request_hash: str,
    now: datetime,
) -> StoredAnswer | None:
    """:func:`offpost.posts.idempotency.find_answer` on ``conn``."""
    row = await fetch_one(conn, dialect, _STORED_ANSWER, {"client_id": client_id, "key": key})
    if row is None or now >= row[3]:
        return None
    if row[0] != request_hash:
        raise IdempotencyConflictError(
            "this Idempotency-Key was already used with another request; use a new key"
        )
    if row[1] is None or row[2] is None:
        raise IdempotencyConflictError(
            "the first request with this Idempotency-Key has not finished; try again shortly"
        )
    return StoredAnswer(row[1], row[2])


# --- the write ---------------------------------------------------------------------------


def _lock() -> ClauseElement:
    return quotas.lock_query(_bind(_POSTS, "client_id"))


def _insert_within_quotas() -> ClauseElement:
    client_id = _bind(_POSTS, "client_id")
    pending_limit = bindparam("pending_limit", type_=Integer())
    counts = select(
        quotas.created_since(client_id, _bind(_POSTS, "created_at", "since")).label("created"),
        quotas.pending_count(client_id, pending_limit).label("pending"),
    ).cte("counts")
    values = (
        select(*(_bind(_POSTS, column, f"p_{column}") for column in _COLUMNS))
        .select_from(counts)
        .where(
            counts.c.created + 1 <= bindparam("per_day", type_=Integer()),
            counts.c.pending + 1 <= pending_limit,
        )
    )
    written = (
        insert(_POSTS).from_select(list(_COLUMNS), values).returning(_POSTS.c.id).cte("written")
    )
    return select(
        counts.c.created,
        counts.c.pending,
        select(func.count()).select_from(written).scalar_subquery(),
    )


def _forget_expired_key() -> ClauseElement:
    return delete(_KEYS).where(
        _KEYS.c.client_id == _bind(_KEYS, "client_id"),
        _KEYS.c.key == _bind(_KEYS, "key"),
        _KEYS.c.expires_at <= _bind(_KEYS, "expires_at", "now"),
    )


def _claim_key() -> ClauseElement:
    names = ("client_id", "key", "request_hash", "response_status", "response_body")
    return insert(_KEYS).values(
        {
            **{name: _bind(_KEYS, name) for name in names},
            "created_at": _bind(_KEYS, "created_at", "now"),
            "expires_at": _bind(_KEYS, "expires_at"),
        }
    )


def _forget_key_unless_written() -> ClauseElement:
    return delete(_KEYS).where(
        _KEYS.c.client_id == _bind(_KEYS, "client_id"),
        _KEYS.c.key == _bind(_KEYS, "key"),
        ~exists().where(_POSTS.c.id == _bind(_POSTS, "id", "post_id")),
    )


_LOCK = Prepared(_lock)
_INSERT = Prepared(_insert_within_quotas)
_FORGET_EXPIRED_KEY = Prepared(_forget_expired_key)
_CLAIM_KEY = Prepared(_claim_key)
_FORGET_KEY_UNLESS_WRITTEN = Prepared(_forget_key_unless_written)


async def create_post(
    conn: AsyncConnection,
    dialect: Dialect,
    client_id: str,
    post: NewPost,
    limits: Quotas,
    now: datetime,
    *,
    answer_of: Callable[[dict[str, Any]], StoredAnswer],
    key: str | None = None,
    request_hash: str = "",
) -> tuple[StoredAnswer, dict[str, Any] | None]:
    """Write ``post`` within the client's quotas, once per ``key``, and commit: one round trip.

    ``answer_of(row)`` makes the answer from the row's values. Returns the
    answer and the row written, or the stored answer and ``None`` when another
    request with the same key got there first (its answer is replayed).
    Raises :class:`~offpost.posts.quotas.QuotaExceededError` (counted under the
    client's lock) and :class:`~offpost.posts.idempotency.IdempotencyConflictError`;
    nothing is written then. ``conn`` is in autocommit mode and left idle.
    """
    quotas.check_request_size(limits, 1)
    row = new_post_rows(client_id, [post], now)[0] | NULL_ON_INSERT
    answer = answer_of(row)
    insert_values = {f"p_{column}": row[column] for column in _COLUMNS} | {
        "client_id": client_id,
        "since": now - DAY,
        "per_day": limits.posts_per_day,
        "pending_limit": limits.pending_posts,
    }
    statements: list[Statement] = [BEGIN]
    if key is not None:
        statements += [
            (_FORGET_EXPIRED_KEY, {"client_id": client_id, "key": key, "now": now}),
            (
                _CLAIM_KEY,
                {
                    "client_id": client_id,
                    "key": key,
                    "request_hash": request_hash,
                    "response_status": answer.status,
                    "response_body": answer.body,
                    "now": now,
                    "expires_at": now + IDEMPOTENCY_TTL,
                },
            ),
        ]
    counted_at = len(statements) + 1
    statements += [(_LOCK, {"client_id": client_id}), (_INSERT, insert_values)]
    if key is not None:
        forget = {"client_id": client_id, "key": key, "post_id": row["id"]}
        statements.append((_FORGET_KEY_UNLESS_WRITTEN, forget))
    statements.append(COMMIT)
    try:
        results = await run_pipeline(conn, dialect, statements)
    except psycopg.errors.UniqueViolation as exc:
        if key is None or exc.diag.table_name != _KEYS.name:
            raise
        # Another request with this key committed first: its answer, not a second post.
        stored = await find_answer(conn, dialect, client_id, key, request_hash, now)
        if stored is None:
            raise IdempotencyConflictError(
                "a concurrent request with this Idempotency-Key failed; try again"
            ) from None
        return stored, None
    counted = results[counted_at]
    assert counted is not None
    created, pending, written = counted
    if not written:
        raise await _refusal(conn, dialect, client_id, limits, created, pending, now)
    return answer, row


async def _refusal(
    conn: AsyncConnection,
    dialect: Dialect,
    client_id: str,
    limits: Quotas,
    created: int,
    pending: int,
    now: datetime,
) -> quotas.QuotaExceededError:
    """The quota error for one post refused with ``created`` and ``pending`` counted before it."""
    oldest = None
    if created + 1 > limits.posts_per_day:
        row = await fetch_one(
            conn,
            dialect,
            _NTH_CREATED,
            {"client_id": client_id, "since": now - DAY, "n": created - limits.posts_per_day},
        )
        oldest = row[0] if row is not None else None
    return quotas.refusal_for(limits, 1, created, pending, now, oldest)


def _nth_created() -> ClauseElement:
    return quotas.nth_created_query(
        _bind(_POSTS, "client_id"),
        _bind(_POSTS, "created_at", "since"),
        bindparam("n", type_=Integer()),
    )


_NTH_CREATED = Prepared(_nth_created)

"""``Idempotency-Key``: the same request twice creates once and answers twice the same.

The protocol (see :class:`~offpost.models.IdempotencyKey`):

1. :func:`find_answer` before any work: a stored answer for the same request is
   replayed; the same key with another request is :class:`IdempotencyConflictError`.
2. The work happens, then :func:`run_once` claims the key (an INSERT, flushed at
   once), inserts the posts and records the answer — one transaction. A
   concurrent duplicate's INSERT waits on the primary key ``(client_id, key)``
   until the first transaction ends, then collides; it rolls back its own posts
   and replays the first answer instead.

Only successful answers are remembered: a refused request stores nothing (its
transaction rolls back), so sending it again is checked afresh. Keys expire after
24 hours; an expired key is replaced as if it were new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from offpost.errors import OffpostError
from offpost.models import IdempotencyKey
from offpost.models.idempotency import IDEMPOTENCY_TTL, MAX_KEY_LENGTH

__all__ = [
    "MAX_KEY_LENGTH",
    "IdempotencyConflictError",
    "StoredAnswer",
    "check_key",
    "find_answer",
    "run_once",
]


class IdempotencyConflictError(OffpostError):
    """The key was used for another request, or its first request is still running."""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """An answer to a request: its HTTP status and JSON body."""

    status: int
    body: dict[str, Any]


def check_key(key: str) -> str | None:
    """Why ``key`` cannot be an idempotency key, or ``None``."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return f"must be 1 to {MAX_KEY_LENGTH} characters"
    if not key.isascii() or not key.isprintable():
        return "must be printable ASCII"
    return None


def find_answer(
    session: Session, client_id: str, key: str, request_hash: str, now: datetime
) -> StoredAnswer | None:
    """The stored answer to this same request under ``key``, or ``None`` for a fresh key.

    Raises :class:`IdempotencyConflictError` when the key names another request.
    """
    row = session.execute(
        select(
            IdempotencyKey.request_hash,
            IdempotencyKey.response_status,
            IdempotencyKey.response_body,
            IdempotencyKey.expires_at,
        ).where(IdempotencyKey.client_id == client_id, IdempotencyKey.key == key)
    ).one_or_none()
    if row is None or now >= row.expires_at:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyConflictError(
            "this Idempotency-Key was already used with another request; use a new key"
        )
    if row.response_status is None or row.response_body is None:
        raise IdempotencyConflictError(
            "the first request with this Idempotency-Key has not finished; try again shortly"
        )
    return StoredAnswer(row.response_status, row.response_body)


def _claim(session: Session, client_id: str, key: str, request_hash: str, now: datetime) -> None:
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.client_id == client_id,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at <= now,
        )
    )
    session.execute(
        insert(IdempotencyKey).values(
            client_id=client_id,
            key=key,
            request_hash=request_hash,
            created_at=now,
            expires_at=now + IDEMPOTENCY_TTL,
        )
    )


def run_once(
    session: Session,
    *,
    client_id: str,
    key: str | None,
    request_hash: str,
    now: datetime,
    work: Callable[[], StoredAnswer],
) -> tuple[StoredAnswer, bool]:
    """Run ``work`` (which writes in ``session``) and commit; ``(answer, replayed)``.

    With a ``key``, the key's row is claimed before ``work`` and holds the answer
    after it, in the same transaction. A concurrent request that claimed the same
    key first wins: this one's writes roll back and its answer is replayed
    (``replayed`` is True). Raises :class:`IdempotencyConflictError` when the
    winner's request was another one.
    """
    if key is None:
        answer = work()
        session.commit()
        return answer, False
    try:
        _claim(session, client_id, key, request_hash, now)
    except IntegrityError:
        session.rollback()
        stored = find_answer(session, client_id, key, request_hash, now)
        if stored is None:
            # The winner rolled back after all: the key is free again, but a retry is simpler.
            raise IdempotencyConflictError(
                "a concurrent request with this Idempotency-Key failed; try again"
            ) from None
        return stored, True
    answer = work()
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.client_id == client_id, IdempotencyKey.key == key)
        .values(response_status=answer.status, response_body=answer.body)
    )
    session.commit()
    return answer, False

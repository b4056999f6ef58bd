"""Observers of the publish protocol: how metrics and webhooks learn what happened.

:class:`PostPublisher` (one post) and the batch path (many posts at once) tell
an observer, through one method for both, *inside* the transaction that records
an outcome (and only for posts whose lease the worker still held), so an
observer that writes rows — the webhook outbox — commits or rolls back with the
outcome itself and no event is ever lost or invented. Observers that only count
(metrics) ignore the session.

The pacer (:mod:`offpost.workers.pacing`) reports to a :class:`PacingObserver`:
each call it tells to wait, and the estimated usage of the keys it decided on.
That is a protocol of its own, so the outcome observers need not know of it;
:class:`Observers` passes it on to those of its members that implement it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from offpost.graph.errors import GraphError
from offpost.graph.usage import GraphUsage
from offpost.models.transitions import ClaimedPost


class Outcome(enum.StrEnum):
    """What became of a claimed post when a worker let go of it."""

    #: Graph made the post on this call.
    PUBLISHED = "published"
    #: Found on the Page after an earlier call's outcome was unknown (no new call).
    RECONCILED = "reconciled"
    #: Back to ``scheduled`` after a failed attempt, for another one later.
    RETRY = "retry"
    #: Back to ``scheduled`` without an attempt spent: a rate-limit block to wait out.
    WAITING = "waiting"
    FAILED = "failed"
    NEEDS_REAUTH = "needs_reauth"
    #: Its credential was deleted.
    CANCELED = "canceled"
    #: Back to ``scheduled``, due now, no call made: shutdown, or a lease too short.
    HANDED_BACK = "handed_back"
    #: The lease ran out before the outcome could be recorded; the reaper has it.
    LEASE_LOST = "lease_lost"
    #: An unexpected error: the lease runs out and the post is reconciled.
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class Finished:
    """One post that left ``publishing``, for :meth:`PublishObserver.posts_finished`."""

    post: ClaimedPost
    outcome: Outcome
    values: Mapping[str, Any]
    #: When its attempt started, where the caller knows it.
    started_at: datetime | None = None


class PublishObserver(Protocol):
    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        """Posts left ``publishing`` in this transaction (one, or a batch's); each item's
        ``values`` are the columns just written (status, …)."""

    def graph_error(self, error: GraphError) -> None:
        """Graph (or the way to it) answered a call with an error."""

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        """The usage headers of a successful call."""


@runtime_checkable
class PacingObserver(Protocol):
    def paced(self, scope: str, wait_s: float) -> None:
        """The pacer told a Graph call to wait ``wait_s`` seconds; ``scope`` (app, page) is
        that of the key that set the wait."""

    def pace_usage(self, key: str, ratio: float) -> None:
        """After an admission, ``key``'s estimated usage as a share of its estimated budget."""


class NullObserver:
    """Observes nothing."""

    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        return None

    def graph_error(self, error: GraphError) -> None:
        return None

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        return None

    def paced(self, scope: str, wait_s: float) -> None:
        return None

    def pace_usage(self, key: str, ratio: float) -> None:
        return None


class Observers:
    """Several observers, called in order."""

    def __init__(self, observers: Sequence[PublishObserver]) -> None:
        self.observers = list(observers)

    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        for observer in self.observers:
            observer.posts_finished(session, finished, now)

    def graph_error(self, error: GraphError) -> None:
        for observer in self.observers:
            observer.graph_error(error)

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        for observer in self.observers:
            observer.graph_usage(usage, page_id)

    def paced(self, scope: str, wait_s: float) -> None:
        for observer in self.observers:
            if isinstance(observer, PacingObserver):
                observer.paced(scope, wait_s)

    def pace_usage(self, key: str, ratio: float) -> None:
        for observer in self.observers:
            if isinstance(observer, PacingObserver):
                observer.pace_usage(key, ratio)

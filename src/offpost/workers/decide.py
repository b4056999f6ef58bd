"""Pure decisions of the publish protocol: no I/O, time passed in.

Kept apart from the I/O so that the arithmetic (backoff, what an error means
for a post, what text a post carries) is covered exhaustively by unit tests.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from offpost.graph.errors import (
    GraphAuthError,
    GraphDuplicateError,
    GraphError,
    GraphPermissionError,
    GraphRateLimitedError,
    GraphRejectedError,
    GraphTimeoutError,
    GraphTransientError,
)

#: How far Graph's clock (a post's ``created_time``) and the database's (an attempt's
#: times) may disagree: each attempt's reconciliation window is widened by this on
#: both sides. Both are NTP-disciplined server clocks, normally milliseconds apart;
#: a minute leaves room for a badly drifting one without reaching far back.
RECONCILE_SKEW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits about ``base_s * 2**(n-1)``, capped."""

    base_s: float = 30.0
    cap_s: float = 3600.0

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt (1-based).

        "Equal jitter": half fixed, half random, so retries of a burst spread out
        but never come back sooner than half the nominal delay.
        """
        nominal: float = min(self.cap_s, self.base_s * 2.0 ** max(0, attempt - 1))
        draw: float = (rng or random).random()
        return nominal / 2 + draw * nominal / 2


class Action(enum.Enum):
    """What the worker does with a post after a Graph error."""

    #: Outcome unknown: the post may exist. Retry later, reconciling first.
    RETRY_RECONCILE = "retry_reconcile"
    #: Graph provably did nothing (the request never left): retry later.
    RETRY = "retry"
    #: Throttled: wait, without counting the attempt.
    WAIT = "wait"
    #: The token is dead or the Page token stale: re-derive once, else needs_reauth.
    REAUTH = "reauth"
    #: Permanent: failed, with Graph's message.
    FAIL = "fail"


def action_for(error: GraphError) -> Action:
    """docs/design.md's classification table, as the worker applies it."""
    if isinstance(error, GraphRateLimitedError):
        return Action.WAIT
    if isinstance(error, GraphAuthError):
        return Action.REAUTH
    if isinstance(error, GraphDuplicateError | GraphTransientError):
        return Action.RETRY_RECONCILE if error.outcome_unknown else Action.RETRY
    if isinstance(error, GraphPermissionError | GraphRejectedError):
        return Action.FAIL
    return Action.FAIL


def retry_delay_s(
    error: GraphError,
    attempts: int,
    policy: RetryPolicy,
    *,
    settle_s: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds until the next try after the ``attempts``-th attempt failed with ``error``.

    - A duplicate (``368``/``506``) is almost always our own earlier attempt:
      reconcile at once.
    - After a timeout, Graph may still be working on the call we gave up on: the
      post can appear on the Page after the attempt ended. A reconciliation read
      made too soon would find nothing and publish a second time, so the next
      try waits at least ``settle_s`` (one Graph timeout) beyond the backoff.
    - Otherwise the backoff of ``policy``.
    """
    if isinstance(error, GraphDuplicateError) and error.outcome_unknown:
        return 0.0
    delay = policy.delay_s(attempts, rng)
    if isinstance(error, GraphTimeoutError) and error.outcome_unknown:
        return max(delay, settle_s)
    return delay


def error_document(error: GraphError) -> dict[str, Any]:
    """The ``last_error`` shape of the OpenAPI document for a Graph error."""
    code: int | str | None = error.code
    if code is None:
        code = _offpost_code(error)
    return {
        "code": code,
        "subcode": error.subcode,
        "message": error.message,
        "fbtrace_id": error.fbtrace_id,
    }


def _offpost_code(error: GraphError) -> str:
    names = {
        "GraphTimeoutError": "timeout",
        "GraphConnectionError": "connection_error",
        "GraphMalformedResponseError": "malformed_response",
    }
    return names.get(type(error).__name__, "graph_error")


def post_text(message: str | None, link: str | None, photo_url: str | None) -> str | None:
    """The text Graph gets: the message; for a photo post with a link, the link appended.

    ``/photos`` has no link field, so a link travels in the caption. Reconciliation
    compares against exactly this text.
    """
    if photo_url and link:
        return f"{message}\n{link}" if message else link
    return message

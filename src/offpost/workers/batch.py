"""One Celery message, a batch of posts: claim once, then publish them side by side.

The protocol of :mod:`offpost.workers.publish` is per post; here it runs for a
whole batch with one statement per step instead of one per post, which is what
lets a burst of thousands of due posts drain at the speed of the Graph calls:

1. ``claim_for_publishing`` takes the lease on the posts still ``queued`` (one
   UPDATE); a duplicate delivery or a canceled post is dropped.
2. Credentials and the Page tokens the batch needs are read once (two SELECTs),
   the shared rate-limit blocks once (one Redis MGET).
3. Posts on the common path — active credential, Page token at hand, no
   reconciliation owed, attempts left, nothing blocked — get their attempt rows
   in one INSERT, **committed before any of their Graph calls**.
4. Their Graph calls run concurrently on the worker's thread pool; a call is
   not started once the post's lease might end before it finishes (the post
   goes back to ``scheduled`` and its unsent attempt is removed).
5. What Graph created is recorded in one transaction: the guarded ``leave_published``
   of every post (one ``UPDATE … FROM (VALUES …)`` that only the lease holder
   can make), the attempts closed, and the observers (metrics, webhook outbox)
   told in that same transaction.

Everything else — a post owing reconciliation, a dead or deleted credential, a
missing Page token, a rate-limit block, and every Graph error after its attempt
started — goes through :class:`~offpost.workers.publish.PostPublisher`, one post
at a time, exactly as before. A worker that dies anywhere in between leaves
attempt rows in flight and leases that run out: the reaper then reconciles, as
for a single post.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy import select

from offpost.graph.errors import GraphError
from offpost.graph.types import PublishResult
from offpost.models import Credential, CredentialStatus
from offpost.models.attempt import AttemptOutcome
from offpost.models.credential import CredentialPage
from offpost.models.transitions import (
    ClaimedPost,
    Published,
    begin_attempts,
    claim_for_publishing,
    close_attempts,
    finish_published,
)
from offpost.workers import ratelimit
from offpost.workers.observe import Finished, Outcome
from offpost.workers.publish import (
    PostPublisher,
    PublishContext,
    Tokens,
    lease_too_short,
    publish_call,
    publish_guarded,
    run_guarded,
    sent_by,
)

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    claimed: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass(frozen=True, slots=True)
class Ready:
    """A claimed post on the common path, with the tokens to publish it."""

    post: ClaimedPost
    tokens: Tokens


def publish_batch(ctx: PublishContext, post_ids: list[str]) -> BatchResult:
    """Publish the posts of one message; returns what became of them."""
    with ctx.sessions.begin() as session:
        claimed = claim_for_publishing(session, post_ids, ctx.worker, ctx.clock(), ctx.lease)
    result = BatchResult(claimed=len(claimed))
    if len(claimed) < len(post_ids):
        logger.info(
            "%d of %d posts were not queued any more (duplicate delivery or canceled)",
            len(post_ids) - len(claimed),
            len(post_ids),
            extra={"action": "claim_dropped"},
        )
    if not claimed:
        return result
    ready, one_by_one = ([], claimed) if ctx.stopping.is_set() else sort_out(ctx, claimed)
    singles = [ctx.pool.submit(publish_guarded, ctx, post) for post in one_by_one]
    for outcome in publish_ready(ctx, ready):
        result.count(outcome)
    for future in singles:
        result.count(future.result())
    if ready:
        logger.info(
            "batch of %d: %s",
            len(claimed),
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.outcomes.items())),
            extra={"action": "batch_done", "claimed": len(claimed)},
        )
    return result


def sort_out(
    ctx: PublishContext, claimed: Sequence[ClaimedPost]
) -> tuple[list[Ready], list[ClaimedPost]]:
    """Split a claimed batch: the common path (with tokens) and the posts to take one by one."""
    credential_ids = {post.credential_id for post in claimed}
    targets = {post.target for post in claimed}
    with ctx.sessions() as session:
        credentials = {
            row.id: row
            for row in session.execute(
                select(
                    Credential.id, Credential.status, Credential.fb_user_id, Credential.user_token
                ).where(Credential.id.in_(credential_ids))
            )
        }
        page_tokens = {
            (row.credential_id, row.page_id): row.page_token
            for row in session.execute(
                select(
                    CredentialPage.credential_id, CredentialPage.page_id, CredentialPage.page_token
                ).where(
                    CredentialPage.credential_id.in_(credential_ids),
                    CredentialPage.page_id.in_(targets),
                )
            )
        }
    keys = {
        post.id: ratelimit.keys_for_call(ctx.app_id, post.target, credentials[cid].fb_user_id)
        for post in claimed
        if (cid := post.credential_id) in credentials
    }
    blocked = ctx.blocks.blocked({key for post_keys in keys.values() for key in post_keys})
    ready: list[Ready] = []
    one_by_one: list[ClaimedPost] = []
    for post in claimed:
        credential = credentials.get(post.credential_id)
        page_token = page_tokens.get((post.credential_id, post.target))
        if (
            credential is None
            or credential.status != CredentialStatus.ACTIVE
            or credential.user_token is None
            or page_token is None
            or post.reconcile_since is not None
            or post.attempts >= post.max_attempts
            or any(key in blocked for key in keys[post.id])
        ):
            one_by_one.append(post)
        else:
            tokens = Tokens(credential.fb_user_id, credential.user_token, page_token)
            ready.append(Ready(post, tokens))
    return ready, one_by_one


def publish_ready(ctx: PublishContext, ready: Sequence[Ready]) -> list[Outcome]:
    """Steps 3 to 5 for the posts on the common path; one outcome per post."""
    if not ready:
        return []
    started_at = ctx.clock()
    with ctx.sessions.begin() as session:
        attempt_ids = begin_attempts(
            session, {r.post.id: sent_by(r.post) for r in ready}, ctx.worker, started_at
        )
    calls: list[Future[PublishResult]] = [ctx.pool.submit(_call_graph, ctx, r) for r in ready]
    outcomes: list[Outcome] = []
    published: list[tuple[Ready, PublishResult]] = []
    for item, call in zip(ready, calls, strict=True):
        try:
            reply = call.result()
        except LeaseTooShort:
            publisher = PostPublisher(ctx, item.post, item.tokens)
            step = partial(publisher.hand_back_unstarted, attempt_ids[item.post.id])
            outcomes.append(run_guarded(item.post, step))
            continue
        except GraphError as exc:
            # Errors are rare and each means something different: the per-post path.
            publisher = PostPublisher(ctx, item.post, item.tokens)
            step = partial(publisher.attempt_failed, attempt_ids[item.post.id], started_at, exc)
            outcomes.append(run_guarded(item.post, step))
            continue
        except Exception:
            logger.exception(
                "publishing %s failed unexpectedly; reconciled once its lease runs out",
                item.post.id,
                extra={"action": "publish_crashed", "post_id": item.post.id},
            )
            outcomes.append(Outcome.CRASHED)
            continue
        published.append((item, reply))
    if published:
        outcomes += _record(ctx, published, attempt_ids, started_at)
    return outcomes


class LeaseTooShort(Exception):
    """The call was not started: the post's lease might end before it could finish."""


def _call_graph(ctx: PublishContext, item: Ready) -> PublishResult:
    if lease_too_short(ctx, item.post):
        raise LeaseTooShort
    return publish_call(ctx, item.post, item.tokens.page_token or "")


def _record(
    ctx: PublishContext,
    published: Sequence[tuple[Ready, PublishResult]],
    attempt_ids: dict[str, str],
    started_at: datetime,
) -> list[Outcome]:
    """Step 5: every post Graph created, recorded in one transaction."""
    now = ctx.clock()
    rows = [
        Published(item.post.id, reply.post_id or reply.id, item.post.attempts + 1)
        for item, reply in published
    ]
    try:
        with ctx.sessions.begin() as session:
            held = finish_published(session, rows, ctx.worker, now)
            close_attempts(
                session,
                [attempt_ids[item.post.id] for item, _ in published],
                AttemptOutcome.PUBLISHED,
                now,
            )
            ctx.observer.posts_finished(
                session,
                [
                    Finished(
                        item.post,
                        Outcome.PUBLISHED,
                        {
                            "status": "published",
                            "graph_post_id": row.graph_post_id,
                            "attempts": row.attempts,
                        },
                        started_at,
                    )
                    for (item, _), row in zip(published, rows, strict=True)
                    if item.post.id in held
                ],
                now,
            )
    except Exception:
        # Graph created these posts, but the database did not take it: their
        # leases run out and reconciliation adopts each one. Never publish again.
        logger.exception(
            "could not record %d published posts; reconciliation will adopt them",
            len(rows),
            extra={"action": "publish_crashed"},
        )
        return [Outcome.CRASHED] * len(rows)
    outcomes: list[Outcome] = []
    for row in rows:
        if row.post_id in held:
            logger.debug(
                "published %s as %s",
                row.post_id,
                row.graph_post_id,
                extra={"action": "post_published", "post_id": row.post_id},
            )
            outcomes.append(Outcome.PUBLISHED)
        else:
            # The lease ran out mid-call and the reaper took the post back; the
            # next worker will reconcile and adopt this very Graph post.
            logger.warning(
                "published %s after losing its lease; reconciliation will adopt it",
                row.post_id,
                extra={"action": "lease_lost", "post_id": row.post_id},
            )
            outcomes.append(Outcome.LEASE_LOST)
    return outcomes

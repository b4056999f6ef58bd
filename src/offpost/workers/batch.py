"""One Celery message, a batch of posts: claim once, sort out, then publish.

1. ``claim_for_publishing`` takes the lease on the posts still ``queued`` (one
   UPDATE); a duplicate delivery or a canceled post is dropped.
2. Credentials and the Page tokens the batch needs are read once (two SELECTs),
   the shared rate-limit blocks once (one Redis MGET).
3. Posts on the common path — active credential, Page token at hand, no
   reconciliation owed, attempts left, nothing blocked — go to
   :func:`~offpost.workers.publish.publish_ready` together: one statement per
   step for all of them, their Graph calls side by side on the worker's pool.
4. Every other post goes through :class:`~offpost.workers.publish.PostPublisher`
   on its own (reconciliation, a credential to check, a token to derive, a block
   to wait out); when it gets to its Graph call, it too goes through
   ``publish_ready``, as a batch of one. There is one publish protocol.

A worker that dies anywhere in between leaves attempt rows in flight and leases
that run out: the reaper then reconciles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import select

from offpost.graph.errors import GraphError
from offpost.models import Credential, CredentialStatus
from offpost.models.credential import CredentialPage
from offpost.models.transitions import (
    ClaimedPost,
    claim_for_publishing,
)
from offpost.workers import ratelimit
from offpost.workers.observe import Outcome
from offpost.workers.publish import (
    PostPublisher,
    PublishContext,
    Ready,
    Tokens,
    feed_since,
    graph_id_holders,
    pace,
    publish_guarded,
    publish_ready,
    run_guarded,
    sought_for,
)
from offpost.workers.reconcile import find_published

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    claimed: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


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
    ready, one_by_one, owed = ([], claimed, []) if ctx.stopping.is_set() else sort_out(ctx, claimed)
    if owed:
        found, unfound, by_themselves = reconcile_together(ctx, owed)
        for outcome in found:
            result.count(outcome)
        ready += unfound
        one_by_one += by_themselves
    ready, waiting = pace(ctx, ready)
    for outcome in waiting:
        result.count(outcome)
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
) -> tuple[list[Ready], list[ClaimedPost], list[Ready]]:
    """Split a claimed batch: the common path (with tokens), the posts to take one by one,
    and the posts of the common path that owe a reconciliation first."""
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
    owed: list[Ready] = []
    for post in claimed:
        credential = credentials.get(post.credential_id)
        page_token = page_tokens.get((post.credential_id, post.target))
        if (
            credential is None
            or credential.status is CredentialStatus.DELETED
            or credential.user_token is None
            or page_token is None
            or post.media is not None
            or any(key in blocked for key in keys[post.id])
        ):
            one_by_one.append(post)
            continue
        tokens = Tokens(credential.fb_user_id, credential.user_token, page_token)
        if post.reconcile_since is not None:
            owed.append(Ready(post, tokens))
        elif post.attempts >= post.max_attempts:
            one_by_one.append(post)
        else:
            ready.append(Ready(post, tokens))
    return ready, one_by_one, owed


def reconcile_together(
    ctx: PublishContext, owed: Sequence[Ready]
) -> tuple[list[Outcome], list[Ready], list[ClaimedPost]]:
    """Reconcile the posts of ``owed`` with one read of each Page's feed for all its posts.

    The posts of one batch request whose reply was lost come back due together (one
    message): reading the Page once for each of them would cost as many reads as
    posts. Returns the outcomes of the posts settled here (found and adopted as
    ``reconciled``, or not found with no attempt left: failed), the posts not found
    with attempts left (to publish now), and the posts whose Page could not be read
    (each meets the error on its own path).
    """
    sought = sought_for(ctx, [item.post for item in owed])
    by_page: dict[str, list[Ready]] = {}
    for item in owed:
        by_page.setdefault(item.post.target, []).append(item)
    found: list[Outcome] = []
    unfound: list[Ready] = []
    by_themselves: list[ClaimedPost] = []
    for page_id, items in by_page.items():
        looked_for = [s for item in items for s in sought[item.post.id]]
        if not looked_for:
            # Attempt rows commit before their Graph call: none means no call was made.
            unfound += items
            continue
        try:
            feed = ctx.graph.page_posts(
                page_id, items[0].tokens.page_token or "", since=feed_since(looked_for)
            )
        except GraphError:
            by_themselves += [item.post for item in items]
            continue
        holders = graph_id_holders(ctx, feed.posts)
        for item in items:
            post = item.post
            taken = {graph_id for graph_id, holder in holders.items() if holder != post.id}
            made = find_published(feed.posts, sought[post.id], app_id=ctx.app_id, taken=taken)
            if made is None:
                unfound.append(item)
                continue
            holders[made.id] = post.id
            publisher = PostPublisher(ctx, post, item.tokens)
            found.append(
                run_guarded(
                    post,
                    partial(publisher.record_reconciled, made.id),
                )
            )
    logger.info(
        "reconciled %d posts with one read of each of %d Pages: %d found",
        len(owed),
        len(by_page),
        len(found),
        extra={"action": "reconciled_together", "count": len(owed)},
    )
    publish_now: list[Ready] = []
    for item in unfound:
        if item.post.attempts < item.post.max_attempts:
            publish_now.append(item)
        else:
            found.append(
                run_guarded(item.post, PostPublisher(ctx, item.post, item.tokens).exhausted)
            )
    return found, publish_now, by_themselves

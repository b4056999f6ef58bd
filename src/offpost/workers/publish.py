"""The publish protocol: token → (reconcile) → record the attempt → call → record.

:func:`publish_ready` is the call itself, for any number of posts at once (a
batch's common path, or one post): their attempt rows in one INSERT,
**committed before any Graph call**; the calls, side by side (or inline for
one); what Graph created recorded in one transaction — the guarded
``leave_published`` of every post (only the lease holder's statement changes a
row), the attempts closed, the observers (metrics, webhook outbox) told in that
same transaction. A call is not started once its post's lease might end before
it finishes (the post goes back to ``scheduled`` and its unsent attempt is
removed).

:class:`PostPublisher` takes a post through what comes before and after:

1. ``claim_for_publishing`` took the lease on the post (the batch did); a
   duplicate delivery or a canceled post was dropped there.
2. The credential's Page token comes from the store; a missing one is derived.
3. A post owing reconciliation (``reconcile_since``) is first searched for on the
   Page; found → ``published`` with outcome ``reconciled``, no Graph write.
4. Shared rate-limit blocks are honoured: the post waits, no attempt is counted.
5. The attempt: :func:`publish_ready`, for a batch of this one post.
6. A Graph error is acted on (:meth:`PostPublisher.attempt_failed`): what each
   means is :func:`offpost.workers.decide.action_for`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, lazyload, sessionmaker

from offpost.graph.client import GraphClient
from offpost.graph.errors import (
    GraphAuthError,
    GraphError,
    GraphPermissionError,
    GraphRateLimitedError,
)
from offpost.graph.types import BatchPublish, FeedPost, PublishResult
from offpost.graph.usage import GraphUsage
from offpost.media.spec import is_multi_step
from offpost.media.store import MediaStore
from offpost.models import Credential, CredentialStatus, PageTokenStatus, Post
from offpost.models.attempt import Attempt, AttemptOutcome, Sent
from offpost.models.base import utcnow
from offpost.models.credential import CredentialPage
from offpost.models.post import OUTCOME_UNKNOWN_AT_DELETION
from offpost.models.transitions import (
    ClaimedPost,
    Published,
    Written,
    begin_attempt,
    begin_attempts,
    close_attempts,
    finish_published,
    leave_canceled,
    leave_failed,
    leave_needs_reauth,
    leave_published,
    leave_scheduled,
)
from offpost.tokens.death import ciphertext_if_still, mark_pages_dead, mark_user_token_dead
from offpost.workers import ratelimit
from offpost.workers.decide import (
    Action,
    RetryPolicy,
    action_for,
    error_document,
    post_text,
    retry_delay_s,
)
from offpost.workers.media_publish import MediaPost
from offpost.workers.observe import Finished, NullObserver, Outcome, PublishObserver
from offpost.workers.pacing import NullPacer, Pacer, pacing_keys, readings_for
from offpost.workers.reconcile import Sought, find_published

logger = logging.getLogger(__name__)


@dataclass
class PublishContext:
    """A worker process's resources, built once at process start."""

    sessions: sessionmaker[Session]
    graph: GraphClient
    blocks: ratelimit.BlockStore
    app_id: str
    worker: str
    lease: timedelta
    retry: RetryPolicy
    pool: ThreadPoolExecutor
    clock: Callable[[], datetime] = utcnow
    #: Set when the worker is shutting down: posts not yet started are handed back.
    stopping: threading.Event = field(default_factory=threading.Event)
    rng: random.Random = field(default_factory=random.Random)
    #: After a timeout, the least wait before the post is tried (and reconciled)
    #: again: the Graph call may still be running (see ``decide.retry_delay_s``).
    timeout_settle_s: float = 0.0
    #: The longest a Graph call may run once sent (about twice the Graph timeout):
    #: no call starts later than this before its post's lease ends.
    call_bound_s: float = 0.0
    #: Told of every outcome inside its transaction (metrics, webhook outbox).
    observer: PublishObserver = field(default_factory=NullObserver)
    #: Where uploaded media are read from (posts with photos, a video or a Reel).
    media: MediaStore | None = None
    #: After a video by URL whose answer was lost, the least wait before it is looked for.
    url_video_settle_s: float = 600.0
    #: Publishes per Graph batch request (below 2: every publish is its own request).
    graph_batch: int = 0
    #: Keeps calls under Graph's rate limits (docs/pacing.md); every call asks it first.
    pacer: Pacer = field(default_factory=NullPacer)


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a post needs of its credential to be published."""

    fb_user_id: str
    user_token: str
    #: ``None`` when the store has none for the Page: it is derived first.
    page_token: str | None


@dataclass(frozen=True, slots=True)
class Ready:
    """A claimed post on the common path, with the tokens to publish it."""

    post: ClaimedPost
    tokens: Tokens
    #: The Page token was derived again for this post already (a 190 then is final).
    rederived: bool = False


def publish_guarded(ctx: PublishContext, post: ClaimedPost) -> Outcome:
    """The whole protocol for one claimed post; never raises."""
    return run_guarded(post, PostPublisher(ctx, post).run)


def lease_too_short(ctx: PublishContext, post: ClaimedPost) -> bool:
    """Whether a Graph call started now might outlive the post's lease.

    Once the lease ends the reaper takes the post back and another worker may
    reconcile it and publish it while this call is still running: a second post.
    A call is therefore only started while the lease outlasts the longest call.
    Posts wait for a thread of the pool after their claim, so this can happen
    when Graph is slow and the pool is full.

    The lease's end is the database's (see :func:`claim_for_publishing`), counted
    on this process's monotonic clock from the claim's reply: a machine whose
    wall clock is off cannot believe it has time it has not.
    """
    if post.lease_deadline is None:
        return False
    return time.monotonic() + ctx.call_bound_s > post.lease_deadline


def sent_by(post: ClaimedPost) -> Sent:
    """What :func:`publish_call` sends for ``post``, as its attempt records it."""
    text = post_text(post.message, post.link, post.photo_url)
    return Sent.of(text, None if post.photo_url else post.link, post.photo_url)


def publish_call(ctx: PublishContext, post: ClaimedPost, page_token: str) -> PublishResult:
    """The one Graph write for a post (a photo post or a feed post). Its usage headers
    are counted and, when high, block the app or the Page for every worker."""
    text = post_text(post.message, post.link, post.photo_url)
    if post.photo_url:
        result = ctx.graph.publish_photo(post.target, page_token, url=post.photo_url, caption=text)
    else:
        result = ctx.graph.publish_feed(post.target, page_token, message=text, link=post.link)
    count_usage(ctx, result.usage, post.target)
    return result


def count_usage(
    ctx: PublishContext, usage: GraphUsage, page_id: str, *, pace: bool = True
) -> list[tuple[str, int]]:
    """What a reply's usage headers say, told to the metrics, the rate limiter and (with
    ``pace``) the pacer; returns the pacer's readings."""
    ctx.observer.graph_usage(usage, page_id)
    for key, wait_s in ratelimit.usage_blocks(usage, app_id=ctx.app_id, page_id=page_id):
        ctx.blocks.block(key, wait_s)
    readings = readings_for(usage, app_id=ctx.app_id, page_id=page_id)
    if pace and readings:
        ctx.pacer.observe(readings)
    return readings


def run_guarded(post: ClaimedPost, step: Callable[[], Outcome]) -> Outcome:
    """Run one post's ``step``; an unexpected error leaves its lease to run out."""
    try:
        return step()
    except Exception:
        # An unexpected error (database down, a bug) leaves the lease to run out:
        # the reaper then reconciles and retries. Never guess an outcome here.
        logger.exception(
            "publishing %s failed unexpectedly; its lease will expire and it will be reconciled",
            post.id,
            extra={"action": "publish_crashed", "post_id": post.id},
        )
        return Outcome.CRASHED


class PostPublisher:
    """One claimed post through the protocol (one thread, one post)."""

    def __init__(
        self,
        ctx: PublishContext,
        post: ClaimedPost,
        tokens: Tokens | None = None,
        *,
        rederived: bool = False,
    ) -> None:
        self.ctx = ctx
        self.post = post
        self.rederived = rederived
        if tokens is not None:
            self.fb_user_id = tokens.fb_user_id
            self.user_token = tokens.user_token
            self.page_token = tokens.page_token

    # -- the protocol ------------------------------------------------------------------

    def run(self) -> Outcome:
        ctx, post = self.ctx, self.post
        if ctx.stopping.is_set():
            return self._release(ctx.clock(), Outcome.HANDED_BACK)
        credential, page = self._credential()
        if credential is None:
            if post.reconcile_since is not None:
                # The post may be on the Page, and without a token nobody can look.
                return self._finish(
                    Outcome.FAILED,
                    leave_failed,
                    last_error=_offpost_error("outcome_unknown", OUTCOME_UNKNOWN_AT_DELETION),
                )
            return self._finish(
                Outcome.CANCELED,
                leave_canceled,
                last_error=_offpost_error("credential_deleted", "the credential was deleted"),
            )
        if page is not None and page.token_status is PageTokenStatus.DEAD:
            # Its Page token died and could not be derived again: wait for a fresh one.
            return self._finish(Outcome.NEEDS_REAUTH, leave_needs_reauth)
        self.fb_user_id = credential.fb_user_id
        self.user_token = credential.user_token or ""
        self.page_token = page.page_token if page else None

        wait_s = ratelimit.wait_s(
            ctx.blocks, ratelimit.keys_for_call(ctx.app_id, post.target, self.fb_user_id)
        )
        if wait_s > 0:
            return self._release(ctx.clock() + timedelta(seconds=wait_s), Outcome.WAITING)
        try:
            if self.page_token is None:
                self._rederive_page_token()
            if post.reconcile_since is not None:
                found = self._reconcile(post.reconcile_since)
                if found is not None:
                    return found
            if post.attempts >= post.max_attempts:
                return self.exhausted()
            [paced_s] = ctx.pacer.admit([pacing_keys(ctx.app_id, post.target, page_token=True)])
            if paced_s > 0:
                return self._release(ctx.clock() + timedelta(seconds=paced_s), Outcome.WAITING)
            return self._attempt()
        except GraphError as exc:
            # Errors outside an attempt (token checks, reading the Page) cost no attempt.
            return self._after_error_without_attempt(exc)

    def _attempt(self) -> Outcome:
        """One attempt: the batch's protocol, for a batch of this one post (a post with
        media: its steps and final call, :mod:`offpost.workers.media_publish`)."""
        if is_multi_step(self.post.media):
            return MediaPost(self).attempt()
        tokens = Tokens(self.fb_user_id, self.user_token, self.page_token)
        [outcome] = publish_ready(
            self.ctx, [Ready(self.post, tokens, rederived=self.rederived)], inline=True
        )
        return outcome

    # -- outcomes ----------------------------------------------------------------------

    def exhausted(self) -> Outcome:
        """No attempt left, and nothing found on the Page: the post has failed."""
        if is_multi_step(self.post.media):
            MediaPost(self).remove_leftovers()
        return self._finish(Outcome.FAILED, leave_failed, reconcile_since=None)

    def record_reconciled(self, graph_post_id: str) -> Outcome:
        """An earlier attempt made ``graph_post_id``: the post is published, as that."""
        return self._record_published(None, graph_post_id, AttemptOutcome.RECONCILED, counted=False)

    def attempt_failed(
        self,
        attempt_id: str,
        started_at: datetime,
        exc: GraphError,
        *,
        settle_s: float | None = None,
        due_at: datetime | None = None,
    ) -> Outcome:
        """What follows the failed Graph call of an attempt (this one's, or a batch's).

        ``settle_s``: after an unknown outcome, the least wait before the next try
        looks for what the call made (a kind Graph shows only minutes later).
        ``due_at``: after an unknown outcome, when to try again instead of after this
        post's own backoff (the posts of one batch request come back together)."""
        ctx, post = self.ctx, self.post
        action = action_for(exc)
        ctx.observer.graph_error(exc)
        now = ctx.clock()
        if action is Action.REAUTH and not self.rederived:
            self._close_attempt(attempt_id, AttemptOutcome.RETRY, exc, now)
            try:
                self._rederive_page_token()
            except GraphError as again:
                return self._after_error_without_attempt(again)
            return self._attempt()
        if action is Action.REAUTH:
            self._close_attempt(attempt_id, AttemptOutcome.NEEDS_REAUTH, exc, now)
            return self._page_dead(exc)
        if action is Action.WAIT:
            assert isinstance(exc, GraphRateLimitedError)
            self._block(exc)
            self._close_attempt(attempt_id, AttemptOutcome.RETRY, exc, now)
            return self._release(
                now + timedelta(seconds=exc.retry_after_s),
                Outcome.WAITING,
                last_error=error_document(exc),
            )
        if action is Action.FAIL:
            self._close_attempt(attempt_id, AttemptOutcome.FAILED, exc, now)
            return self._finish(
                Outcome.FAILED,
                leave_failed,
                attempts=post.attempts + 1,
                last_error=error_document(exc),
                reconcile_since=None,
            )
        # A retry; when the outcome is unknown the next worker reconciles first.
        attempts = post.attempts + 1
        delay_s = retry_delay_s(
            exc,
            attempts,
            ctx.retry,
            settle_s=ctx.timeout_settle_s,
            rng=ctx.rng,
        )
        if settle_s is not None and action is Action.RETRY_RECONCILE:
            delay_s = max(delay_s, settle_s)
        next_try = now + timedelta(seconds=delay_s)
        if due_at is not None and action is Action.RETRY_RECONCILE:
            next_try = due_at
        since = post.reconcile_since
        if action is Action.RETRY_RECONCILE:
            since = min(since, started_at) if since else started_at
        self._close_attempt(attempt_id, AttemptOutcome.RETRY, exc, now)
        return self._finish(
            Outcome.RETRY,
            leave_scheduled,
            due_at=next_try,
            attempts=attempts,
            last_error=error_document(exc),
            reconcile_since=since,
        )

    def _after_error_without_attempt(self, exc: GraphError) -> Outcome:
        action = action_for(exc)
        self.ctx.observer.graph_error(exc)
        now = self.ctx.clock()
        if action is Action.REAUTH:
            return self._page_dead(exc)
        if action is Action.WAIT:
            assert isinstance(exc, GraphRateLimitedError)
            self._block(exc)
            return self._release(now + timedelta(seconds=exc.retry_after_s), Outcome.WAITING)
        if action is Action.FAIL:
            return self._finish(Outcome.FAILED, leave_failed, last_error=error_document(exc))
        delay_s = self.ctx.retry.delay_s(max(1, self.post.attempts), self.ctx.rng)
        return self._release(
            now + timedelta(seconds=delay_s), Outcome.RETRY, last_error=error_document(exc)
        )

    def _record_published(
        self, attempt_id: str | None, graph_post_id: str, outcome: AttemptOutcome, *, counted: bool
    ) -> Outcome:
        ctx, post = self.ctx, self.post
        now = ctx.clock()
        with ctx.sessions.begin() as session:
            written = leave_published(
                session,
                post.id,
                ctx.worker,
                now,
                graph_post_id=graph_post_id,
                attempts=post.attempts + (1 if counted else 0),
            )
            held = written is not None
            if written is not None:
                ctx.observer.posts_finished(
                    session, [Finished(post, Outcome(outcome.value), written)], now
                )
                if attempt_id is None:
                    attempt = begin_attempt(session, post.id, ctx.worker, now)
                    attempt_id = attempt.id
                session.execute(
                    update(Attempt)
                    .where(Attempt.id == attempt_id)
                    .values(outcome=outcome, finished_at=now)
                )
        if not held:
            # The lease ran out mid-call and the reaper took the post back. The attempt
            # stays open (its outcome unknown to the post), so the next worker's
            # reconciliation looks for, and adopts, this very Graph post.
            logger.warning(
                "published %s after losing its lease; reconciliation will adopt it",
                post.id,
                extra={"action": "lease_lost", "post_id": post.id},
            )
            return Outcome.LEASE_LOST
        logger.info(
            "published %s on %s as %s (%s)",
            post.id,
            post.target,
            graph_post_id,
            outcome.value,
            extra={"action": "post_published", "post_id": post.id, "graph_post_id": graph_post_id},
        )
        return Outcome(outcome.value)

    def _finish(
        self,
        outcome: Outcome,
        leave: Callable[..., Written],
        *,
        drop_attempt: str | None = None,
        **changes: Any,
    ) -> Outcome:
        """Leave ``publishing`` by the named transition ``leave`` (of
        :mod:`offpost.models.transitions`) with ``changes``, as the lease holder."""
        now = self.ctx.clock()
        with self.ctx.sessions.begin() as session:
            written = leave(session, self.post.id, self.ctx.worker, now, **changes)
            if written is not None:
                if drop_attempt is not None:
                    session.execute(delete(Attempt).where(Attempt.id == drop_attempt))
                self.ctx.observer.posts_finished(
                    session, [Finished(self.post, outcome, written)], now
                )
        if written is None:
            logger.warning(
                "lost the lease on %s before recording %s",
                self.post.id,
                outcome,
                extra={"action": "lease_lost", "post_id": self.post.id},
            )
            return Outcome.LEASE_LOST
        logger.info(
            "post %s: %s",
            self.post.id,
            outcome,
            extra={"action": f"post_{outcome}", "post_id": self.post.id},
        )
        return outcome

    def _release(self, due_at: datetime, outcome: Outcome, **values: Any) -> Outcome:
        """Back to ``scheduled`` without spending an attempt."""
        return self._finish(outcome, leave_scheduled, due_at=due_at, **values)

    def hand_back_unstarted(self, attempt_id: str | None) -> Outcome:
        """Back to ``scheduled``, due now, without calling Graph: see :func:`lease_too_short`.

        ``attempt_id`` is an attempt opened for the call (by a batch): never sent, it is
        removed."""
        logger.warning(
            "not starting the Graph call for %s: its lease ends within the %.0f s a call may "
            "take; handed back to be published by the next worker",
            self.post.id,
            self.ctx.call_bound_s,
            extra={"action": "lease_too_short", "post_id": self.post.id},
        )
        return self._finish(
            Outcome.HANDED_BACK,
            leave_scheduled,
            due_at=self.ctx.clock(),
            drop_attempt=attempt_id,
        )

    def _close_attempt(
        self, attempt_id: str, outcome: AttemptOutcome, exc: GraphError, now: datetime
    ) -> None:
        doc = error_document(exc)
        with self.ctx.sessions.begin() as session:
            session.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(
                    outcome=outcome,
                    finished_at=now,
                    http_status=exc.http_status,
                    error_code=str(doc["code"]),
                    error_subcode=exc.subcode,
                    error_message=exc.message,
                    fbtrace_id=exc.fbtrace_id,
                )
            )

    # -- tokens ------------------------------------------------------------------------

    def _credential(self) -> tuple[Credential | None, CredentialPage | None]:
        """The post's credential and its Page (tokens decrypted), or ``(None, None)``.

        Only the post's own Page is loaded: a credential may hold hundreds of Pages,
        each with a token to decrypt (docs/benchmarks.md, "Small measurements").
        """
        with self.ctx.sessions() as session:
            credential = session.get(
                Credential, self.post.credential_id, options=[lazyload(Credential.pages)]
            )
            if (
                credential is None
                or credential.status == CredentialStatus.DELETED
                or credential.user_token is None
            ):
                return None, None
            page = session.get(CredentialPage, (self.post.credential_id, self.post.target))
            session.expunge_all()
            return credential, page

    def _rederive_page_token(self) -> None:
        """A stale Page token, a user token still valid: derive it again (docs/design.md)."""
        ctx, post = self.ctx, self.post
        self.rederived = True
        info = ctx.graph.debug_token(self.user_token)
        if not info.is_valid:
            # Nothing to derive a Page token from; the Page's posts wait (see below).
            with ctx.sessions.begin() as session:
                raw = ciphertext_if_still(session, post.credential_id, self.user_token)
                if raw is not None:
                    mark_user_token_dead(
                        session, post.credential_id, ctx.clock(), expected_token=raw
                    )
            raise GraphAuthError(
                info.error.message if info.error else "the user token is no longer valid",
                code=info.error.code if info.error else 190,
                subcode=info.error.subcode if info.error else None,
            )
        try:
            derived = ctx.graph.page_token(post.target, self.user_token)
        except GraphPermissionError as exc:
            # The user can no longer get a token for this Page (their role on it is
            # gone): the Page token is dead, not the post.
            raise GraphAuthError(
                f"no Page token for {post.target} can be derived: {exc.message}",
                code=exc.code,
                subcode=exc.subcode,
            ) from exc
        self.page_token = derived.access_token
        with ctx.sessions.begin() as session:
            page = session.get(CredentialPage, (post.credential_id, post.target))
            if page is not None:
                page.page_token = derived.access_token
        logger.info(
            "re-derived the Page token of %s",
            post.target,
            extra={"action": "page_token_rederived", "post_id": post.id},
        )

    def _page_dead(self, exc: GraphError) -> Outcome:
        """Graph rejects the Page token and it could not be derived again: this Page's
        posts wait for a fresh token (the credential's other Pages go on).

        Unless the client stored a fresh token while this call was failing: then the
        post is simply tried again with it.
        """
        ctx, post = self.ctx, self.post
        now = ctx.clock()
        with ctx.sessions.begin() as session:
            raw = ciphertext_if_still(session, post.credential_id, self.user_token)
            if raw is not None:
                mark_pages_dead(session, post.credential_id, [post.target], now, expected_token=raw)
        if raw is None:
            logger.info(
                "credential %s has a fresh token since this call: trying %s again",
                post.credential_id,
                post.id,
                extra={"action": "credential_renewed", "post_id": post.id},
            )
            return self._release(now, Outcome.RETRY)
        return self._finish(
            Outcome.NEEDS_REAUTH,
            leave_needs_reauth,
            last_error=error_document(exc),
        )

    # -- rate limits and reconciliation ------------------------------------------------

    def _block(self, exc: GraphRateLimitedError) -> None:
        key = ratelimit.key_for(
            exc, app_id=self.ctx.app_id, page_id=self.post.target, fb_user_id=self.fb_user_id
        )
        self.ctx.blocks.block(key, exc.retry_after_s)

    def _reconcile(self, since: datetime) -> Outcome | None:
        """Adopt the post an earlier attempt may have made; None when there is none."""
        ctx, post = self.ctx, self.post
        if is_multi_step(post.media):
            graph_id = MediaPost(self).reconcile(since)
            if graph_id is None:
                return None
            return self._record_published(None, graph_id, AttemptOutcome.RECONCILED, counted=False)
        sought = sought_for(ctx, [post])[post.id]
        if not sought:
            # Attempt rows commit before their Graph call: none means no call was made.
            logger.info(
                "reconciled %s: no attempt since %s reached Graph, publishing",
                post.id,
                since.isoformat(),
                extra={"action": "reconcile_not_found", "post_id": post.id},
            )
            return None
        feed = ctx.graph.page_posts(post.target, self.page_token or "", since=feed_since(sought))
        holders = graph_id_holders(ctx, feed.posts)
        taken = {graph_id for graph_id, holder in holders.items() if holder != post.id}
        found = find_published(feed.posts, sought, app_id=ctx.app_id, taken=taken)
        if found is None:
            logger.info(
                "reconciled %s: not on the Page, publishing again",
                post.id,
                extra={"action": "reconcile_not_found", "post_id": post.id},
            )
            return None
        return self._record_published(None, found.id, AttemptOutcome.RECONCILED, counted=False)


def pace(ctx: PublishContext, ready: Sequence[Ready]) -> tuple[list[Ready], list[Outcome]]:
    """Ask the pacer for every call of ``ready`` at once (docs/pacing.md): the posts
    whose calls may go now, and what became of the others (back to ``scheduled``,
    due when the pacer said, no attempt spent; all in one transaction)."""
    if not ready:
        return [], []
    waits = ctx.pacer.admit(
        [pacing_keys(ctx.app_id, item.post.target, page_token=True) for item in ready]
    )
    go = [item for item, wait_s in zip(ready, waits, strict=True) if wait_s <= 0]
    held = [(item.post, wait_s) for item, wait_s in zip(ready, waits, strict=True) if wait_s > 0]
    if not held:
        return go, []
    now = ctx.clock()
    outcomes: list[Outcome] = []
    with ctx.sessions.begin() as session:
        finished: list[Finished] = []
        for post, wait_s in held:
            written = leave_scheduled(
                session, post.id, ctx.worker, now, due_at=now + timedelta(seconds=wait_s)
            )
            if written is None:
                outcomes.append(Outcome.LEASE_LOST)
                continue
            finished.append(Finished(post, Outcome.WAITING, written))
            outcomes.append(Outcome.WAITING)
        ctx.observer.posts_finished(session, finished, now)
    logger.info(
        "pacing: %d of %d posts wait for room under Graph's limits (up to %.0f s)",
        len(held),
        len(ready),
        max(wait_s for _, wait_s in held),
        extra={"action": "posts_paced", "count": len(held)},
    )
    return go, outcomes


def sought_for(ctx: PublishContext, posts: Sequence[ClaimedPost]) -> dict[str, list[Sought]]:
    """What each post's attempts since its ``reconcile_since`` sent and when its post
    could appear (one query for all of them); an empty list: no call reached Graph."""
    now = ctx.clock()
    settle = timedelta(seconds=ctx.timeout_settle_s)
    since = {post.id: post.reconcile_since for post in posts if post.reconcile_since}
    by_id = {post.id: post for post in posts}
    sought: dict[str, list[Sought]] = {post.id: [] for post in posts}
    if not since:
        return sought
    with ctx.sessions() as session:
        attempts = session.execute(
            select(
                Attempt.post_id,
                Attempt.started_at,
                Attempt.finished_at,
                Attempt.sent_sha256,
                Attempt.sent_link,
                Attempt.sent_media,
            ).where(
                Attempt.post_id.in_(list(since)),
                Attempt.started_at >= min(since.values()),
                or_(Attempt.outcome.is_(None), Attempt.outcome == AttemptOutcome.RETRY),
            )
        ).all()
    for a in attempts:
        if a.started_at < since[a.post_id]:
            continue
        sought[a.post_id].append(
            Sought.of(
                # An attempt from before offpost recorded what it sent sent the post's content.
                Sent(a.sent_sha256, a.sent_link, a.sent_media)
                if a.sent_sha256 or a.sent_link or a.sent_media
                else sent_by(by_id[a.post_id]),
                a.started_at,
                a.finished_at or now,
                settle,
            )
        )
    return sought


def feed_since(sought: Sequence[Sought]) -> datetime:
    """Where a reconciliation read of the Page's feed starts."""
    return min(s.start for s in sought) - timedelta(minutes=1)


def graph_id_holders(ctx: PublishContext, posts: Sequence[FeedPost]) -> dict[str, str]:
    """Which offpost post holds each of these Graph posts (none for most)."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(Post.graph_post_id, Post.id).where(Post.graph_post_id.in_([p.id for p in posts]))
        ).all()
    return {row.graph_post_id: row.id for row in rows if row.graph_post_id is not None}


def publish_ready(
    ctx: PublishContext, ready: Sequence[Ready], *, inline: bool = False
) -> list[Outcome]:
    """Record the attempts, call Graph, record what it made: for a batch's posts on the
    common path, or for one post (``inline``: on the calling thread, which is already
    one of the pool's). One outcome per post; the same protocol either way."""
    if not ready:
        return []
    started_at = ctx.clock()
    with ctx.sessions.begin() as session:
        attempt_ids = begin_attempts(
            session, {r.post.id: sent_by(r.post) for r in ready}, ctx.worker, started_at
        )
    calls = _start_calls(ctx, ready, inline=inline)
    outcomes: list[Outcome] = []
    published: list[tuple[Ready, PublishResult]] = []
    #: One due time for the posts of one batch request whose outcome is unknown, so
    #: that they come back together and are looked for with one read per Page.
    shared_due: dict[int, datetime] = {}
    for item, (request, call) in zip(ready, calls, strict=True):
        try:
            reply = call()
        except LeaseTooShort:
            publisher = PostPublisher(ctx, item.post, item.tokens, rederived=item.rederived)
            step = partial(publisher.hand_back_unstarted, attempt_ids[item.post.id])
            outcomes.append(run_guarded(item.post, step))
            continue
        except GraphError as exc:
            # Errors are rare and each means something different: the per-post path.
            publisher = PostPublisher(ctx, item.post, item.tokens, rederived=item.rederived)
            due_at = None
            if request is not None and exc.outcome_unknown:
                if request not in shared_due:
                    delay_s = retry_delay_s(
                        exc,
                        item.post.attempts + 1,
                        ctx.retry,
                        settle_s=ctx.timeout_settle_s,
                        rng=ctx.rng,
                    )
                    shared_due[request] = ctx.clock() + timedelta(seconds=delay_s)
                due_at = shared_due[request]
            step = partial(
                publisher.attempt_failed,
                attempt_ids[item.post.id],
                started_at,
                exc,
                due_at=due_at,
            )
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


#: One post's Graph call, as :func:`publish_ready` waits for it: the batch request it
#: went in (``None`` for a call of its own), and its reply (raises what the call raised).
Call = tuple[int | None, Callable[[], PublishResult]]


def _start_calls(ctx: PublishContext, ready: Sequence[Ready], *, inline: bool) -> list[Call]:
    """Start the Graph calls of ``ready``: each on its own, or up to
    ``ctx.graph_batch`` of them in one batch request (see :func:`_call_graph_batch`)."""
    if inline:
        return [(None, _done(_call_graph, ctx, item).result) for item in ready]
    size = ctx.graph_batch
    if size < 2 or len(ready) < 2:
        return [(None, ctx.pool.submit(_call_graph, ctx, item).result) for item in ready]
    calls: list[Call] = []
    for request, start in enumerate(range(0, len(ready), size)):
        chunk = ready[start : start + size]
        future = ctx.pool.submit(_call_graph_batch, ctx, chunk)
        calls += [(request, partial(_answer, future, index)) for index in range(len(chunk))]
    return calls


def _answer(future: Future[list[PublishResult | Exception]], index: int) -> PublishResult:
    answer = future.result()[index]
    if isinstance(answer, Exception):
        raise answer
    return answer


def _call_graph_batch(
    ctx: PublishContext, chunk: Sequence[Ready]
) -> list[PublishResult | Exception]:
    """The publishes of ``chunk`` in one Graph batch request; one answer per post.

    Each item's answer is what its own call would have given, and is acted on the
    same way. When the request as a whole fails:

    - without a reply (or throttled), every item gets that error: their outcome is
      unknown, and they are looked for before anything is sent again;
    - with a refusal that says nothing ran (a top-level error about the request or
      its token), each post is published with a call of its own instead, so that
      no post pays for another's token.
    """
    answers: list[PublishResult | Exception] = []
    live: list[int] = []
    for index, item in enumerate(chunk):
        answers.append(LeaseTooShort())
        if not lease_too_short(ctx, item.post):
            live.append(index)
    if len(live) < 2:
        for index in live:
            answers[index] = _call_or_error(ctx, chunk[index])
        return answers
    try:
        replies = ctx.graph.publish_batch([_batch_item(chunk[index]) for index in live])
    except GraphError as exc:
        if exc.outcome_unknown or isinstance(exc, GraphRateLimitedError):
            for index in live:
                answers[index] = exc
            return answers
        logger.warning(
            "Graph refused a batch of %d publishes as a whole (%s); publishing them one by one",
            len(live),
            exc.message,
            extra={"action": "batch_refused"},
        )
        for index in live:
            answers[index] = _call_or_error(ctx, chunk[index])
        return answers
    readings: list[tuple[str, int]] = []
    for index, reply in zip(live, replies, strict=True):
        usage = reply.usage
        if isinstance(reply, PublishResult):
            readings += count_usage(ctx, usage, chunk[index].post.target, pace=False)
        else:
            readings += readings_for(usage, app_id=ctx.app_id, page_id=chunk[index].post.target)
        answers[index] = reply
    if readings:
        # One round trip for the whole batch's readings.
        ctx.pacer.observe(readings)
    return answers


def _call_or_error(ctx: PublishContext, item: Ready) -> PublishResult | Exception:
    try:
        return _call_graph(ctx, item)
    except Exception as exc:  # noqa: BLE001 - handed over to publish_ready, as a future would
        return exc


def _batch_item(item: Ready) -> BatchPublish:
    post = item.post
    return BatchPublish(
        page_id=post.target,
        page_token=item.tokens.page_token or "",
        text=post_text(post.message, post.link, post.photo_url),
        link=None if post.photo_url else post.link,
        photo_url=post.photo_url,
    )


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
            # Only the held posts' attempts close: a post whose lease ran out keeps its
            # attempt open, so that reconciliation looks for what it made.
            close_attempts(
                session,
                [attempt_ids[item.post.id] for item, _ in published if item.post.id in held],
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


def _done(call: Callable[..., PublishResult], *args: Any) -> Future[PublishResult]:
    """``call(*args)`` run here and now, as a finished future (the inline path)."""
    future: Future[PublishResult] = Future()
    try:
        future.set_result(call(*args))
    except BaseException as exc:  # noqa: BLE001 - handed over to the caller, as a pool would
        future.set_exception(exc)
    return future


def _offpost_error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "subcode": None, "message": message, "fbtrace_id": None}

"""Follow-ups: a published post's first comment, edits and deletion on Facebook.

One Celery task per attempt, ``offpost.follow_up(followup_id, attempts)``, sent by
the dispatcher when the row is due, on the webhook queue: follow-ups never take
a publish worker's slot (``offpost webhooks`` serves them). The protocol is the
publish protocol's, for one Graph call (docs/after-publishing.md):

1. **Claim** the attempt (:func:`~offpost.models.followup.claim_followup`): a lease,
   and from that moment the outcome counts as unknown (``reconcile_since``).
2. **Look first**, when an earlier attempt's outcome is unknown: a comment is
   searched for among the post's comments — the Page's, with that text, made in
   the window, not another follow-up's — and adopted if there. An edit or a
   delete is idempotent on Facebook and is simply made again (deleting what is
   already gone counts as done).
3. **Call**, then record the outcome in one transaction with what it changes
   (the post's comment status, its ``deleted`` status) and the webhook event.

An edit waits while an older edit of the same post is held by a worker, and a
newer edit makes an older pending one moot (``canceled``): Facebook ends with
the client's last text.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from offpost.graph.client import GraphClient, make_http_client
from offpost.graph.errors import GraphError, GraphRateLimitedError, GraphTransientError
from offpost.graph.usage import GraphUsage
from offpost.models import (
    CredentialPage,
    CredentialStatus,
    PageTokenStatus,
    Post,
    PostStatus,
    make_engine,
    make_sessionmaker,
)
from offpost.models.base import utcnow
from offpost.models.clock import DatabaseClock
from offpost.models.followup import (
    FOLLOWUP_MAX_ATTEMPTS,
    ClaimedFollowup,
    Followup,
    FollowupKind,
    FollowupStatus,
    cancel_followups,
    claim_due_followups,
    claim_followup,
    earlier_edit_in_flight,
    finish_followup,
    newer_edit_exists,
)
from offpost.models.insights import cancel_pending_insights
from offpost.models.webhook_event import EventType
from offpost.outbox import record_post_event
from offpost.workers import ratelimit
from offpost.workers.decide import RECONCILE_SKEW, Action, RetryPolicy, action_for, error_document
from offpost.workers.observe import Finished
from offpost.workers.runtime import ProcessResource
from offpost.workers.webhooks import webhook_queue

logger = logging.getLogger(__name__)

FOLLOWUP_TASK = "offpost.follow_up"
#: How long an edit waits for an older edit of its post that a worker holds.
EDIT_WAIT_S = 5.0
#: The events each kind's success reports.
_EVENTS = {
    FollowupKind.COMMENT: EventType.POST_COMMENTED,
    FollowupKind.EDIT: EventType.POST_EDITED,
    FollowupKind.DELETE: EventType.POST_DELETED,
}


@dataclass
class FollowupContext:
    """A process's resources for follow-ups, built once per process."""

    sessions: sessionmaker[Session]
    graph: GraphClient
    blocks: ratelimit.BlockStore
    app_id: str
    worker: str
    lease: timedelta
    retry: RetryPolicy
    clock: Callable[[], datetime] = utcnow
    #: After an unknown outcome, how long Graph may still take to finish the call.
    settle_s: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True, slots=True)
class Target:
    """What a follow-up acts on: the post on Facebook, its Page and a token for it."""

    graph_post_id: str
    page_id: str
    #: ``None`` while the Page has no live token (it waits for a fresh one).
    page_token: str | None
    status: PostStatus
    fb_user_id: str | None
    credential_deleted: bool = False


def run_followup(ctx: FollowupContext, followup_id: str, attempts: int) -> str:
    """One attempt of a follow-up; the outcome in a word (for logs and metrics)."""
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        claimed = claim_followup(session, followup_id, attempts, ctx.worker, now, ctx.lease)
    if claimed is None:
        return "skipped"
    try:
        return _attempt(ctx, claimed)
    except Exception:
        # The lease runs out and the dispatcher sends it again; its outcome stays
        # unknown (reconcile_since), so the next attempt looks first.
        logger.exception(
            "follow-up %s failed unexpectedly",
            claimed.id,
            extra={"action": "followup_crashed", "post_id": claimed.post_id},
        )
        return "crashed"


def _attempt(ctx: FollowupContext, claimed: ClaimedFollowup) -> str:
    now = ctx.clock()
    target = _target(ctx, claimed)
    if target is not None and target.credential_deleted:
        why = "the post's credential was deleted: offpost can no longer act on Facebook"
        return _finish(
            ctx, claimed, FollowupStatus.FAILED, now, error=_offpost("credential_deleted", why)
        )
    if target is None or target.status is not PostStatus.PUBLISHED:
        why = "the post is no longer published on Facebook"
        return _finish(ctx, claimed, FollowupStatus.CANCELED, now, error=_offpost("moot", why))
    if target.page_token is None:
        # The Page's token is dead (a role lost, a password changed): the follow-up
        # waits for a fresh one, as the Page's posts do, without spending an attempt.
        return _later(ctx, claimed, now + _token_wait(ctx, claimed), counted=False)
    if claimed.kind is FollowupKind.EDIT:
        with ctx.sessions() as session:
            if newer_edit_exists(session, claimed):
                why = "a later edit replaced it"
                return _finish(
                    ctx, claimed, FollowupStatus.CANCELED, now, error=_offpost("moot", why)
                )
            if earlier_edit_in_flight(session, claimed, now):
                return _later(ctx, claimed, now + timedelta(seconds=EDIT_WAIT_S), counted=False)
    keys = ratelimit.keys_for_call(ctx.app_id, target.page_id, target.fb_user_id or "")
    wait_s = ratelimit.wait_s(ctx.blocks, keys)
    if wait_s > 0:
        return _later(ctx, claimed, now + timedelta(seconds=wait_s), counted=False)
    try:
        if claimed.reconcile_since is not None and claimed.kind is FollowupKind.COMMENT:
            found = _find_comment(ctx, claimed, target)
            if found is not None:
                return _finish(ctx, claimed, FollowupStatus.DONE, now, graph_id=found)
        if ctx.clock() + timedelta(seconds=2 * ctx.settle_s) > claimed.claimed_at + ctx.lease:
            # Looking took most of the lease: a call started now could outlive it, and the
            # next worker would look and call again. Give the attempt back instead.
            return _later(ctx, claimed, ctx.clock(), counted=False, clear_unknown=False)
        graph_id = _call(ctx, claimed, target)
    except GraphError as exc:
        return _failed(ctx, claimed, target, exc)
    return _finish(ctx, claimed, FollowupStatus.DONE, ctx.clock(), graph_id=graph_id)


def _call(ctx: FollowupContext, claimed: ClaimedFollowup, target: Target) -> str | None:
    graph, token = ctx.graph, target.page_token or ""
    if claimed.kind is FollowupKind.COMMENT:
        result = graph.comment(target.graph_post_id, token, message=claimed.message or "")
        return result.id
    if claimed.kind is FollowupKind.EDIT:
        if not graph.edit_post(target.graph_post_id, token, message=claimed.message or ""):
            raise GraphTransientError("Graph did not confirm the edit", outcome_unknown=True)
        return None
    try:
        graph.delete_object(target.graph_post_id, token)
    except GraphError as exc:
        if not _gone(exc):
            raise
        # Deleted already: by an earlier attempt whose answer was lost, or by someone.
    return None


def _find_comment(ctx: FollowupContext, claimed: ClaimedFollowup, target: Target) -> str | None:
    """The Page's comment an earlier attempt made, if it is there (and not another's)."""
    assert claimed.reconcile_since is not None
    since = claimed.reconcile_since - RECONCILE_SKEW
    listed = ctx.graph.comments(target.graph_post_id, target.page_token or "", since=since)
    with ctx.sessions() as session:
        taken = set(
            session.scalars(
                select(Followup.graph_id).where(
                    Followup.graph_id.in_([c.id for c in listed.comments]),
                    Followup.id != claimed.id,
                )
            )
        )
    for comment in listed.comments:
        if (
            comment.from_id == target.page_id
            and (comment.message or "").strip() == (claimed.message or "").strip()
            and comment.created_time >= since
            and comment.id not in taken
        ):
            logger.info(
                "follow-up %s: the comment an earlier attempt made is there, adopted",
                claimed.id,
                extra={"action": "followup_reconciled", "post_id": claimed.post_id},
            )
            return comment.id
    return None


def _failed(ctx: FollowupContext, claimed: ClaimedFollowup, target: Target, exc: GraphError) -> str:
    now = ctx.clock()
    action = action_for(exc)
    if action is Action.WAIT:
        assert isinstance(exc, GraphRateLimitedError)
        key = ratelimit.key_for(
            exc, app_id=ctx.app_id, page_id=target.page_id, fb_user_id=target.fb_user_id or ""
        )
        ctx.blocks.block(key, exc.retry_after_s)
        return _later(ctx, claimed, now + timedelta(seconds=exc.retry_after_s), counted=False)
    if action is Action.REAUTH and claimed.attempt < FOLLOWUP_MAX_ATTEMPTS:
        # Graph refused the Page's token: tried again after a wait (a fresh login may
        # bring a new one, and the Page's next publish marks this one dead), counted, so
        # that a token nobody renews ends the follow-up instead of calling Graph forever.
        known = claimed.reconcile_since is None
        return _later(
            ctx,
            claimed,
            now + _token_wait(ctx, claimed),
            counted=True,
            error=error_document(exc),
            clear_unknown=known,
        )
    if action is Action.FAIL or claimed.attempt >= FOLLOWUP_MAX_ATTEMPTS:
        return _finish(ctx, claimed, FollowupStatus.FAILED, now, error=error_document(exc))
    delay_s = ctx.retry.delay_s(claimed.attempt, ctx.rng)
    if action is Action.RETRY_RECONCILE:
        delay_s = max(delay_s, ctx.settle_s)
    # A token Graph refused (REAUTH) is waited out too: a fresh one may come.
    known = action is not Action.RETRY_RECONCILE and claimed.reconcile_since is None
    return _later(
        ctx,
        claimed,
        now + timedelta(seconds=delay_s),
        counted=True,
        error=error_document(exc),
        clear_unknown=known,
    )


def _later(
    ctx: FollowupContext,
    claimed: ClaimedFollowup,
    due_at: datetime,
    *,
    counted: bool,
    error: dict[str, Any] | None = None,
    clear_unknown: bool = True,
) -> str:
    """Back to pending, due at ``due_at``; a wait (not ``counted``) gives the attempt back."""
    values: dict[str, Any] = {"due_at": due_at}
    if not counted:
        values["attempts"] = claimed.attempt - 1
    if error is not None:
        values["last_error"] = error
    if clear_unknown and claimed.reconcile_since is None:
        # Nothing was sent, or Graph said it did nothing: there is nothing to look for.
        values["reconcile_since"] = None
    with ctx.sessions.begin() as session:
        finish_followup(session, claimed, ctx.worker, ctx.clock(), **values)
    return "retry" if counted else "waiting"


def _finish(
    ctx: FollowupContext,
    claimed: ClaimedFollowup,
    status: FollowupStatus,
    now: datetime,
    *,
    graph_id: str | None = None,
    error: dict[str, Any] | None = None,
) -> str:
    """Done, failed or canceled, with what it changes on the post and its event, at once."""
    with ctx.sessions.begin() as session:
        held = finish_followup(
            session,
            claimed,
            ctx.worker,
            now,
            status=status,
            graph_id=graph_id,
            last_error=error,
            finished_at=now,
            reconcile_since=None,
        )
        if not held:
            return "lease_lost"
        _on_post(session, claimed, status, graph_id, now)
    logger.info(
        "follow-up %s (%s of %s): %s",
        claimed.id,
        claimed.kind.value,
        claimed.post_id,
        status.value,
        extra={"action": f"followup_{status.value}", "post_id": claimed.post_id},
    )
    return status.value


def _on_post(
    session: Session,
    claimed: ClaimedFollowup,
    status: FollowupStatus,
    graph_id: str | None,
    now: datetime,
) -> None:
    """The post's side of a finished follow-up, in its transaction."""
    kind = claimed.kind
    if kind is FollowupKind.COMMENT:
        comment = "posted" if status is FollowupStatus.DONE else "failed"
        session.execute(
            update(Post)
            .where(Post.id == claimed.post_id)
            .values(first_comment_status=comment, first_comment_id=graph_id, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    if kind is FollowupKind.EDIT and status is FollowupStatus.DONE:
        # The post says what Facebook shows.
        session.execute(
            update(Post)
            .where(Post.id == claimed.post_id)
            .values(message=claimed.message, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    if kind is FollowupKind.DELETE and status is FollowupStatus.DONE:
        moved = session.execute(
            update(Post)
            .where(Post.id == claimed.post_id, Post.status == PostStatus.PUBLISHED)
            .values(status=PostStatus.DELETED, updated_at=now)
            .returning(Post.id)
            .execution_options(synchronize_session=False)
        ).first()
        if moved is None:
            return  # another delete of the same post did it, and told
        cancel_followups(
            session, claimed.post_id, now, kinds=(FollowupKind.COMMENT, FollowupKind.EDIT)
        )
        # What waited for the post is moot now: its comment, its later insights.
        session.execute(
            update(Post)
            .where(Post.id == claimed.post_id, Post.first_comment_status == "pending")
            .values(first_comment_status="canceled")
            .execution_options(synchronize_session=False)
        )
        cancel_pending_insights(session, claimed.post_id, now)
    if status is FollowupStatus.DONE:
        record_post_event(session, claimed.post_id, _EVENTS[kind], now)


def _target(ctx: FollowupContext, claimed: ClaimedFollowup) -> Target | None:
    """The post's Graph id, Page and Page token (decrypted); None when it has none."""
    with ctx.sessions() as session:
        post = session.get(Post, claimed.post_id)
        if post is None or post.graph_post_id is None:
            return None
        page = session.get(CredentialPage, (post.credential_id, post.target))
        if page is None:
            return None  # the credential no longer has the Page: nobody can act on it
        token = page.page_token if page.token_status is not PageTokenStatus.DEAD else None
        credential = page.credential
        return Target(
            post.graph_post_id,
            post.target,
            token or None,
            post.status,
            credential.fb_user_id if credential is not None else None,
            credential is None or credential.status is CredentialStatus.DELETED,
        )


def _token_wait(ctx: FollowupContext, claimed: ClaimedFollowup) -> timedelta:
    """How long a follow-up without a usable token waits before it looks again."""
    return timedelta(seconds=ctx.retry.delay_s(max(1, claimed.attempt), ctx.rng))


def _gone(exc: GraphError) -> bool:
    """Graph's "does not exist" for an object (code 100, subcode 33)."""
    return exc.code == 100 and exc.subcode == 33


def _offpost(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "subcode": None, "message": message, "fbtrace_id": None}


# -- what publishing starts -------------------------------------------------------------


class FollowupOutbox:
    """The publish observer that writes a published post's first comment as a follow-up,
    inside the outcome's transaction: it exists exactly when the post is published."""

    def posts_finished(self, session: Session, finished: Sequence[Finished], now: datetime) -> None:
        for item in finished:
            if item.values.get("status") != PostStatus.PUBLISHED.value:
                continue
            if item.post.first_comment is None:
                continue
            session.add(
                Followup(
                    post_id=item.post.id,
                    client_id=item.post.client_id,
                    kind=FollowupKind.COMMENT,
                    message=item.post.first_comment,
                    due_at=now,
                )
            )

    def graph_error(self, error: GraphError) -> None:
        return None

    def graph_usage(self, usage: GraphUsage, page_id: str) -> None:
        return None


# -- the dispatcher's side --------------------------------------------------------------


def send_due_followups(
    sessions: sessionmaker[Session],
    send: Callable[[list[tuple[str, int]]], None],
    now: datetime,
    resend_after: timedelta,
    batch: int,
) -> int:
    """Claim due follow-ups and send their tasks (after the claim committed); how many."""
    sent = 0
    while True:
        with sessions.begin() as session:
            due = claim_due_followups(session, now, resend_after, batch)
        if due:
            send(due)
            sent += len(due)
        if len(due) < batch:
            return sent


def send_followups(app: Celery, due: list[tuple[str, int]]) -> None:
    """One task per ``(followup_id, attempts)``, on the webhook queue beside ``app``'s
    (``offpost webhooks`` consumes it): follow-ups never take a publishing slot."""
    queue = webhook_queue(app.conf.task_default_queue)
    for followup_id, attempts in due:
        app.send_task(FOLLOWUP_TASK, args=[followup_id, attempts], queue=queue)


# -- the worker's side --------------------------------------------------------------------


class FollowupRuntime(ProcessResource[FollowupContext]):
    """The per-process :class:`FollowupContext`, built after fork and on first use."""

    def close(self) -> None:
        context = self.take()
        if context is not None:
            context.close()


def make_followup_context(
    *,
    database_url: str,
    encryption_keys: list[str],
    graph_url: str,
    graph_version: str,
    app_id: str,
    app_secret: str,
    appsecret_time: bool,
    graph_timeout_s: float,
    lease_s: int,
    retry: RetryPolicy,
    blocks: ratelimit.BlockStore,
) -> FollowupContext:
    engine = make_engine(database_url, encryption_keys=encryption_keys)
    sessions = make_sessionmaker(engine)
    clock = DatabaseClock(sessions)
    http = make_http_client(graph_timeout_s)
    graph = GraphClient(
        http,
        graph_url=graph_url,
        version=graph_version,
        app_id=app_id,
        app_secret=app_secret,
        appsecret_time=appsecret_time,
        clock=clock.timestamp,
    )

    def close() -> None:
        http.close()
        engine.dispose()

    return FollowupContext(
        sessions=sessions,
        graph=graph,
        blocks=blocks,
        app_id=app_id,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        lease=timedelta(seconds=lease_s),
        retry=retry,
        clock=clock,
        settle_s=graph_timeout_s,
        close=close,
    )


def install_followup_task(app: Celery, runtime: FollowupRuntime) -> Any:
    """Register ``offpost.follow_up`` on ``app``, served by ``runtime``'s context."""

    @app.task(name=FOLLOWUP_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def follow_up(followup_id: str, attempts: int) -> str:
        return run_followup(runtime.get(), str(followup_id), int(attempts))

    worker_process_init.connect(lambda **_: runtime.reset(), weak=False)
    worker_process_shutdown.connect(lambda **_: runtime.close(), weak=False)
    return follow_up

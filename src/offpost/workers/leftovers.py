"""What a media post that was never published leaves on Graph, and removing it.

A post with several photos uploads each one unpublished before the feed post
that attaches them; a large video or a Reel is started before its bytes go up.
When such a post ends without being published — it failed for good, ran out of
attempts, or its client canceled it while a retry was pending — those objects
are still on Graph: never shown on the Page, but there. They are deleted
(``DELETE /{id}``), each removal recorded as a ``remove`` step before it is made:

- by the worker, before it records the post ``failed``;
- by the dispatcher's housekeeping (:func:`sweep_leftovers`), for canceled posts
  and for removals that failed before (at most :data:`MAX_REMOVALS` tries each).

An object whose upload reply was lost is not among them: no reply named it, and
Graph lists no unpublished photo or unfinished upload (docs/media.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from offpost.graph.client import GraphClient
from offpost.graph.errors import GraphError
from offpost.models import CredentialPage, IdPrefix, Post, PostStatus, new_id
from offpost.models.media import PostStep, StepKind, StepOutcome
from offpost.models.types import UTCDateTime

logger = logging.getLogger(__name__)

#: Steps whose ``graph_id`` is a Graph object the post made and may leave behind.
LEFTOVER_KINDS = (StepKind.PHOTO, StepKind.VIDEO_START, StepKind.REEL_START)
#: Tries to delete one object before it is given up (and logged).
MAX_REMOVALS = 3
#: Posts that end without being published, whose media are removed by the sweep.
_ENDED = (PostStatus.CANCELED, PostStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Remover:
    """What removing takes: the database, Graph, who removes, and the clock."""

    sessions: sessionmaker[Session]
    graph: GraphClient
    worker: str
    clock: Callable[[], datetime]


def left_on_graph(session: Session, post_id: str) -> list[str]:
    """The Graph ids ``post_id`` made that are not removed yet (nor given up), in order."""
    rows = session.execute(
        select(PostStep.kind, PostStep.outcome, PostStep.graph_id)
        .where(PostStep.post_id == post_id, PostStep.graph_id.is_not(None))
        .order_by(PostStep.started_at, PostStep.id)
    ).all()
    made = [
        r.graph_id
        for r in rows
        if r.kind in LEFTOVER_KINDS and r.outcome in (StepOutcome.DONE, StepOutcome.FOUND)
    ]
    tries: dict[str, int] = {}
    removed: set[str] = set()
    for r in rows:
        if r.kind is StepKind.REMOVE:
            tries[r.graph_id] = tries.get(r.graph_id, 0) + 1
            if r.outcome is StepOutcome.DONE:
                removed.add(r.graph_id)
    return [
        graph_id
        for graph_id in dict.fromkeys(made)
        if graph_id not in removed and tries.get(graph_id, 0) < MAX_REMOVALS
    ]


def remove_leftovers(
    remover: Remover, post_id: str, page_token: str, *, while_: ColumnElement[bool]
) -> int:
    """Delete what ``post_id`` left on Graph; how many. Never raises: a refused removal
    is recorded (``failed``) and tried again by a later sweep, up to :data:`MAX_REMOVALS`.

    Each removal's step is written only while the post meets ``while_`` (it is still
    failed or canceled; the worker still holds it), in the statement that checks it:
    an operator's retry in between stops the removals, and a worker that then reuses
    a photo can never have it deleted under it.
    """
    with remover.sessions() as session:
        left = left_on_graph(session, post_id)
    count = 0
    for graph_id in left:
        step_id = new_id(IdPrefix.STEP)
        with remover.sessions.begin() as session:
            written = session.execute(
                insert(PostStep)
                .from_select(
                    ["id", "post_id", "kind", "item", "started_at", "graph_id", "worker"],
                    select(
                        literal(step_id),
                        Post.id,
                        literal(StepKind.REMOVE.value),
                        literal(0),
                        literal(remover.clock(), UTCDateTime()),
                        literal(graph_id),
                        literal(remover.worker),
                    ).where(Post.id == post_id, while_),
                )
                # RETURNING, not rowcount: an INSERT ... SELECT's count is -1 here.
                .returning(PostStep.id)
            ).first()
        if written is None:
            logger.info(
                "stopped removing what %s left: the post moved on",
                post_id,
                extra={"action": "media_leftovers_stopped", "post_id": post_id},
            )
            return count
        outcome, error = StepOutcome.DONE, None
        try:
            remover.graph.delete_object(graph_id, page_token)
        except GraphError as exc:
            outcome, error = StepOutcome.FAILED, exc.message
            logger.warning(
                "could not remove media %s left by %s: %s",
                graph_id,
                post_id,
                exc.message,
                extra={"action": "media_leftover_kept", "post_id": post_id},
            )
        except Exception as exc:
            outcome, error = StepOutcome.FAILED, type(exc).__name__
            logger.exception(
                "removing media left by %s failed",
                post_id,
                extra={"action": "media_leftover_kept", "post_id": post_id},
            )
        with remover.sessions.begin() as session:
            session.execute(
                update(PostStep)
                .where(PostStep.id == step_id)
                .values(outcome=outcome, finished_at=remover.clock(), error=error)
            )
        count += outcome is StepOutcome.DONE
    if count:
        logger.info(
            "removed %d media left by %s",
            count,
            post_id,
            extra={"action": "media_leftovers_removed", "post_id": post_id},
        )
    return count


def posts_with_leftovers(session: Session, limit: int) -> list[str]:
    """Canceled and failed posts with an object on Graph not removed yet (nor given up),
    least recently changed first, at most ``limit``."""
    made, removal = aliased(PostStep), aliased(PostStep)
    same_object = and_(
        removal.post_id == made.post_id,
        removal.kind == StepKind.REMOVE,
        removal.graph_id == made.graph_id,
    )
    removed = exists().where(same_object, removal.outcome == StepOutcome.DONE)
    tries = select(func.count()).where(same_object).correlate(made).scalar_subquery()
    # From the steps (media posts only), not from the posts table (every post ever made).
    query = (
        select(made.post_id)
        .join(Post, Post.id == made.post_id)
        .where(
            made.kind.in_(LEFTOVER_KINDS),
            made.outcome.in_([StepOutcome.DONE, StepOutcome.FOUND]),
            made.graph_id.is_not(None),
            Post.status.in_(_ENDED),
            ~removed,
            tries < MAX_REMOVALS,
        )
        .group_by(made.post_id, Post.updated_at)
        .order_by(Post.updated_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def sweep_leftovers(remover: Remover, limit: int = 20) -> int:
    """Remove what up to ``limit`` canceled or failed posts left on Graph; objects removed."""
    with remover.sessions() as session:
        candidates = posts_with_leftovers(session, limit)
        work: list[tuple[str, str]] = []
        for post_id in candidates:
            post = session.get(Post, post_id)
            if post is None:
                continue
            page = session.get(CredentialPage, (post.credential_id, post.target))
            if page is None or not page.page_token:
                continue  # no token to remove with: kept, invisible, until one comes back
            work.append((post_id, page.page_token))
    return sum(
        remove_leftovers(remover, post_id, token, while_=Post.status.in_(_ENDED))
        for post_id, token in work
    )

"""A client's changes to a post that is already on Facebook: its text, or its deletion.

Each becomes a follow-up (:mod:`offpost.models.followup`) that a worker carries
out exactly once; the answer is the follow-up, and the post changes when it is
done (its ``message`` then, its status ``deleted``), so that what offpost says
is always what Facebook shows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from offpost.models import Followup, FollowupKind, FollowupStatus, Post, PostStatus
from offpost.posts.rules import FieldProblem, PostInputError, PostStateError
from offpost.posts.store import load_post

#: Kinds of post whose text Graph lets an app change (``POST /{post-id}``).
_EDITABLE_KINDS = (None, "photos")


def request_edit(
    session: Session, client_id: str, post_id: str, message: str | None, now: datetime
) -> Followup:
    """Ask for the published post's text to become ``message`` on Facebook; commits.

    Raises :class:`PostInputError` for a text Graph cannot set (none, or a video's or
    a Reel's), :class:`PostStateError` when the post is not published (or is being
    deleted), :class:`~offpost.posts.rules.PostNotFoundError`.
    """
    post = _published(session, client_id, post_id, "edited on Facebook")
    if message is None:
        raise PostInputError(
            [FieldProblem("message", "a published post's text can be changed, not removed")]
        )
    if post.media_kind not in _EDITABLE_KINDS:
        raise PostInputError(
            [
                FieldProblem(
                    "message",
                    f"Graph does not let an app change the text of a {post.media_kind} "
                    "once it is published",
                )
            ]
        )
    if _pending(session, post.id, FollowupKind.DELETE) is not None:
        raise PostStateError(post.id, post.status, "edited: it is being deleted")
    followup = Followup(
        post_id=post.id,
        client_id=post.client_id,
        kind=FollowupKind.EDIT,
        message=message,
        due_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(followup)
    session.commit()
    return followup


def request_delete(session: Session, client_id: str, post_id: str, now: datetime) -> Followup:
    """Ask for the published post to be deleted from Facebook; commits. Asking again
    answers the same follow-up (a deleted post, the one that did it)."""
    post = load_post(session, client_id, post_id)
    if post.status is PostStatus.DELETED:
        done = session.scalars(
            select(Followup).where(
                Followup.post_id == post.id,
                Followup.kind == FollowupKind.DELETE,
                Followup.status == FollowupStatus.DONE,
            )
        ).first()
        if done is not None:
            return done
    post = _published(session, client_id, post_id, "deleted on Facebook")
    pending = _pending(session, post.id, FollowupKind.DELETE)
    if pending is not None:
        return pending
    followup = Followup(
        post_id=post.id,
        client_id=post.client_id,
        kind=FollowupKind.DELETE,
        due_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(followup)
    session.commit()
    return followup


def list_followups(session: Session, client_id: str | None, post_id: str) -> list[Followup]:
    """The post's follow-ups, oldest first."""
    post = load_post(session, client_id, post_id)
    return list(
        session.scalars(
            select(Followup)
            .where(Followup.post_id == post.id)
            .order_by(Followup.created_at, Followup.id)
        )
    )


def _published(session: Session, client_id: str, post_id: str, action: str) -> Post:
    post = load_post(session, client_id, post_id)
    if post.status is not PostStatus.PUBLISHED or post.graph_post_id is None:
        raise PostStateError(post.id, post.status, f"{action} (only a published post can)")
    return post


def _pending(session: Session, post_id: str, kind: FollowupKind) -> Followup | None:
    return session.scalars(
        select(Followup).where(
            Followup.post_id == post_id,
            Followup.kind == kind,
            Followup.status == FollowupStatus.PENDING,
        )
    ).first()

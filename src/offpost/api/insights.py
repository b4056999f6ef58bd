"""``GET /v1/posts/{id}/insights``: a published post's counts and insights, per fetch.

One entry per age of ``OFFPOST_INSIGHTS_AFTER`` (``1h``, ``24h``, ``7d``), pending
ones included, in the order they fall due (docs/insights.md). :class:`InsightOut`
is also what ``GET /v1/posts/{id}`` shows as ``insights``: the latest fetch done
(:func:`latest_insight`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.orm import Session

from offpost.api.deps import ClientDep, SessionDep
from offpost.api.problems import ProblemError
from offpost.models.insights import latest, series
from offpost.posts import rules, store
from offpost.views import InsightOut

router = APIRouter(prefix="/v1/posts", tags=["posts"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such post for this client"},
    401: {"description": "no or bad API key"},
}


class InsightList(BaseModel):
    insights: list[InsightOut]


def latest_insight(session: Session, post_id: str) -> InsightOut | None:
    """The latest fetch of ``post_id`` that is done, as the API shows it; None before one."""
    row = latest(session, post_id)
    return InsightOut.of(row) if row is not None else None


@router.get(
    "/{post_id}/insights",
    response_model=InsightList,
    summary="The post's insights: one entry per age after publishing, in order",
    responses=_NOT_FOUND,
)
def list_insights(post_id: str, client: ClientDep, session: SessionDep) -> InsightList:
    try:
        post = store.load_post(session, client.id, post_id)
    except rules.PostNotFoundError as exc:
        raise ProblemError("not_found", str(exc)) from exc
    return InsightList(insights=[InsightOut.of(row) for row in series(session, post.id)])

"""The insights line of ``offpost status`` (docs/insights.md)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from offpost.models.insights import insight_counts


def insights_line(session: Session, now: datetime) -> str:
    """``insights: N fetched in the last 24 h, M due, K failed``."""
    counts = insight_counts(session, now)
    return (
        f"insights: {counts.fetched_last_day} fetched in the last 24 h, "
        f"{counts.due} due, {counts.failed} failed"
    )

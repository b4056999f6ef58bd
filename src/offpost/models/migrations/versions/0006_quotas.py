"""Quotas per client: each client's overrides, and an index to count its pending posts.

- ``clients.max_requests_per_minute``, ``max_posts_per_day``,
  ``max_pending_posts``, ``max_active_schedules``, ``max_occurrences_per_day``:
  NULL means the deployment's default.
- ``ix_posts_client_pending``: a client's posts not done yet, counted on
  every creation against its ``pending_posts`` quota.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUOTA_COLUMNS = (
    "max_requests_per_minute",
    "max_posts_per_day",
    "max_pending_posts",
    "max_active_schedules",
    "max_occurrences_per_day",
)
PENDING = "status IN ('scheduled', 'queued', 'publishing', 'needs_reauth')"


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        for column in QUOTA_COLUMNS:
            batch.add_column(sa.Column(column, sa.Integer(), nullable=True))
    op.create_index(
        op.f("ix_posts_client_pending"),
        "posts",
        ["client_id"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_posts_client_pending"), table_name="posts")
    with op.batch_alter_table("clients") as batch:
        for column in reversed(QUOTA_COLUMNS):
            batch.drop_column(column)

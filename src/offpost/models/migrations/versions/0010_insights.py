"""Insights: each published post's counts and insights, fetched at a few ages.

- ``post_insights``: one row per post and age (``1h``, ``24h``, ``7d``), due at
  ``published_at + age``; reactions, comments, shares, impressions and reach once
  fetched, and per Graph metric why it has no value (docs/insights.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "post_insights",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("post_id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("age", sa.String(8), nullable=False),
        sa.Column("due_at", WHEN, nullable=False),
        sa.Column("fetched_at", WHEN, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("in_flight_until", WHEN, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reactions", sa.BigInteger(), nullable=True),
        sa.Column("comments", sa.BigInteger(), nullable=True),
        sa.Column("shares", sa.BigInteger(), nullable=True),
        sa.Column("impressions", sa.BigInteger(), nullable=True),
        sa.Column("reach", sa.BigInteger(), nullable=True),
        sa.Column("errors", JSON_DOCUMENT, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed', 'canceled')",
            name=op.f("ck_post_insights_status"),
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_post_insights_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_post_insights_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_insights")),
        sa.UniqueConstraint("post_id", "age", name=op.f("uq_post_insights_post_id_age")),
    )
    pending = sa.text("status = 'pending'")
    op.create_index(
        op.f("ix_post_insights_due"),
        "post_insights",
        ["due_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index(
        op.f("ix_post_insights_target_fetched"), "post_insights", ["target", "fetched_at"]
    )


def downgrade() -> None:
    for name in ("target_fetched", "due"):
        op.drop_index(op.f(f"ix_post_insights_{name}"), table_name="post_insights")
    op.drop_table("post_insights")

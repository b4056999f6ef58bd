"""Exactly once under edits and lookalikes: what each attempt sent, one post per Graph id.

- ``attempts.sent_sha256``, ``sent_link``, ``sent_media``: what the attempt's
  Graph call sent, so that reconciliation searches for exactly that.
- ``ix_posts_graph_post_id``: a Graph post belongs to at most one offpost post.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("sent_sha256", sa.String(length=64), nullable=True))
    op.add_column("attempts", sa.Column("sent_link", sa.Text(), nullable=True))
    op.add_column("attempts", sa.Column("sent_media", sa.Text(), nullable=True))
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT graph_post_id, COUNT(*) FROM posts WHERE graph_post_id IS NOT NULL "
                "GROUP BY graph_post_id HAVING COUNT(*) > 1 ORDER BY graph_post_id LIMIT 20"
            )
        )
        .all()
    )
    if shared:
        listed = ", ".join(f"{row[0]} ({row[1]} posts)" for row in shared)
        raise RuntimeError(
            "these Graph posts are recorded for more than one offpost post: "
            f"{listed}. Only one of each can be the post Graph made: look them up on the "
            "Page, clear graph_post_id on the others and set them failed (or canceled), "
            "then migrate again."
        )
    op.create_index("ix_posts_graph_post_id", "posts", ["graph_post_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_posts_graph_post_id", table_name="posts")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("sent_media")
        batch.drop_column("sent_link")
        batch.drop_column("sent_sha256")

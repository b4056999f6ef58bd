"""Media: uploaded files, the posts and schedules that use them, multi-step publishes.

- ``media``: files a client uploaded, kept in the media store.
- ``media_uses``: which posts and schedules publish which media (retention).
- ``post_steps``: each Graph call of a multi-step publish, recorded before it is made.
- ``posts.media`` and ``schedules.media``: photos, a video or a Reel; the
  ``content`` check now accepts them as a post's only content.
- ``posts.media_kind`` and ``ix_posts_target_reels``: a Page's Reels by time, for
  Graph's budget of 30 a day.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)
OLD_CONTENT = "message IS NOT NULL OR link IS NOT NULL OR photo_url IS NOT NULL"
NEW_CONTENT = f"{OLD_CONTENT} OR media IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("deleted_at", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.CheckConstraint("kind IN ('image', 'video')", name=op.f("ck_media_kind")),
        sa.CheckConstraint(
            "status IN ('uploading', 'ready', 'deleted')", name=op.f("ck_media_status")
        ),
        sa.CheckConstraint("size_bytes >= 0 AND received_bytes >= 0", name=op.f("ck_media_sizes")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_media_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media")),
    )
    op.create_index(op.f("ix_media_client_created"), "media", ["client_id", "created_at", "id"])
    for status in ("ready", "uploading"):
        predicate = sa.text(f"status = '{status}'")
        op.create_index(
            op.f(f"ix_media_{status}_created"),
            "media",
            ["created_at"],
            postgresql_where=predicate,
            sqlite_where=predicate,
        )
    op.create_table(
        "media_uses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("media_id", sa.String(32), nullable=False),
        sa.Column("post_id", sa.String(32), nullable=True),
        sa.Column("schedule_id", sa.String(32), nullable=True),
        sa.CheckConstraint(
            "(post_id IS NULL) <> (schedule_id IS NULL)", name=op.f("ck_media_uses_owner")
        ),
        sa.ForeignKeyConstraint(
            ["media_id"], ["media.id"], name=op.f("fk_media_uses_media_id_media")
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_media_uses_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_media_uses_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_uses")),
    )
    op.create_index(op.f("ix_media_uses_media"), "media_uses", ["media_id"])
    op.create_index(op.f("ix_media_uses_post"), "media_uses", ["post_id"])
    op.create_index(op.f("ix_media_uses_schedule"), "media_uses", ["schedule_id"])
    op.create_table(
        "post_steps",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("post_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("graph_id", sa.String(128), nullable=True),
        sa.Column("detail", JSON_DOCUMENT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.CheckConstraint(
            "kind IN ('photo', 'video_start', 'video_transfer', 'reel_start', "
            "'reel_upload', 'remove')",
            name=op.f("ck_post_steps_kind"),
        ),
        sa.CheckConstraint(
            "outcome IN ('done', 'failed', 'unknown', 'found', 'not_found')",
            name=op.f("ck_post_steps_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_post_steps_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_steps")),
    )
    op.create_index(op.f("ix_post_steps_post"), "post_steps", ["post_id", "started_at"])
    for table in ("posts", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("media", JSON_DOCUMENT, nullable=True))
            if table == "posts":
                batch.add_column(sa.Column("media_kind", sa.String(8), nullable=True))
            batch.drop_constraint(op.f(f"ck_{table}_content"), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_content"), sa.text(NEW_CONTENT))
    reels = sa.text("media_kind = 'reel'")
    op.create_index(
        op.f("ix_posts_target_reels"),
        "posts",
        ["target", "publish_at"],
        postgresql_where=reels,
        sqlite_where=reels,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_posts_target_reels"), table_name="posts")
    for table in ("schedules", "posts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_content"), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_content"), sa.text(OLD_CONTENT))
            batch.drop_column("media")
            if table == "posts":
                batch.drop_column("media_kind")
    op.drop_index(op.f("ix_post_steps_post"), table_name="post_steps")
    op.drop_table("post_steps")
    for name in ("schedule", "post", "media"):
        op.drop_index(op.f(f"ix_media_uses_{name}"), table_name="media_uses")
    op.drop_table("media_uses")
    for name in ("uploading", "ready", "client"):
        op.drop_index(op.f(f"ix_media_{name}_created"), table_name="media")
    op.drop_table("media")

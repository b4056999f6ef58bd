"""After publishing: a first comment, edits and deletes on Facebook, as follow-ups.

- ``post_followups``: one Graph call on a published post (comment, edit, delete),
  with its attempts, lease and reconciliation.
- ``posts.first_comment`` (and its status and Graph id), ``schedules.first_comment``.
- ``posts.status`` may be ``deleted``.
- ``webhook_events.type`` adds ``post.commented``, ``post.edited``, ``post.deleted``,
  ``post.insights``;
  ``webhooks.events`` is the types a client subscribed to (null: all).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)
POST_STATUSES = (
    "scheduled",
    "queued",
    "publishing",
    "published",
    "failed",
    "needs_reauth",
    "canceled",
)
EVENT_TYPES = (
    "post.published",
    "post.failed",
    "post.needs_reauth",
    "credential.expiring",
    "credential.needs_reauth",
    "credential.user_token_expired",
)
NEW_EVENT_TYPES = ("post.commented", "post.edited", "post.deleted", "post.insights")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "post_followups",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("post_id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("due_at", WHEN, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("in_flight_until", WHEN, nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("reconcile_since", WHEN, nullable=True),
        sa.Column("graph_id", sa.String(128), nullable=True),
        sa.Column("last_error", JSON_DOCUMENT, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.CheckConstraint(
            _in("kind", ("comment", "edit", "delete")), name=op.f("ck_post_followups_kind")
        ),
        sa.CheckConstraint(
            _in("status", ("pending", "done", "failed", "canceled")),
            name=op.f("ck_post_followups_status"),
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_post_followups_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_post_followups_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_followups")),
    )
    pending = sa.text("status = 'pending'")
    op.create_index(
        op.f("ix_post_followups_due"),
        "post_followups",
        ["due_at"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index(op.f("ix_post_followups_post"), "post_followups", ["post_id", "created_at"])
    op.create_index(op.f("ix_post_followups_graph_id"), "post_followups", ["graph_id"], unique=True)
    with op.batch_alter_table("posts") as batch:
        batch.add_column(sa.Column("first_comment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("first_comment_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("first_comment_id", sa.String(128), nullable=True))
        batch.drop_constraint(op.f("ck_posts_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_posts_status"), _in("status", (*POST_STATUSES, "deleted"))
        )
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("first_comment", sa.Text(), nullable=True))
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_constraint(op.f("ck_webhook_events_type"), type_="check")
        batch.create_check_constraint(
            op.f("ck_webhook_events_type"), _in("type", (*EVENT_TYPES, *NEW_EVENT_TYPES))
        )
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("events", JSON_DOCUMENT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("events")
    op.execute(
        "DELETE FROM webhook_events WHERE type IN "
        "('post.commented', 'post.edited', 'post.deleted', 'post.insights')"
    )
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_constraint(op.f("ck_webhook_events_type"), type_="check")
        batch.create_check_constraint(op.f("ck_webhook_events_type"), _in("type", EVENT_TYPES))
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("first_comment")
    # A deleted post was published before: that is what the older schema can say.
    op.execute("UPDATE posts SET status = 'published' WHERE status = 'deleted'")
    with op.batch_alter_table("posts") as batch:
        batch.drop_constraint(op.f("ck_posts_status"), type_="check")
        batch.create_check_constraint(op.f("ck_posts_status"), _in("status", POST_STATUSES))
        batch.drop_column("first_comment_id")
        batch.drop_column("first_comment_status")
        batch.drop_column("first_comment")
    for name in ("graph_id", "post", "due"):
        op.drop_index(op.f(f"ix_post_followups_{name}"), table_name="post_followups")
    op.drop_table("post_followups")

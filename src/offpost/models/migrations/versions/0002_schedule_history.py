"""Schedule history: ``schedule_events``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedule_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("occurrence_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", JSON_DOCUMENT, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('skipped', 'caught_up', 'paused', 'resumed', 'updated', 'deleted')",
            name=op.f("ck_schedule_events_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"], ["schedules.id"], name=op.f("fk_schedule_events_schedule_id_schedules")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_events")),
        sa.UniqueConstraint(
            "schedule_id",
            "occurrence_at",
            "kind",
            name=op.f("uq_schedule_events_schedule_id_occurrence_at_kind"),
        ),
    )
    op.create_index(
        "ix_schedule_events_schedule_id", "schedule_events", ["schedule_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("schedule_events")

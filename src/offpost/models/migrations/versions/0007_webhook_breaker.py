"""Webhook endpoints with a circuit breaker and a cap on deliveries in flight.

- ``webhooks.failures_in_a_row`` and ``paused_until``: the endpoint's breaker.
- ``webhook_events.in_flight_until``: until when an event counts as in flight
  (sent to a worker, or being delivered).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(
            sa.Column("failures_in_a_row", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("webhooks") as batch:
        # The model sets it on every insert; the default was only for the existing rows.
        batch.alter_column("failures_in_a_row", server_default=None, existing_type=sa.Integer())
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("in_flight_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("in_flight_until")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("paused_until")
        batch.drop_column("failures_in_a_row")

"""Tokens as Graph ages them: health per Page, the user's tasks, an expired user token.

- ``credentials.status`` may be ``user_token_expired`` (32 characters wide now);
  ``credentials.user_token_dead_at`` says since when Graph rejects the user token.
- ``credential_pages.token_status`` (``valid``/``dead``), ``tasks`` (Graph's
  ``tasks`` for the user on the Page) and ``checked_at``.
- ``webhook_events.type`` may be ``credential.user_token_expired``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

CREDENTIAL_STATUSES = ("active", "expiring", "needs_reauth", "deleted")
EVENT_TYPES = (
    "post.published",
    "post.failed",
    "post.needs_reauth",
    "credential.expiring",
    "credential.needs_reauth",
)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.alter_column("status", type_=sa.String(length=32), existing_type=sa.String(length=16))
        batch.drop_constraint(op.f("ck_credentials_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_credentials_status"),
            _in("status", ("active", "expiring", "user_token_expired", "needs_reauth", "deleted")),
        )
        batch.add_column(sa.Column("user_token_dead_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("credential_pages") as batch:
        batch.add_column(
            sa.Column("token_status", sa.String(length=16), nullable=False, server_default="valid")
        )
        batch.add_column(sa.Column("tasks", JSON_DOCUMENT, nullable=True))
        batch.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(
            op.f("ck_credential_pages_token_status"), "token_status IN ('valid', 'dead')"
        )
    with op.batch_alter_table("credential_pages") as batch:
        # The model sets it on every insert; the default was only for the existing rows.
        batch.alter_column("token_status", server_default=None, existing_type=sa.String(16))
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_constraint(op.f("ck_webhook_events_type"), type_="check")
        batch.create_check_constraint(
            op.f("ck_webhook_events_type"),
            _in("type", (*EVENT_TYPES, "credential.user_token_expired")),
        )


def downgrade() -> None:
    op.execute("DELETE FROM webhook_events WHERE type = 'credential.user_token_expired'")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_constraint(op.f("ck_webhook_events_type"), type_="check")
        batch.create_check_constraint(op.f("ck_webhook_events_type"), _in("type", EVENT_TYPES))
    with op.batch_alter_table("credential_pages") as batch:
        batch.drop_constraint(op.f("ck_credential_pages_token_status"), type_="check")
        batch.drop_column("checked_at")
        batch.drop_column("tasks")
        batch.drop_column("token_status")
    # An expired user token is all the older schema could say of such a credential.
    op.execute("UPDATE credentials SET status = 'needs_reauth' WHERE status = 'user_token_expired'")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("user_token_dead_at")
        batch.drop_constraint(op.f("ck_credentials_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_credentials_status"), _in("status", CREDENTIAL_STATUSES)
        )
        batch.alter_column("status", type_=sa.String(length=16), existing_type=sa.String(length=32))

"""Conversation ids kept with each email; ``provider_state``: a provider's shared pause and drain rate.

``emails.correlation_id`` / ``conversation_id`` hold the ids of the command that
created the email (NULL on older rows: they fall back to the email id).
``provider_state`` is one row per provider, shared by every worker: a pause for
the provider as a whole (a 429's Retry-After, or a configuration error such as a
refused API key) and the drain rate's theoretical arrival time (GCRA).

Revision ID: 0004_n
Revises: 0003_i
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from emailer.adapters.persistence.types import UtcDateTime

revision = "0004_n"
down_revision = "0003_i"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("emails") as batch:
        batch.add_column(sa.Column("correlation_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("conversation_id", sa.Text(), nullable=True))
    op.create_table(
        "provider_state",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("paused_until", UtcDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("paused_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("rate_tat", sa.Float(), nullable=True),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_provider_state")),
    )


def downgrade() -> None:
    op.drop_table("provider_state")
    with op.batch_alter_table("emails") as batch:
        batch.drop_column("conversation_id")
        batch.drop_column("correlation_id")

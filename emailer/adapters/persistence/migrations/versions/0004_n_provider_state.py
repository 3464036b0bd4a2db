"""``provider_state``: a provider's shared pause and drain rate.

(The conversation ids kept with each email came with 0004_k.)
``provider_state`` is one row per provider, shared by every worker: a pause for
the provider as a whole (a 429's Retry-After, or a configuration error such as a
refused API key) and the drain rate's theoretical arrival time (GCRA).

Revision ID: 0004_n
Revises: 0004_k
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from emailer.adapters.persistence.types import UtcDateTime

revision = "0004_n"
down_revision = "0004_k"
branch_labels = None
depends_on = None


def upgrade() -> None:
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

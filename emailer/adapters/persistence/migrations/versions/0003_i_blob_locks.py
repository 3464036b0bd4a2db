"""Blob locks: ``blobs``, one row per referenced blob, locked while a reference is taken or dropped.

Revision ID: 0003_i
Revises: 0003_h
Create Date: 2026-11-28 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from emailer.adapters.persistence.types import UtcDateTime

revision = "0003_i"
down_revision = "0003_h"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("locked_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_blobs")),
    )


def downgrade() -> None:
    op.drop_table("blobs")

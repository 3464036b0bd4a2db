"""Delivery completion: ``emails.completed_at`` and ``recipients.delivery_implied``.

``completed_at``: when every recipient had a final outcome (``EmailDeliveryCompleted`` was published).
``delivery_implied``: a recipient delivered only as far as an open or a click implies.

Revision ID: 0003_h
Revises: 0002
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from emailer.adapters.persistence.types import UtcDateTime

revision = "0003_h"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completed_at", UtcDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivery_implied", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("delivery_implied")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("completed_at")

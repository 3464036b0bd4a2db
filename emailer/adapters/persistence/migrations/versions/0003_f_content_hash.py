"""Emails keep ``content_hash``: what the email says, hashed, so a re-send with another content is refused.

Emails stored before this revision keep NULL: a re-send of one of those is
compared with the hash of its stored content (``Email.check_resend``), which is
the same function of the same values. No backfill is needed, and none is done:
a migration must not depend on the domain's code of the day.

Revision ID: 0003_f
Revises: 0003_i
Create Date: 2026-11-28 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_f"
down_revision = "0003_i"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_hash", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("content_hash")

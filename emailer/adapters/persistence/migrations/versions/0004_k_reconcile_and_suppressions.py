"""Reconciliation and the suppression list: ``emails.attempt_started_at``, its correlation, ``suppressions``.

``attempt_started_at``: when the latest attempt was marked as under way; an email
waiting in ``dispatching`` is looked up at the provider once it is old enough
(partial index ``ix_emails_dispatching``). ``correlation_id`` / ``conversation_id``:
those of the command that created the email, carried by every later message
about it (a reconciliation or a scheduled retry included). ``suppressions``: addresses not sent
to, one row per lower-cased address, with the reason and the email that listed it.

Revision ID: 0004_k
Revises: 0003_f
Create Date: 2026-12-12 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from emailer.adapters.persistence.types import UtcDateTime

revision = "0004_k"
down_revision = "0003_f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt_started_at", UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("correlation_id", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("conversation_id", sa.Text(), nullable=True))
    op.create_index(
        "ix_emails_dispatching",
        "emails",
        ["attempt_started_at"],
        unique=False,
        postgresql_where=sa.text("status = 'dispatching'"),
        sqlite_where=sa.text("status = 'dispatching'"),
    )
    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("source_email_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_suppressions")),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_emails_dispatching", table_name="emails")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("conversation_id")
        batch_op.drop_column("correlation_id")
        batch_op.drop_column("attempt_started_at")

"""The database schema (SQLAlchemy Core), apart from the domain. Alembic's env.py uses ``metadata``."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from emailer.adapters.persistence.types import BigId, Json, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

emails = Table(
    "emails",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("subject", Text),
    Column("content", Json, nullable=False),
    Column("client_metadata", Json, nullable=False),
    Column("send_at", UtcDateTime),
    Column("not_before", UtcDateTime),
    Column("due_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("provider", String(32)),
    Column("provider_message_id", String(255)),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_seq", Integer, nullable=False),
    Column("completed_at", UtcDateTime),
    Column("content_hash", String(80)),  # what the email says, hashed (NULL: stored before 0003_f)
    Column("attempt_started_at", UtcDateTime),
    Column("correlation_id", Text),  # as the sender gave it: any length a header carries
    Column("conversation_id", Text),
    Index(
        "ix_emails_due_at",
        "due_at",
        postgresql_where=text("due_at IS NOT NULL"),
        sqlite_where=text("due_at IS NOT NULL"),
    ),
    Index("ix_emails_provider_message_id", "provider_message_id"),
    Index(
        "ix_emails_dispatching",
        "attempt_started_at",
        postgresql_where=text("status = 'dispatching'"),
        sqlite_where=text("status = 'dispatching'"),
    ),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email_id", String(128), ForeignKey("emails.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(3), nullable=False),
    Column("address", String(320), nullable=False),
    Column("name", String(256)),
    Column("status", String(16), nullable=False),
    Column("status_reason", Text),
    Column("status_at", UtcDateTime),
    Column("opens", Integer, nullable=False, default=0),
    Column("clicks", Integer, nullable=False, default=0),
    Column("complained", Boolean, nullable=False, default=False),
    Column("unsubscribed", Boolean, nullable=False, default=False),
    Column("delivery_implied", Boolean, nullable=False, default=False, server_default=false()),
    UniqueConstraint("email_id", "position"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email_id", String(128), ForeignKey("emails.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("content_id", String(255)),
    Column("sha256", String(64), nullable=False),
    Column("size", BigId, nullable=False),
    Column("purged_at", UtcDateTime),
    UniqueConstraint("email_id", "position"),
    Index("ix_attachments_sha256", "sha256"),
)

blobs = Table(
    "blobs",
    metadata,
    # One row per blob some email refers to: the lock that orders accepting a reference
    # against purging the blob (blob_refs.py). Counting happens over ``attachments``.
    Column("sha256", String(64), primary_key=True),
    Column("locked_at", UtcDateTime, nullable=False),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email_id", String(128), ForeignKey("emails.id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("detail", Json, nullable=False),
    Index("ix_timeline_email_id", "email_id", "id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("message_type", String(100), nullable=False),
    Column("intent", String(8), nullable=False),
    Column("destination", String(255), nullable=False),
    Column("headers", Json, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("dispatched_at", UtcDateTime),
    Column("claimed_until", UtcDateTime),  # a sweeper's lease on a pending row (outbox.py)
    Index(
        "ix_outbox_pending",
        "created_at",
        postgresql_where=text("dispatched_at IS NULL"),
        sqlite_where=text("dispatched_at IS NULL"),
    ),
)

INBOX_ID_CHARS = 200
"""The longest message id the inbox stores as it is (longer ones as their sha256: ``inbox.inbox_key``)."""

inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(INBOX_ID_CHARS), primary_key=True),
    Column("message_type", String(100), nullable=False),
    Column("handled_at", UtcDateTime, nullable=False),
)

provider_events = Table(
    "provider_events",
    metadata,
    Column("provider", String(32), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("email_id", String(128), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("provider", "event_id"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("address", String(320), primary_key=True),  # lower-cased
    Column("reason", String(16), nullable=False),
    Column("source_email_id", String(128)),
    Column("detail", Text),
    Column("created_at", UtcDateTime, nullable=False),
)

provider_state = Table(
    "provider_state",
    metadata,
    # One row per provider, shared by every worker (provider_state.py): a pause of the provider as a
    # whole (Retry-After, or a configuration error) and the drain rate's theoretical arrival time.
    Column("provider", String(32), primary_key=True),
    Column("paused_until", UtcDateTime),
    Column("reason", String(32)),
    Column("detail", Text),
    Column("paused_at", UtcDateTime),
    Column("rate_tat", Float),  # epoch seconds (GCRA); NULL: nothing sent under a limit yet
    Column("updated_at", UtcDateTime, nullable=False),
)

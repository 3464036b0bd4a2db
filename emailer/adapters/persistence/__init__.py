"""Persistence: SQLAlchemy tables, the repository and unit of work on them, the outbox store, migrations."""

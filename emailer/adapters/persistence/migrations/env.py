"""Alembic environment: the target is ``emailer.adapters.persistence.tables.metadata``.

The URL is taken, in order, from a connection handed in by ``emailer db
upgrade`` (``config.attributes["connection"]``), the ``sqlalchemy.url`` option,
or Emailer's settings (``EMAILER_DATABASE_URL``).
"""

from __future__ import annotations

from alembic import context

from emailer.adapters.persistence.engine import make_engine
from emailer.adapters.persistence.tables import metadata

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from emailer.config import load_settings

    return load_settings().effective_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

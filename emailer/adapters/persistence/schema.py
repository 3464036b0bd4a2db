"""Running migrations, and the check that keeps a worker off a database that is not at head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

SCRIPT_LOCATION = "emailer:adapters/persistence/migrations"


class SchemaNotAtHead(RuntimeError):
    """The database is not at the migration head; the message says what to run."""


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_at_head(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = f"at revision {current}" if current else "not initialised"
        raise SchemaNotAtHead(
            f"the database is {where}, but this version of Emailer needs revision {head}: "
            "run `emailer db upgrade` (with the same EMAILER_DATABASE_URL) first"
        )

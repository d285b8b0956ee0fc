"""Open the directory database and bring its schema up to date (Alembic, own version table)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from relay.db import make_engine, migration_lock

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "directory_alembic_version"
# any constant: serialises migrations when several nodes start at once on one PostgreSQL
_PG_LOCK = 0x6469726563746F72  # "director"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def migrate(engine: Engine) -> None:
    """Upgrade to head; a no-op (one SELECT) when already there.

    Several processes may start at once (relay nodes, the CLI, the sync timer): one
    migrates under `migration_lock` while the others wait, then find nothing to do."""
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return
    with migration_lock(engine, _PG_LOCK) as conn:
        if current_revision(conn) != head:
            command.upgrade(alembic_config(conn), "head")


def open_engine(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine

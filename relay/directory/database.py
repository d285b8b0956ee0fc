"""Open the directory database and bring its schema up to date (Alembic, own version table)."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from relay.db import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "directory_alembic_version"
# any constant: serialises migrations when several nodes start at once on one PostgreSQL
_PG_LOCK = 0x6469726563746F72  # "director"
_ALEMBIC = threading.Lock()


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

    Several processes may start at once (relay nodes, the CLI, the sync timer): on
    PostgreSQL an advisory lock lets one migrate while the others wait and then find
    nothing to do; on SQLite the loser of the write lock fails, and finds the schema
    at head when it looks again."""
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return
    with _ALEMBIC:  # alembic's `context` is process-global: one migration at a time
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
                command.upgrade(alembic_config(conn), "head")
        except sa.exc.DBAPIError:
            with engine.connect() as conn:
                if current_revision(conn) != head:
                    raise


def open_engine(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine

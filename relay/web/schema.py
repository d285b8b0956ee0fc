"""The web console's tables (SQLAlchemy Core) and their migration runner.

The tables are created only by the Alembic migrations in `migrations/` (own version
table `web_alembic_version`); these definitions are for queries and must match them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from relay.db import migration_lock

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "web_alembic_version"
_PG_LOCK = 0x7765622D636F6E73  # "web-cons": one migration at a time across nodes

metadata = sa.MetaData()

user = sa.Table(
    "web_user", metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16)),
    sa.Column("password_hash", sa.Text),
    sa.Column("enabled", sa.Boolean),
    sa.Column("created_at", sa.DateTime),
    sa.Column("password_changed_at", sa.DateTime),
    sa.Column("failed_count", sa.Integer),
    sa.Column("locked_until", sa.DateTime, nullable=True),
    sa.Column("last_login_at", sa.DateTime, nullable=True),
    sa.Column("session_epoch", sa.Integer),
)

user_mailbox = sa.Table(
    "web_user_mailbox", metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("mailbox", sa.String(320), primary_key=True),
)

secret = sa.Table(
    "web_secret", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128)),
    sa.Column("created_at", sa.DateTime),
)

verify_run = sa.Table(
    "web_verify", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime),
    sa.Column("started_by", sa.String(64)),
    sa.Column("node", sa.String(255)),
    sa.Column("state", sa.String(16)),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Column("entries_done", sa.BigInteger),
    sa.Column("entries_total", sa.BigInteger),
    sa.Column("ok", sa.Boolean, nullable=True),
    sa.Column("report", sa.Text, nullable=True),
)


def now() -> datetime:
    """UTC, naive: how the archive stores times too, in SQLite and PostgreSQL alike."""
    return datetime.now(UTC).replace(tzinfo=None)


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _current(conn: sa.Connection) -> set[str]:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return set(ctx.get_current_heads())


def migrate(engine: Engine) -> None:
    """Bring the web tables to the newest revision; one SELECT when they already are."""
    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    with engine.connect() as conn:
        if _current(conn) == heads:
            return
    cfg = _alembic_config()
    with migration_lock(engine, _PG_LOCK) as conn:
        if _current(conn) != heads:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

"""The archive tables as SQLAlchemy Core objects, and the migration runner.

The tables are created only by the Alembic migrations in `migrations/`; these
definitions are for queries and must match them.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from relay.db import migration_lock

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "archive_alembic_version"

metadata = sa.MetaData()
H = 64

head = sa.Table(
    "archive_head", metadata,
    sa.Column("chain", sa.String(16), primary_key=True),
    sa.Column("seq", sa.BigInteger),
    sa.Column("hash", sa.String(H)),
)

entry = sa.Table(
    "archive_entry", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("recorded_at", sa.DateTime),
    sa.Column("node", sa.String(255)),
    sa.Column("queue_id", sa.String(64)),
    sa.Column("mailbox", sa.String(320)),
    sa.Column("kind", sa.String(32)),
    sa.Column("direction", sa.String(8)),
    sa.Column("sender", sa.String(320)),
    sa.Column("recipients", sa.Text),
    sa.Column("subject", sa.Text),
    sa.Column("subject_fold", sa.Text),
    sa.Column("message_id", sa.String(998)),
    sa.Column("accepted_hash", sa.String(H)),
    sa.Column("accepted_size", sa.BigInteger),
    sa.Column("delivered_hash", sa.String(H)),
    sa.Column("delivered_size", sa.BigInteger),
    sa.Column("meta", sa.Text),
    sa.Column("prev_hash", sa.String(H)),
    sa.Column("entry_hash", sa.String(H)),
    sa.Column("purged_at", sa.DateTime, nullable=True),
)

blob = sa.Table(
    "archive_blob", metadata,
    sa.Column("hash", sa.String(H), primary_key=True),
    sa.Column("size", sa.BigInteger),
    sa.Column("data", sa.LargeBinary),
)

checkpoint = sa.Table(
    "archive_checkpoint", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.BigInteger),
    sa.Column("entry_hash", sa.String(H)),
    sa.Column("access_seq", sa.BigInteger, nullable=True),  # NULL: a v1 checkpoint
    sa.Column("access_hash", sa.String(H), nullable=True),
    sa.Column("signed_at", sa.DateTime),
    sa.Column("node", sa.String(255)),
    sa.Column("key_id", sa.String(32)),
    sa.Column("signature", sa.String(128)),
)

access = sa.Table(
    "archive_access", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime),
    sa.Column("who", sa.String(255)),
    sa.Column("action", sa.String(32)),
    sa.Column("target", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("prev_hash", sa.String(H)),
    sa.Column("entry_hash", sa.String(H)),
)

hold = sa.Table(
    "archive_hold", metadata,
    sa.Column("mailbox", sa.String(320), primary_key=True),
    sa.Column("since", sa.DateTime),
    sa.Column("who", sa.String(255)),
    sa.Column("reason", sa.Text),
)


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


_PG_LOCK = 0x61726368697665  # "archive": one migration at a time across nodes


def migrate(engine: Engine) -> None:
    """Bring the archive tables to the newest revision (idempotent)."""
    cfg = _alembic_config()
    with migration_lock(engine, _PG_LOCK) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_current(engine: Engine) -> bool:
    """True when the archive tables exist at the newest revision."""
    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return set(ctx.get_current_heads()) == heads

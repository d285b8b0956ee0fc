"""The petitions tables as SQLAlchemy Core objects, and the migration runner.

They live in the shared database beside the directory's and the archive's tables
(prefix `petitions_`, own Alembic version table). The tables are created only by
the migrations in `migrations/`; these definitions are for queries and must match.

- `petitions_counter`: one row per numbering scope (the year, or 0 when the number
  format has no year); a case number is taken by an upsert on it inside the
  transaction that inserts the case, so numbers never collide across nodes and a
  rolled-back case leaves no gap.
- `petitions_case`: one per citizen message and intake mailbox.
- `petitions_message`: the messages of a case (the petition, follow-ups, the
  acknowledgement, forwards that reported it, the answer), keyed to the archive by
  queue id.
- `petitions_report`: the official mailboxes a case was reported (forwarded) to.
- `petitions_event`: the case's history (opened, acknowledged, reported, answered,
  assigned, closed, reminded), with who did it.
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
from relay.directory.schema import UTCDateTime

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "petitions_alembic_version"
_PG_LOCK = 0x7065746974696F6E  # "petition": one migration at a time across nodes

ADDRESS = 320
MESSAGE_ID = 255  # a Message-ID longer than this is not kept (index size)

metadata = sa.MetaData()

counter = sa.Table(
    "petitions_counter", metadata,
    sa.Column("scope", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last", sa.BigInteger, nullable=False),
)

case = sa.Table(
    "petitions_case", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("number", sa.String(64), nullable=False, unique=True),
    sa.Column("mailbox", sa.String(ADDRESS), nullable=False),
    sa.Column("citizen", sa.String(ADDRESS), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("message_id", sa.String(MESSAGE_ID), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("deadline", sa.Date, nullable=False),
    sa.Column("working_days", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | answered | closed
    sa.Column("answered_at", UTCDateTime, nullable=True),
    sa.Column("answered_by", sa.String(ADDRESS), nullable=True),
    sa.Column("closed_reason", sa.Text, nullable=True),
    sa.Column("assignee", sa.String(ADDRESS), nullable=True),
    sa.Column("ack_message_id", sa.String(255), nullable=False),
    sa.Column("ack_status", sa.String(64), nullable=False),
    sa.Column("ack_queue_id", sa.String(64), nullable=True),
    sa.Column("node", sa.String(255), nullable=False),
)

message = sa.Table(
    "petitions_message", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("petitions_case.id"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),  # in | out
    # petition | follow-up | duplicate | acknowledgement | report | answer | auto-reply
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("queue_id", sa.String(64), nullable=False),
    sa.Column("sender", sa.String(ADDRESS), nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),  # JSON list
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("message_id", sa.String(MESSAGE_ID), nullable=False),
    sa.Column("login", sa.String(ADDRESS), nullable=True),  # who sent it as the mailbox
)

report = sa.Table(
    "petitions_report", metadata,
    sa.Column("case_id", sa.Integer, sa.ForeignKey("petitions_case.id"), primary_key=True),
    sa.Column("mailbox", sa.String(ADDRESS), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("by", sa.String(ADDRESS), nullable=False),
    sa.Column("queue_id", sa.String(64), nullable=False),
)

event = sa.Table(
    "petitions_event", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("petitions_case.id"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(ADDRESS), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _current(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return set(ctx.get_current_heads())


def is_current(engine: Engine) -> bool:
    return _current(engine) == set(ScriptDirectory.from_config(_alembic_config()).get_heads())


def migrate(engine: Engine) -> None:
    """Bring the petitions tables to the newest revision: one SELECT when already there;
    otherwise one process migrates under `migration_lock` while the others wait."""
    if is_current(engine):
        return
    cfg = _alembic_config()
    with migration_lock(engine, _PG_LOCK) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

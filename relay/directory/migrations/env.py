"""Alembic environment for the directory: its own version table, a connection handed in."""

from __future__ import annotations

from alembic import context

from relay.directory.schema import Base

VERSION_TABLE = "directory_alembic_version"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    # the archive's tables live in the same database: never look at them
    include_name=lambda name, type_, parent: type_ != "table" or name.startswith("directory_"),
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

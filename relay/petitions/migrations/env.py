"""Alembic environment for the petitions tables: their own version table
(`petitions_alembic_version`), on the connection `relay.petitions.schema.migrate`
hands over under `relay.db.migration_lock`."""

from __future__ import annotations

from alembic import context

VERSION_TABLE = "petitions_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

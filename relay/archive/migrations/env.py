"""Alembic environment for the archive tables.

Runs on the connection `relay.archive.schema.migrate` hands over; its own version
table (`archive_alembic_version`) so it shares the database with the directory's
migrations (`directory_alembic_version`) without either seeing the other.
"""

from __future__ import annotations

from alembic import context

VERSION_TABLE = "archive_alembic_version"

# relay.db.migration_lock already serialises nodes that start at once
connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

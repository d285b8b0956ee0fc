"""Alembic environment for the archive tables.

Runs on the connection `relay.archive.schema.migrate` hands over; its own version
table (`archive_alembic_version`) so it shares the database with the directory's
migrations (`directory_alembic_version`) without either seeing the other.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

VERSION_TABLE = "archive_alembic_version"

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    # two nodes starting at once: one migrates, the other waits and finds it done
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('relay.archive.migrate'))"))
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

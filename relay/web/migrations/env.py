"""Alembic environment for the web console's tables (`web_*`).

Runs on the connection `relay.web.schema.migrate` hands over, with its own version
table (`web_alembic_version`), so it shares the database with the directory's and
the archive's migrations without either seeing the other.
"""

from __future__ import annotations

from alembic import context

VERSION_TABLE = "web_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

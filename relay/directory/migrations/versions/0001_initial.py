"""The directory: agencies, people, mailboxes, delegations, releases, change log, state.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from relay.directory.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOT_REMOVED = sa.text("status != 'removed'")


def upgrade() -> None:
    op.create_table(
        "directory_agencies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("directory_agencies.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "directory_people",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hr_id", sa.String(64), unique=True),
        sa.Column("full_name", sa.String(400), nullable=False),
        sa.Column("title", sa.String(400), nullable=False),
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("directory_agencies.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "directory_mailboxes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("address", sa.String(254), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("directory_agencies.id"),
                  nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("directory_people.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("removed_at", UTCDateTime),
        sa.CheckConstraint("kind IN ('personal', 'official', 'citizen_intake')",
                           name="directory_mailboxes_kind"),
        sa.CheckConstraint("status IN ('active', 'suspended', 'removed')",
                           name="directory_mailboxes_status"),
        sa.CheckConstraint("address = lower(address)", name="directory_mailboxes_lowercase"),
    )
    op.create_index("directory_mailboxes_live_address", "directory_mailboxes", ["address"],
                    unique=True, sqlite_where=NOT_REMOVED, postgresql_where=NOT_REMOVED)
    op.create_table(
        "directory_delegations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("directory_mailboxes.id"),
                  nullable=False, index=True),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("directory_people.id"),
                  nullable=False, index=True),
        sa.Column("granted_by", sa.String(200), nullable=False),
        sa.Column("basis", sa.String(400), nullable=False),
        sa.Column("valid_from", UTCDateTime, nullable=False),
        sa.Column("valid_until", UTCDateTime),
    )
    op.create_table(
        "directory_address_releases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("address", sa.String(254), nullable=False, index=True),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("directory_mailboxes.id"),
                  nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("directory_people.id")),
        sa.Column("released_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "directory_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("key", sa.String(254), nullable=False, index=True),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
        sa.Column("basis", sa.String(400), nullable=False),
    )
    op.create_table(
        "directory_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO directory_state (id, version) VALUES (1, 0)")
    _append_only()


def _append_only() -> None:
    """The change log is evidence (Điều 5.3, 6): the database refuses edits and deletions."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION directory_changes_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'directory_changes is append-only';
            END $$ LANGUAGE plpgsql""")
        op.execute("""
            CREATE TRIGGER directory_changes_append_only
            BEFORE UPDATE OR DELETE ON directory_changes
            FOR EACH ROW EXECUTE FUNCTION directory_changes_append_only()""")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"""
                CREATE TRIGGER directory_changes_no_{verb.lower()}
                BEFORE {verb} ON directory_changes
                BEGIN SELECT RAISE(ABORT, 'directory_changes is append-only'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER directory_changes_append_only ON directory_changes")
        op.execute("DROP FUNCTION directory_changes_append_only()")
    for table in ("directory_state", "directory_changes", "directory_address_releases",
                  "directory_delegations", "directory_mailboxes", "directory_people",
                  "directory_agencies"):
        op.drop_table(table)

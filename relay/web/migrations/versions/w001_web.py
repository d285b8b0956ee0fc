"""The web console: its accounts, the mailboxes a petitions officer is assigned, the key
that signs session cookies, and the verify runs started from the web.

Revision ID: w001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "w001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_user",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("password_changed_at", sa.DateTime, nullable=False),
        sa.Column("failed_count", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.DateTime, nullable=True),
        sa.Column("last_login_at", sa.DateTime, nullable=True),
        # bumped by logout, disable and passwd: every cookie signed before is void
        sa.Column("session_epoch", sa.Integer, nullable=False),
    )
    op.create_table(
        "web_user_mailbox",
        sa.Column("username", sa.String(64), sa.ForeignKey("web_user.username",
                  ondelete="CASCADE"), primary_key=True),
        sa.Column("mailbox", sa.String(320), primary_key=True),
    )
    op.create_table(
        "web_secret",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "web_verify",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("entries_done", sa.BigInteger, nullable=False),
        sa.Column("entries_total", sa.BigInteger, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.Column("report", sa.Text, nullable=True),  # verify's report as JSON, or the error
    )


def downgrade() -> None:
    for table in ("web_verify", "web_secret", "web_user_mailbox", "web_user"):
        op.drop_table(table)

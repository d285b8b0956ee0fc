"""SMTP AUTH lockout state shared by every relay node (issue 10, item 3).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_auth_throttle",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("subject", sa.String(254), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", sa.Float, nullable=False),
        sa.Column("locked_until", sa.Float),
        sa.Column("last_attempt", sa.Float, nullable=False),
        sa.CheckConstraint("scope IN ('login', 'ip')", name="directory_auth_throttle_scope"),
    )
    op.create_index("directory_auth_throttle_window", "directory_auth_throttle",
                    ["window_start"])


def downgrade() -> None:
    op.drop_table("directory_auth_throttle")

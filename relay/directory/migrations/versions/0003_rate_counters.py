"""Rate counters per login and client IP, shared by every relay node (`relay.ratelimit`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from relay.directory.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_rate_counters",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(254), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("refused", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("directory_rate_counters_updated", "directory_rate_counters",
                    ["updated_at"])


def downgrade() -> None:
    op.drop_table("directory_rate_counters")

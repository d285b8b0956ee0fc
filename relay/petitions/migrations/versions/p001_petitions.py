"""Petitions (Điều 8): counters, cases, their messages, reports and history.

Revision ID: p001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from relay.directory.schema import UTCDateTime

revision = "p001"
down_revision = None
branch_labels = None
depends_on = None

A = 320  # an address
HAS_MESSAGE_ID = sa.text("message_id != ''")


def upgrade() -> None:
    op.create_table(
        "petitions_counter",
        sa.Column("scope", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "petitions_case",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(64), nullable=False, unique=True),
        sa.Column("mailbox", sa.String(A), nullable=False),
        sa.Column("citizen", sa.String(A), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("deadline", sa.Date, nullable=False),
        sa.Column("working_days", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answered_at", UTCDateTime, nullable=True),
        sa.Column("answered_by", sa.String(A), nullable=True),
        sa.Column("closed_reason", sa.Text, nullable=True),
        sa.Column("assignee", sa.String(A), nullable=True),
        sa.Column("ack_message_id", sa.String(255), nullable=False),
        sa.Column("ack_status", sa.String(64), nullable=False),
        sa.Column("ack_queue_id", sa.String(64), nullable=True),
        sa.Column("node", sa.String(255), nullable=False),
        sa.CheckConstraint("status IN ('open', 'answered', 'closed')",
                           name="petitions_case_status"),
    )
    op.create_index("ix_petitions_case_mailbox", "petitions_case", ["mailbox", "received_at"])
    op.create_index("ix_petitions_case_citizen", "petitions_case", ["citizen"])
    op.create_index("ix_petitions_case_deadline", "petitions_case", ["status", "deadline"])
    op.create_index("ix_petitions_case_ack", "petitions_case", ["ack_message_id"])
    # a citizen's message delivered twice (a client retrying after a lost 250) is one case
    op.create_index("ux_petitions_case_message", "petitions_case",
                    ["mailbox", "citizen", "message_id"], unique=True,
                    sqlite_where=HAS_MESSAGE_ID, postgresql_where=HAS_MESSAGE_ID)
    op.create_table(
        "petitions_message",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("petitions_case.id"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(A), nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("login", sa.String(A), nullable=True),
    )
    op.create_index("ix_petitions_message_case", "petitions_message", ["case_id"])
    op.create_index("ix_petitions_message_id", "petitions_message", ["message_id"])
    op.create_table(
        "petitions_report",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("petitions_case.id"),
                  primary_key=True),
        sa.Column("mailbox", sa.String(A), primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("by", sa.String(A), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
    )
    op.create_table(
        "petitions_event",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("petitions_case.id"), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(A), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_petitions_event_case", "petitions_event", ["case_id"])


def downgrade() -> None:
    for table in ("petitions_event", "petitions_report", "petitions_message",
                  "petitions_case", "petitions_counter"):
        op.drop_table(table)

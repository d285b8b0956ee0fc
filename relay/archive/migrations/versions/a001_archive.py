"""The archive: hash-chained entries, blobs, checkpoints, access log, legal holds.

Revision ID: a001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS = "0" * 64
H = 64  # hex sha256 / chain hash


def upgrade() -> None:
    head = op.create_table(
        "archive_head",
        sa.Column("chain", sa.String(16), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(H), nullable=False),
    )
    op.bulk_insert(head, [
        {"chain": "entries", "seq": 0, "hash": GENESIS},
        {"chain": "access", "seq": 0, "hash": GENESIS},
    ])
    op.create_table(
        "archive_entry",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("subject_fold", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("accepted_hash", sa.String(H), nullable=False),
        sa.Column("accepted_size", sa.BigInteger, nullable=False),
        sa.Column("delivered_hash", sa.String(H), nullable=False),
        sa.Column("delivered_size", sa.BigInteger, nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(H), nullable=False),
        sa.Column("entry_hash", sa.String(H), nullable=False),
        sa.Column("purged_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_archive_entry_mailbox", "archive_entry", ["mailbox", "recorded_at"])
    op.create_index("ix_archive_entry_recorded_at", "archive_entry", ["recorded_at"])
    op.create_index("ix_archive_entry_sender", "archive_entry", ["sender"])
    op.create_index("ix_archive_entry_message_id", "archive_entry", ["message_id"])
    op.create_index("ix_archive_entry_accepted", "archive_entry", ["accepted_hash"])
    op.create_index("ix_archive_entry_delivered", "archive_entry", ["delivered_hash"])
    op.create_table(
        "archive_blob",
        sa.Column("hash", sa.String(H), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "archive_checkpoint",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False, index=True),
        sa.Column("entry_hash", sa.String(H), nullable=False),
        sa.Column("signed_at", sa.DateTime, nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    op.create_table(
        "archive_access",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("who", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(H), nullable=False),
        sa.Column("entry_hash", sa.String(H), nullable=False),
    )
    op.create_table(
        "archive_hold",
        sa.Column("mailbox", sa.String(320), primary_key=True),
        sa.Column("since", sa.DateTime, nullable=False),
        sa.Column("who", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("archive_hold", "archive_access", "archive_checkpoint", "archive_blob",
                  "archive_entry", "archive_head"):
        op.drop_table(table)

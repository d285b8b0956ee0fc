"""Checkpoints sign the access log's head too (FORMAT.md, checkpoint v2).

Revision ID: a002
Revises: a001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a002"
down_revision = "a001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL in checkpoints written before: they are v1 and sign the entries head only
    with op.batch_alter_table("archive_checkpoint") as batch:
        batch.add_column(sa.Column("access_seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("access_hash", sa.String(64), nullable=True))
    op.create_index("ix_archive_checkpoint_access_seq", "archive_checkpoint", ["access_seq"])


def downgrade() -> None:
    op.drop_index("ix_archive_checkpoint_access_seq", "archive_checkpoint")
    with op.batch_alter_table("archive_checkpoint") as batch:
        batch.drop_column("access_hash")
        batch.drop_column("access_seq")

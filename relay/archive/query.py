"""Reading the archive: the auditors' filters, one entry, and a message's exact bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from relay.archive import chain, schema
from relay.archive.blobs import BlobStore, CorruptBlob, decompress
from relay.archive.errors import ArchiveError
from relay.archive.normalize import address


@dataclass
class Filters:
    mailbox: str | None = None
    sender: str | None = None
    recipient: str | None = None
    since: datetime | None = None  # recorded_at, UTC (naive)
    until: datetime | None = None
    subject: str | None = None  # contains, NFC + case-folded
    since_seq: int | None = None
    limit: int | None = None


def select(filters: Filters) -> sa.Select:
    """The entries matching every given filter, oldest first."""
    e = schema.entry
    stmt = sa.select(e).order_by(e.c.seq)
    if filters.mailbox:
        stmt = stmt.where(e.c.mailbox == address(filters.mailbox))
    if filters.sender:
        stmt = stmt.where(e.c.sender == address(filters.sender))
    if filters.recipient:
        stmt = stmt.where(e.c.recipients.contains(
            json.dumps(address(filters.recipient)), autoescape=True))
    if filters.since:
        stmt = stmt.where(e.c.recorded_at >= filters.since)
    if filters.until:
        stmt = stmt.where(e.c.recorded_at < filters.until)
    if filters.subject:
        stmt = stmt.where(e.c.subject_fold.contains(chain.fold(filters.subject),
                                                    autoescape=True))
    if filters.since_seq:
        stmt = stmt.where(e.c.seq >= filters.since_seq)
    if filters.limit:
        stmt = stmt.limit(filters.limit)
    return stmt


def search(db: Engine, filters: Filters) -> list[RowMapping]:
    with db.connect() as conn:
        return list(conn.execute(select(filters)).mappings())


def get(db: Engine, seq: int) -> RowMapping | None:
    with db.connect() as conn:
        return conn.execute(sa.select(schema.entry).where(schema.entry.c.seq == seq)
                            ).mappings().first()


def read_blob(db: Engine, blobs: BlobStore, digest: str, size: int,
              conn: Connection | None = None) -> bytes:
    """The exact bytes, checked against their address; raises ArchiveError if not."""
    if conn is None:
        with db.connect() as c:
            stored = blobs.get(c, digest)
    else:
        stored = blobs.get(conn, digest)
    if stored is None:
        raise ArchiveError(f"blob {digest} is missing")
    try:
        data = decompress(stored, size)
    except CorruptBlob as exc:
        raise ArchiveError(f"blob {digest} is corrupt: {exc}") from None
    if chain.sha256(data) != digest:
        raise ArchiveError(f"blob {digest} does not match its hash")
    return data

"""Read-only queries the web console needs beside `Archive.search(Filters)`.

One search field over subject, sender and recipients, newest first with keyset
paging (`before`), and the few counts a status page shows. Reads the tables of
`schema` through `Archive.db` only: nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from relay.archive import chain, schema
from relay.archive.store import Archive

MAX_QUERY = 200  # characters of the search field that count


@dataclass
class Browse:
    q: str = ""  # in the subject (case- and composition-insensitive), sender or recipients
    mailbox: str = ""  # the archived mailbox, either direction
    direction: str = ""  # "in" (received), "out" (sent), "" both
    since: datetime | None = None  # recorded at or after (UTC, naive)
    until: datetime | None = None  # recorded before
    before: int | None = None  # entries older than this seq (the next page)
    limit: int = 50


def _like(column: sa.ColumnElement[str], text: str) -> sa.ColumnElement[bool]:
    return column.contains(text, autoescape=True)


def statement(b: Browse) -> sa.Select:
    e = schema.entry
    stmt = sa.select(e).order_by(e.c.seq.desc()).limit(max(1, b.limit))
    q = b.q.strip()[:MAX_QUERY]
    if q:
        folded = chain.fold(q)
        lowered = q.lower()
        # recipients is a JSON list: non-ASCII addresses are stored as \\u escapes
        escaped = json.dumps(lowered)[1:-1]
        stmt = stmt.where(sa.or_(_like(e.c.subject_fold, folded), _like(e.c.sender, lowered),
                                 _like(e.c.recipients, escaped)))
    if b.mailbox.strip():
        stmt = stmt.where(e.c.mailbox == b.mailbox.strip().strip("<>").lower())
    if b.direction in ("in", "out"):
        stmt = stmt.where(e.c.direction == b.direction)
    if b.since is not None:
        stmt = stmt.where(e.c.recorded_at >= b.since)
    if b.until is not None:
        stmt = stmt.where(e.c.recorded_at < b.until)
    if b.before is not None:
        stmt = stmt.where(e.c.seq < b.before)
    return stmt


def browse(archive: Archive, b: Browse) -> list[RowMapping]:
    with archive.db.connect() as conn:
        return list(conn.execute(statement(b)).mappings())


def entry_count(archive: Archive) -> int:
    with archive.db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.entry))
                   .scalar() or 0)


def head(archive: Archive) -> int:
    """The chain head's seq: how many entries the relay has appended."""
    h = schema.head
    with archive.db.connect() as conn:
        return int(conn.execute(sa.select(h.c.seq).where(h.c.chain == "entries")).scalar()
                   or 0)


def last_checkpoint(archive: Archive) -> RowMapping | None:
    c = schema.checkpoint
    with archive.db.connect() as conn:
        return conn.execute(sa.select(c).order_by(c.c.id.desc()).limit(1)).mappings().first()


def recipients(row: RowMapping) -> list[str]:
    try:
        value = json.loads(row["recipients"])
    except (TypeError, ValueError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []

"""The heads of the two chains (`entries` and `access`): the one row per chain that
every writer goes through.

Appending starts by bumping the head row (`UPDATE archive_head ... RETURNING`), which
takes the row lock on PostgreSQL and the write lock on SQLite: the next writer waits
until this one commits and then links to it, whichever node it runs on.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from relay.archive import schema

ENTRIES = "entries"
ACCESS = "access"


def take(conn: Connection, name: str, n: int = 0) -> tuple[int, str]:
    """Reserve n positions on a chain (0: just lock it); the chain's last (seq, hash)
    after the reservation. Holds the chain's lock until the transaction ends."""
    h = schema.head
    stmt = (sa.update(h).where(h.c.chain == name).values(seq=h.c.seq + n)
            .returning(h.c.seq, h.c.hash))
    seq, prev = conn.execute(stmt).one()
    return int(seq), prev


def advance(conn: Connection, name: str, value: str) -> None:
    """Record the hash of the last position taken."""
    conn.execute(sa.update(schema.head).where(schema.head.c.chain == name).values(hash=value))


def read(conn: Connection, name: str) -> tuple[int, str]:
    """The committed (seq, hash) of a chain, without locking it."""
    h = schema.head
    seq, value = conn.execute(sa.select(h.c.seq, h.c.hash).where(h.c.chain == name)).one()
    return int(seq), value

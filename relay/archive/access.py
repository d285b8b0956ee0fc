"""The access log: who looked at, exported, held, released or purged what, when and why.

Its own hash chain (domain `ACCESS_DOMAIN`), and its head is signed by every checkpoint
beside the entries head, so a record cannot be removed, changed or forged under a
checkpoint without `verify` seeing it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from relay.archive import chain, heads, schema
from relay.archive.normalize import clean_text, json_text

ACTIONS = ("show", "export", "hold", "release", "purge")
# records that take protection away: verify accepts them only with a checkpoint that
# was signed in their own transaction and names them
MUST_BE_SIGNED = ("release", "purge")


def append(conn: Connection, who: str, action: str, target: dict[str, Any],
           reason: str) -> int:
    """Link one record into the access chain (in the caller's transaction); its seq."""
    seq, prev = heads.take(conn, heads.ACCESS, 1)
    row = {"seq": seq, "at": chain.now(), "who": clean_text(who, 255), "action": action,
           "target": json_text(target), "reason": clean_text(reason), "prev_hash": prev}
    row["entry_hash"] = chain.link(prev, chain.fields_digest(
        chain.access_fields(row), chain.ACCESS_DOMAIN))
    conn.execute(schema.access.insert().values(**row))
    heads.advance(conn, heads.ACCESS, row["entry_hash"])
    return seq


def records(db: Engine, limit: int | None = None) -> list[RowMapping]:
    """The newest `limit` records (all without), oldest first."""
    a = schema.access
    stmt = sa.select(a).order_by(a.c.seq.desc())
    if limit:
        stmt = stmt.limit(limit)
    with db.connect() as conn:
        return list(reversed(conn.execute(stmt).mappings().all()))

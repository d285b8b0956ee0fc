"""Message rate limits per login and per client IP, counted across every relay node.

The counters live in the directory database (`directory_rate_counters`), which
every node already reaches: SQLite for one machine (several front processes), one
PostgreSQL for many. Each message is one statement that increments the counter
of the current window only while it is under the limit:

    INSERT ... ON CONFLICT (scope, key, window_start)
        DO UPDATE SET count = count + 1 WHERE count + 1 <= :cap RETURNING count

atomic on both databases (a row lock on PostgreSQL, the single writer on SQLite),
so two nodes can never both take the last slot. The limit is a sliding window
approximated from two fixed ones (the previous window's count weighted by how much
of it still overlaps), which has no burst at a window boundary and needs two rows
per key, not one per message. A refused attempt is not counted against the
sender (so a mailbox that stops spamming is free again within the window) but is
counted in `refused`, which `relay directory mailbox show` and the decision log
report: a compromised mailbox is the common case in government mail.

Counters need no durability (losing the last second of counts on a power cut is
harmless): SQLite writes them with `synchronous=NORMAL`, PostgreSQL with
`synchronous_commit = off`, so a message costs no fsync here; and the previous
window's count is read at most every 10 s per key, so a message costs one statement.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from relay.anvil import client_key
from relay.config import parse_duration
from relay.directory.schema import RateCounter, utcnow

TABLE = RateCounter.__table__
KEEP_REFUSED = 7 * 86400  # windows with refusals stay this long (for `directory show`)
SWEEP_EVERY = 300.0
PREVIOUS_TTL = 10.0  # a closed window's count, once read, is trusted this long
MAX_REMEMBERED = 100_000
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(.+?)\s*$")


@dataclass(frozen=True)
class Limit:
    count: int
    window: int  # seconds

    def __str__(self) -> str:
        return f"{self.count}/{_duration(self.window)}"


def parse_limit(value: Any) -> Limit:
    """`500/1h`, `20/10m`, `1000/d` (a bare unit is one of it)."""
    m = _LIMIT.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected a rate such as 500/1h, got {value!r}")
    span = m.group(2)
    window = parse_duration(f"1{span}" if span.isalpha() else span)
    if not 1 <= window <= 31 * 86400 or int(m.group(1)) < 1:
        raise ValueError(f"expected a rate such as 500/1h (1 s to 31 d), got {value!r}")
    return Limit(int(m.group(1)), int(window))


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def ip_key(address: str) -> str:
    """The client's key: the IPv4 address, or the IPv6 /64 (`relay.anvil.client_key`)."""
    return client_key(address)


@dataclass(frozen=True)
class Usage:
    scope: str  # login | ip
    key: str
    count: float  # the sliding-window estimate, this message included when allowed
    limit: Limit
    over: bool
    refused: int = 0  # attempts refused in the current window

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "key": self.key, "count": round(self.count, 1),
                "limit": str(self.limit), "over": self.over, "refused": self.refused}


def _upsert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(TABLE)


class RateLimiter:
    """Counters in the directory database at URL; the engine opens on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._swept = 0.0
        # (scope, key, previous window) -> (when read, its count)
        self._previous: dict[tuple[str, str, int], tuple[float, int]] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from relay.db import make_engine
            from relay.directory.database import migrate

            engine = make_engine(self.url)
            relaxed = ("PRAGMA synchronous=NORMAL" if engine.dialect.name == "sqlite"
                       else "SET synchronous_commit = off")

            @event.listens_for(engine, "connect")  # before any connection is pooled
            def _relaxed(dbapi_conn, _record) -> None:  # noqa: ANN001
                cursor = dbapi_conn.cursor()
                cursor.execute(relaxed)
                cursor.close()
                if engine.dialect.name != "sqlite":
                    dbapi_conn.commit()
            migrate(engine)  # the table comes with the directory's schema
            self._engine = engine
        return self._engine

    async def hit(self, scope: str, key: str, limit: Limit, now: float | None = None
                  ) -> Usage:
        """Count one message for KEY unless that would pass LIMIT."""
        return await asyncio.to_thread(self.hit_now, scope, key, limit, now)

    def hit_now(self, scope: str, key: str, limit: Limit, now: float | None = None) -> Usage:
        now = time.time() if now is None else now
        start = int(now // limit.window * limit.window)
        with self.engine.connect() as conn:
            # the previous window is closed: its count is read once in a while, not for
            # every message; and before the write transaction begins (on SQLite a read
            # that turns into a write can fail at once when another process wrote
            # meanwhile, SQLITE_BUSY_SNAPSHOT; a transaction that starts by writing waits)
            name = (scope, key, start - limit.window)
            known = self._previous.get(name)
            clock = time.monotonic()
            if known is not None and clock - known[0] < PREVIOUS_TTL:
                previous = known[1]
            else:
                previous = conn.execute(
                    sa.select(TABLE.c.count).where(TABLE.c.scope == scope, TABLE.c.key == key,
                                                   TABLE.c.window_start == name[2])
                ).scalar() or 0
                conn.rollback()
                if len(self._previous) >= MAX_REMEMBERED:
                    self._previous.clear()
                self._previous[name] = (clock, previous)
            return self._count(conn, scope, key, limit, now, start, previous)

    def _count(self, conn: Connection, scope: str, key: str, limit: Limit, now: float,
               start: int, previous: int) -> Usage:
        with conn.begin():
            carried = previous * (1 - (now - start) / limit.window)
            cap = limit.count - carried  # this window may hold at most `cap`, us included
            stamp = utcnow()
            if cap >= 1:
                insert = _upsert(conn.dialect.name).values(
                    scope=scope, key=key, window_start=start, window=limit.window, count=1,
                    refused=0, updated_at=stamp)
                row = conn.execute(insert.on_conflict_do_update(
                    index_elements=["scope", "key", "window_start"],
                    set_={"count": TABLE.c.count + 1, "updated_at": stamp},
                    where=TABLE.c.count + 1 <= cap,
                ).returning(TABLE.c.count, TABLE.c.refused)).first()
                if row is not None:
                    self._sweep(conn, now)
                    return Usage(scope, key, row[0] + carried, limit, False, row[1])
            insert = _upsert(conn.dialect.name).values(
                scope=scope, key=key, window_start=start, window=limit.window, count=0,
                refused=1, updated_at=stamp)
            row = conn.execute(insert.on_conflict_do_update(
                index_elements=["scope", "key", "window_start"],
                set_={"refused": TABLE.c.refused + 1, "updated_at": stamp},
            ).returning(TABLE.c.count, TABLE.c.refused)).one()
            return Usage(scope, key, row[0] + carried, limit, True, row[1])

    def _sweep(self, conn: Connection, now: float) -> None:
        """Forget old windows (those with refusals after a week), now and then."""
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        conn.execute(TABLE.delete().where(sa.or_(
            TABLE.c.updated_at < utcnow() - timedelta(seconds=KEEP_REFUSED),
            sa.and_(TABLE.c.refused == 0,
                    TABLE.c.window_start + 2 * TABLE.c.window < math.floor(now)))))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def usage(engine: Engine, scope: str, key: str, limit: Limit | None,
          now: float | None = None) -> dict[str, Any]:
    """What `relay directory mailbox show` prints: this window's estimate against the
    limit, and the refusals of the last week."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(TABLE.c.window_start, TABLE.c.window, TABLE.c.count, TABLE.c.refused,
                      TABLE.c.updated_at)
            .where(TABLE.c.scope == scope, TABLE.c.key == key)
            .order_by(TABLE.c.window_start)).all()
    out: dict[str, Any] = {"limit": str(limit) if limit else None, "count": 0.0,
                           "over": False, "refused_last_7d": sum(r.refused for r in rows),
                           "last_refused": None}
    refused = [r for r in rows if r.refused]
    if refused:
        out["last_refused"] = refused[-1].updated_at
    if limit is not None:
        start = int(now // limit.window * limit.window)
        by_start = {r.window_start: r.count for r in rows if r.window == limit.window}
        carried = by_start.get(start - limit.window, 0) * (1 - (now - start) / limit.window)
        out["count"] = round(by_start.get(start, 0) + carried, 1)
        out["over"] = out["count"] >= limit.count
    return out

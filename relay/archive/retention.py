"""Retention and legal hold: purge message bytes older than `archive.retention`, except
for mailboxes on hold.

A purge keeps each entry as a tombstone (hashes intact, `purged_at` set) so the chain
stays whole, and is recorded in the access log with the entries it covers. Purges and
releases take protection away, so each is signed in its own transaction (a checkpoint
that names its access-log record): without the key they are refused, and `verify`
reports any that no such checkpoint vouches for, or that came before the configured
retention period ended, or that touched a mailbox on hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from relay.archive import access, chain, heads, schema
from relay.archive.blobs import BlobStore
from relay.archive.normalize import address, clean_text
from relay.archive.signing import Checkpoints


@dataclass
class PurgeReport:
    cutoff: datetime | None
    purged: list[int] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # mailbox -> entries kept by the hold
    blobs_deleted: int = 0
    dry_run: bool = False


def ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[1,2,3,7] -> [[1,3],[7,7]]: how a purge record names the entries it removed."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def _chunks(items: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class Retention:
    def __init__(self, db: Engine, blobs: BlobStore, checkpoints: Checkpoints,
                 retention_seconds: float) -> None:
        self.db = db
        self.blobs = blobs
        self.checkpoints = checkpoints
        self.retention = retention_seconds

    def holds(self) -> list[RowMapping]:
        with self.db.connect() as conn:
            return list(conn.execute(sa.select(schema.hold).order_by(schema.hold.c.mailbox))
                        .mappings())

    def hold(self, mailbox: str, who: str, reason: str) -> bool:
        """Place a hold; False when there already is one. Signed when the key is here."""
        addr = address(mailbox)
        with self.db.begin() as conn:
            exists = conn.execute(sa.select(schema.hold.c.mailbox)
                                  .where(schema.hold.c.mailbox == addr)).first()
            if exists:
                return False
            conn.execute(schema.hold.insert().values(mailbox=addr, since=chain.now(),
                                                     who=clean_text(who, 255), reason=reason))
            access.append(conn, who, "hold", {"mailbox": addr}, reason)
            self.checkpoints.sign(conn)
        return True

    def release(self, mailbox: str, who: str, reason: str) -> bool:
        """Lift a hold; False when there is none. Needs the signing key."""
        key = self.checkpoints.key.require("releasing a legal hold")
        addr = address(mailbox)
        with self.db.begin() as conn:
            gone = conn.execute(schema.hold.delete().where(schema.hold.c.mailbox == addr))
            if not gone.rowcount:
                return False
            access.append(conn, who, "release", {"mailbox": addr}, reason)
            self.checkpoints.sign(conn, key=key)
        return True

    def purge(self, who: str, reason: str = "retention", at: datetime | None = None,
              dry_run: bool = False) -> PurgeReport:
        """Delete the blobs of entries older than the retention period, except held ones."""
        if not self.retention:
            return PurgeReport(cutoff=None, dry_run=dry_run)
        at = at or chain.now()
        cutoff = at - timedelta(seconds=self.retention)
        e = schema.entry
        report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
        with self.db.begin() as conn:
            # serialise with appends and other purges: the chain lock
            heads.take(conn, heads.ENTRIES)
            held = {r.mailbox for r in conn.execute(sa.select(schema.hold.c.mailbox))}
            expired = conn.execute(
                sa.select(e.c.seq, e.c.mailbox, e.c.accepted_hash, e.c.delivered_hash)
                .where(e.c.recorded_at < cutoff, e.c.purged_at.is_(None))).all()
            doomed: set[str] = set()
            for row in expired:
                if row.mailbox in held:
                    report.held[row.mailbox] = report.held.get(row.mailbox, 0) + 1
                else:
                    report.purged.append(row.seq)
                    doomed.update((row.accepted_hash, row.delivered_hash))
            if not report.purged or dry_run:
                return report
            key = self.checkpoints.key.require("purging")
            purged = set(report.purged)
            keep = set()
            for digest in doomed:  # a blob shared with a live entry stays
                users = conn.execute(sa.select(e.c.seq).where(
                    sa.or_(e.c.accepted_hash == digest, e.c.delivered_hash == digest),
                    e.c.purged_at.is_(None)))
                if any(u.seq not in purged for u in users):
                    keep.add(digest)
            doomed -= keep
            for chunk in _chunks(report.purged, 500):
                conn.execute(sa.update(e).where(e.c.seq.in_(chunk)).values(purged_at=at))
            access.append(conn, who, "purge", {
                "entries": ranges(report.purged), "cutoff": chain.timestamp(cutoff),
                "retention_seconds": self.retention,
                "blobs": sorted(doomed), "held": report.held}, reason)
            self.checkpoints.sign(conn, key=key)
            if self.blobs.in_transaction:
                for digest in doomed:
                    self.blobs.delete(conn, digest)
        if not self.blobs.in_transaction:  # files go only once the tombstones are committed
            for digest in doomed:
                self.blobs.delete(None, digest)  # type: ignore[arg-type]
        report.blobs_deleted = len(doomed)
        return report

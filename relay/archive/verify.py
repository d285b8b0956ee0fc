"""`relay archive verify`: recompute every blob hash, the chain, and every checkpoint.

Each kind of tampering leaves its own mark, reported at the entry where it starts:
- a changed blob byte: the blob no longer decompresses or hashes to its address (`blob`);
- a changed index row: the entry's recomputed hash differs from the stored one (`fields`);
- a deleted row: a gap in the sequence (`missing`), and the next entry's link breaks;
- an inserted or reordered row: the entry does not link to the one before it (`link`);
- a tail cut after a checkpoint: a signed checkpoint names an entry that is gone (`tail`);
- a rewritten chain: the signed checkpoint no longer matches the entry it names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.archive import chain, schema
from relay.archive.blobs import CorruptBlob, decompress
from relay.archive.store import Archive

BATCH = 1000
Progress = Callable[[int, int], None]  # entries done, bytes hashed


@dataclass
class Problem:
    seq: int | None
    kind: str
    message: str
    chain: str = "entries"

    def __str__(self) -> str:
        where = f"{'access-log ' if self.chain == 'access' else ''}entry #{self.seq}: " \
            if self.seq is not None else ""
        return f"{where}{self.message}"


@dataclass
class Report:
    entries: int = 0
    bytes: int = 0
    blobs: int = 0
    checkpoints: int = 0
    access_entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_checkpoint: int | None = None
    tombstones: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        entry = [p for p in self.problems if p.chain == "entries"]
        pool = entry or self.problems
        return min(pool, key=lambda p: (p.seq is None, p.seq or 0)) if pool else None

    def as_dict(self) -> dict[str, Any]:
        first = self.first_bad
        return {
            "ok": self.ok, "entries": self.entries, "bytes": self.bytes, "blobs": self.blobs,
            "checkpoints": self.checkpoints, "access_entries": self.access_entries,
            "first_seq": self.first_seq, "last_seq": self.last_seq,
            "last_checkpoint": self.last_checkpoint,
            "uncovered": max(0, (self.last_seq or 0) - (self.last_checkpoint or 0))
            if self.last_seq else 0,
            "tombstones": self.tombstones, "seconds": round(self.seconds, 3),
            "first_bad": None if first is None else {
                "seq": first.seq, "kind": first.kind, "chain": first.chain,
                "message": str(first)},
            "problems": [{"seq": p.seq, "kind": p.kind, "chain": p.chain,
                          "message": p.message} for p in self.problems],
        }


Keys = Ed25519PublicKey | Sequence[Ed25519PublicKey] | None


def keyring(keys: Keys) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id: the current one and any retired by `keygen --force`."""
    if keys is None:
        return {}
    if isinstance(keys, Ed25519PublicKey):
        keys = [keys]
    return {chain.key_id(k): k for k in keys}


def check_signature(cp: Any, keys: Keys) -> str | None:
    """None when the checkpoint is signed by one of these keys, else why not."""
    ring = keyring(keys)
    key = ring.get(cp["key_id"])
    if key is None:
        return (f"checkpoint signed by key {cp['key_id']}, not by the given key(s) "
                f"{', '.join(ring) or '(none)'}")
    signed_at = cp["signed_at"]
    if isinstance(signed_at, datetime):
        signed_at = chain.timestamp(signed_at)
    message = chain.checkpoint_message(int(cp["seq"]), cp["entry_hash"], signed_at,
                                       cp["key_id"])
    try:
        key.verify(bytes.fromhex(cp["signature"]), message)
    except (InvalidSignature, ValueError):
        return "checkpoint signature is not valid"
    return None


def _head(archive: Archive, name: str) -> Any:
    with archive.db.connect() as conn:
        return conn.execute(sa.select(schema.head).where(schema.head.c.chain == name)
                            ).mappings().one()


def _purge_records(report: Report, archive: Archive) -> dict[int, dict[str, Any]]:
    """Verify the access log's own chain; the purge records by entry seq."""
    by_seq: dict[int, dict[str, Any]] = {}
    running = chain.GENESIS
    expected = 1
    head = _head(archive, "access")
    a = schema.access
    with archive.db.connect() as conn:
        rows = conn.execute(sa.select(a).where(a.c.seq <= head["seq"]).order_by(a.c.seq)
                            ).mappings()
        for row in rows:
            report.access_entries += 1
            seq = int(row["seq"])
            if seq != expected:
                report.problems.append(Problem(expected, "missing", f"entries #{expected}–"
                                               f"#{seq - 1} are missing (deleted)", "access"))
            if row["prev_hash"] != running:
                report.problems.append(Problem(seq, "link", "does not follow the entry before "
                                               "it (reordered, inserted or one removed)",
                                               "access"))
            fields = chain.access_fields(row)
            if chain.link(row["prev_hash"], chain.fields_digest(
                    fields, chain.ACCESS_DOMAIN)) != row["entry_hash"]:
                report.problems.append(Problem(seq, "fields", "changed after it was written",
                                               "access"))
            running, expected = row["entry_hash"], seq + 1
            if row["action"] == "purge":
                info = {"at": fields["at"], "who": fields["who"],
                        "cutoff": fields["target"].get("cutoff"), "access_seq": seq}
                for lo, hi in fields["target"].get("entries", []):
                    for s in range(lo, hi + 1):
                        by_seq[s] = info
        beyond = conn.execute(sa.select(sa.func.min(a.c.seq)).where(a.c.seq > head["seq"])
                              ).scalar()
    if beyond is not None and int(beyond) > int(_head(archive, "access")["seq"]):
        report.problems.append(Problem(int(beyond), "inserted", "beyond the access-log head: "
                                       "added outside the relay", "access"))
    if int(head["seq"]) != expected - 1 or head["hash"] != running:
        report.problems.append(Problem(None, "head", f"access-log head says #{head['seq']} "
                                       f"but the log ends at #{expected - 1} (cut or rewritten)",
                                       "access"))
    return by_seq


def verify_archive(archive: Archive, public_key: Keys,
                   since_seq: int | None = None, progress: Progress | None = None) -> Report:
    report = Report()
    started = time.perf_counter()
    purges = _purge_records(report, archive)
    e, c = schema.entry, schema.checkpoint
    # the head first: entries and checkpoints the relay appends while we read are
    # beyond it, and are left for the next run instead of looking like tampering
    head = _head(archive, "entries")
    head_seq = int(head["seq"])
    with archive.db.connect() as conn:
        checkpoints = list(conn.execute(sa.select(c).order_by(c.c.id)).mappings())
    by_seq: dict[int, list[Any]] = {}
    for cp in checkpoints:
        by_seq.setdefault(int(cp["seq"]), []).append(cp)
        report.checkpoints += 1
        if not keyring(public_key):
            continue
        why = check_signature(cp, public_key)
        if why:
            report.problems.append(Problem(int(cp["seq"]), "signature",
                                           f"{why} (checkpoint signed {cp['signed_at']})"))
    seen_blobs: dict[str, str | None] = {}  # digest -> None when good, else what is wrong
    running: str | None = None if since_seq else chain.GENESIS
    expected = since_seq or 1
    last = (since_seq or 1) - 1
    counted: set[str] = set()
    with archive.db.connect() as conn, ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        while True:
            rows = list(conn.execute(sa.select(e).where(e.c.seq > last, e.c.seq <= head_seq)
                                     .order_by(e.c.seq).limit(BATCH)).mappings())
            if not rows:
                break
            _check_blobs(archive, conn, rows, seen_blobs, pool)
            for row in rows:
                _check_entry(report, row, running, expected, seen_blobs, counted, purges,
                             by_seq)
                running = row["entry_hash"]
                expected = last = int(row["seq"])
                expected += 1
            if progress:
                progress(report.entries, report.bytes)
        beyond = conn.execute(sa.select(sa.func.min(e.c.seq)).where(e.c.seq > head_seq)
                              ).scalar()
    now_seq = int(_head(archive, "entries")["seq"])  # where the head is after reading
    if beyond is not None and int(beyond) > now_seq:
        report.problems.append(Problem(int(beyond), "inserted", (
            f"beyond the chain head #{now_seq}: added outside the relay")))
    report.last_seq = last if report.entries else None
    covered = [s for s in by_seq if s <= last]
    report.last_checkpoint = max(covered) if covered else None
    for cp_seq in sorted(s for s in by_seq if s > last):
        if head_seq < cp_seq <= now_seq:
            continue  # signed while we were reading
        for cp in by_seq[cp_seq]:
            report.problems.append(Problem(last + 1, "tail", (
                f"missing: the archive ends at #{last}, but a checkpoint signed "
                f"{cp['signed_at']} covers #{cp_seq}: entries #{last + 1}–#{cp_seq} "
                "were cut off")))
    if report.entries and (int(head["seq"]) != last or head["hash"] != running):
        report.problems.append(Problem(int(head["seq"]), "head", (
            f"chain head says #{head['seq']} but the archive ends at #{last} "
            "(tail cut or rewritten)")))
    report.seconds = time.perf_counter() - started
    return report


def _check_blobs(archive: Archive, conn: sa.Connection, rows: list[Any],
                 seen: dict[str, str | None], pool: ThreadPoolExecutor) -> None:
    """Check the blobs this batch needs that no earlier entry did; into `seen`.

    zlib and sha256 release the GIL, so threads use every core; the database store
    is read with one query per batch.
    """
    sizes = {r[f"{w}_hash"]: int(r[f"{w}_size"]) for r in rows if r["purged_at"] is None
             for w in ("accepted", "delivered")}
    wanted = sorted(set(sizes) - set(seen))
    if not wanted:
        return
    if archive.blobs.in_transaction:
        b = schema.blob
        found = {r.hash: bytes(r.data) for r in conn.execute(
            sa.select(b.c.hash, b.c.data).where(b.c.hash.in_(wanted)))}

        def check(digest: str) -> str | None:
            return _check_blob(found.get(digest), digest, sizes[digest])
    else:
        def check(digest: str) -> str | None:
            return _check_blob(archive.blobs.get(None, digest), digest, sizes[digest])
    seen.update(zip(wanted, pool.map(check, wanted), strict=True))


def _check_entry(report: Report, row: Any, running: str | None, expected: int,
                 seen: dict[str, str | None], counted: set[str],
                 purges: dict[int, dict[str, Any]], checkpoints: dict[int, list[Any]]) -> None:
    seq = int(row["seq"])
    report.entries += 1
    if report.first_seq is None:
        report.first_seq = seq
    problems = report.problems
    if seq != expected:
        problems.append(Problem(expected, "missing",
                                f"entries #{expected}–#{seq - 1} are missing (deleted)"))
    if running is not None and row["prev_hash"] != running:
        problems.append(Problem(seq, "link", "does not link to the entry before it: entries "
                                "reordered, inserted, or an earlier one removed"))
    if chain.link(row["prev_hash"], chain.fields_digest(chain.entry_fields(row))) \
            != row["entry_hash"]:
        problems.append(Problem(seq, "fields", "index row changed: its recomputed hash differs "
                                "from the one written into the chain"))
    if chain.fold(row["subject"]) != row["subject_fold"]:
        problems.append(Problem(seq, "fields", "search column subject_fold does not match "
                                "the subject"))
    for cp in checkpoints.get(seq, []):
        if cp["entry_hash"] != row["entry_hash"]:
            problems.append(Problem(seq, "checkpoint", f"differs from the hash the checkpoint "
                                    f"signed {cp['signed_at']} (chain rewritten)"))
    if row["purged_at"] is not None:
        purge = purges.get(seq)
        if purge is None:
            problems.append(Problem(seq, "tombstone", "marked purged, but no purge in the "
                                    "access log covers it"))
        else:
            if purge["cutoff"] and chain.timestamp(row["recorded_at"]) >= purge["cutoff"]:
                problems.append(Problem(seq, "tombstone", "purged before its retention "
                                        "period ended"))
            report.tombstones.append({"seq": seq, "purged_at": purge["at"],
                                      "by": purge["who"], "mailbox": row["mailbox"]})
        return
    for which in ("accepted", "delivered"):
        digest, size = row[f"{which}_hash"], int(row[f"{which}_size"])
        if digest not in counted and seen[digest] is None:
            counted.add(digest)
            report.blobs += 1
            report.bytes += size
        if seen[digest] is not None:
            problems.append(Problem(seq, "blob", f"{which} message {digest[:16]}…: "
                                    f"{seen[digest]}"))


def _check_blob(stored: bytes | None, digest: str, size: int) -> str | None:
    if stored is None:
        return "blob is missing"
    try:
        data = decompress(stored, size)
    except CorruptBlob as exc:
        return f"blob is corrupt ({exc})"
    if chain.sha256(data) != digest:
        return "blob content does not match its hash (modified)"
    return None

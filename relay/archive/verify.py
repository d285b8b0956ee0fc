"""`relay archive verify`: recompute every blob hash, the chain, and every checkpoint.

Each kind of tampering leaves its own mark, reported at the entry where it starts:
- a changed blob byte: the blob no longer decompresses or hashes to its address (`blob`);
- a changed index row: the entry's recomputed hash differs from the stored one (`fields`);
- a deleted row: a gap in the sequence (`missing`), and the next entry's link breaks;
- an inserted or reordered row: the entry does not link to the one before it (`link`);
- a tail cut after a checkpoint: a signed checkpoint names an entry that is gone (`tail`);
- a rewritten chain: the signed checkpoint no longer matches the entry it names;
- the same for the access log, whose head every (v2) checkpoint signs too;
- a purge or release no checkpoint of its own vouches for (`unsigned`), and a tombstone
  whose purge is unsigned, came before the retention configured here ended, or touched
  a mailbox on legal hold (`tombstone`).

What the chains hold together but no signature covers yet is not tampering: it is
reported as a warning, so an archive nobody has signed never reads as proven.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.archive import access, chain, heads, schema
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
    last_checkpoint: int | None = None  # the newest entry a valid checkpoint covers
    signed_access: int | None = None  # the newest access-log record a valid checkpoint covers
    tombstones: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreadable: str | None = None  # an export that cannot be read at all: not "tampered"
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
            "last_checkpoint": self.last_checkpoint, "signed_access": self.signed_access,
            "uncovered": max(0, (self.last_seq or 0) - (self.last_checkpoint or 0))
            if self.last_seq else 0,
            "warnings": self.warnings, "unreadable": self.unreadable,
            "tombstones": self.tombstones, "seconds": round(self.seconds, 3),
            "first_bad": None if first is None else {
                "seq": first.seq, "kind": first.kind, "chain": first.chain,
                "message": str(first)},
            "problems": [{"seq": p.seq, "kind": p.kind, "chain": p.chain,
                          "message": p.message} for p in self.problems],
        }


Keys = Ed25519PublicKey | Sequence[Ed25519PublicKey] | None


def keyring(keys: Keys | dict[str, Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id: the current one and any retired by `keygen --force`."""
    if keys is None:
        return {}
    if isinstance(keys, dict):
        return keys
    if isinstance(keys, Ed25519PublicKey):
        keys = [keys]
    return {chain.key_id(k): k for k in keys}


def check_signature(cp: Any, keys: Keys | dict[str, Ed25519PublicKey]) -> str | None:
    """None when the checkpoint is signed by one of these keys, else why not."""
    ring = keyring(keys)
    key = ring.get(cp["key_id"])
    if key is None:
        return (f"checkpoint signed by key {cp['key_id']}, not by the given key(s) "
                f"{', '.join(ring) or '(none)'}")
    signed_at = cp["signed_at"]
    if isinstance(signed_at, datetime):
        signed_at = chain.timestamp(signed_at)
    access_seq = cp.get("access_seq")
    message = chain.checkpoint_message(int(cp["seq"]), cp["entry_hash"], signed_at,
                                       cp["key_id"],
                                       None if access_seq is None else int(access_seq),
                                       cp.get("access_hash"))
    try:
        key.verify(bytes.fromhex(cp["signature"]), message)
    except (InvalidSignature, ValueError):
        return "checkpoint signature is not valid"
    return None


def _heads(archive: Archive) -> tuple[tuple[int, str], tuple[int, str]]:
    with archive.db.connect() as conn:
        return heads.read(conn, heads.ENTRIES), heads.read(conn, heads.ACCESS)


@dataclass
class _Purge:
    """A purge record, as the tombstones it explains need it."""

    access_seq: int
    at: str
    who: str
    held: frozenset[str]  # mailboxes on legal hold when it ran (replayed from the log)


@dataclass
class _AccessLog:
    last: int = 0  # the last record read
    hashes: dict[int, str] = field(default_factory=dict)  # the ones checkpoints name
    purges: dict[int, _Purge] = field(default_factory=dict)  # by entry seq
    must_be_signed: list[tuple[int, str]] = field(default_factory=list)  # (seq, action)


def _read_access_log(report: Report, archive: Archive, head: tuple[int, str],
                     named: set[int]) -> _AccessLog:
    """Verify the access log's own chain; keep what the checkpoints and tombstones need."""
    out = _AccessLog(hashes={0: chain.GENESIS} if 0 in named else {})
    running = chain.GENESIS
    expected = 1
    held: set[str] = set()
    a = schema.access
    with archive.db.connect() as conn:
        rows = conn.execute(sa.select(a).where(a.c.seq <= head[0]).order_by(a.c.seq)
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
            if seq in named:
                out.hashes[seq] = running
            action, target = fields["action"], fields["target"]
            if action in access.MUST_BE_SIGNED:
                out.must_be_signed.append((seq, action))
            if action == "hold":
                held.add(str(target.get("mailbox")))
            elif action == "release":
                held.discard(str(target.get("mailbox")))
            elif action == "purge":
                info = _Purge(seq, fields["at"], fields["who"], frozenset(held))
                for lo, hi in target.get("entries", []):
                    for s in range(int(lo), int(hi) + 1):
                        out.purges[s] = info
        beyond = conn.execute(sa.select(sa.func.min(a.c.seq)).where(a.c.seq > head[0])
                              ).scalar()
        now_seq = heads.read(conn, heads.ACCESS)[0]
    out.last = expected - 1
    if beyond is not None and int(beyond) > now_seq:
        report.problems.append(Problem(int(beyond), "inserted", "beyond the access-log head: "
                                       "added outside the relay", "access"))
    if head[0] != out.last or head[1] != running:
        report.problems.append(Problem(None, "head", f"access-log head says #{head[0]} "
                                       f"but the log ends at #{out.last} (cut or rewritten)",
                                       "access"))
    return out


def _check_access_signatures(report: Report, log: _AccessLog, checkpoints: list[Any],
                             valid: list[Any], head_seq: int, now_seq: int) -> set[int]:
    """Each checkpoint's access head against the log; every release and purge must be
    named by a valid checkpoint of its own. The access seqs valid checkpoints name."""
    for cp in checkpoints:
        if cp["access_seq"] is None:
            continue  # v1: signs the entries head only
        seq = int(cp["access_seq"])
        signed = chain.timestamp(cp["signed_at"])
        if seq in log.hashes:
            if log.hashes[seq] != cp["access_hash"]:
                report.problems.append(Problem(seq, "checkpoint", "differs from the hash the "
                                               f"checkpoint signed {signed} (access log "
                                               "rewritten)", "access"))
        elif not head_seq < seq <= now_seq:  # else: signed while we were reading
            report.problems.append(Problem(log.last + 1, "tail", (
                f"missing: the access log ends at #{log.last}, but a checkpoint signed "
                f"{signed} covers #{seq}: records #{log.last + 1}–#{seq} were cut off"),
                "access"))
    named = {int(cp["access_seq"]) for cp in valid if cp["access_seq"] is not None}
    for seq, action in log.must_be_signed:
        if seq not in named:
            report.problems.append(Problem(seq, "unsigned", (
                f"{action} record that no checkpoint signed with it: a {action} nobody "
                "signed cannot be told from a forged one"), "access"))
    report.signed_access = max((s for s in named if s <= log.last), default=None)
    return named


def verify_archive(archive: Archive, public_key: Keys,
                   since_seq: int | None = None, progress: Progress | None = None) -> Report:
    """Check everything in the archive; `public_key`: the keys that may sign checkpoints
    (None: signatures are not checked, and nothing counts as signed)."""
    report = Report()
    started = time.perf_counter()
    ring = keyring(public_key)
    # the heads first: entries, records and checkpoints the relay appends while we read
    # are beyond them, and are left for the next run instead of looking like tampering
    (head_seq, head_hash), access_head = _heads(archive)
    e, c = schema.entry, schema.checkpoint
    with archive.db.connect() as conn:
        checkpoints = list(conn.execute(sa.select(c).order_by(c.c.id)).mappings())
    by_seq: dict[int, list[Any]] = {}
    valid: list[Any] = []
    for cp in checkpoints:
        by_seq.setdefault(int(cp["seq"]), []).append(cp)
        report.checkpoints += 1
        if not ring:
            continue
        why = check_signature(cp, ring)
        if why:
            report.problems.append(Problem(int(cp["seq"]), "signature",
                                           f"{why} (checkpoint signed "
                                           f"{chain.timestamp(cp['signed_at'])})"))
        else:
            valid.append(cp)
    named = {int(cp["access_seq"]) for cp in checkpoints if cp["access_seq"] is not None}
    log = _read_access_log(report, archive, access_head, named)
    now_access = _heads(archive)[1][0]
    signed_purges = _check_access_signatures(report, log, checkpoints, valid, access_head[0],
                                             now_access)
    tombstones = _Tombstones(log.purges, signed_purges, archive.settings.retention)
    running: str | None = None if since_seq else chain.GENESIS
    expected = since_seq or 1
    last = (since_seq or 1) - 1
    counted: set[str] = set()

    def batch(conn: sa.Connection, after: int) -> list[Any]:
        return list(conn.execute(sa.select(e).where(e.c.seq > after, e.c.seq <= head_seq)
                                 .order_by(e.c.seq).limit(BATCH)).mappings())

    with archive.db.connect() as conn, ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        blobs = _Blobs(archive, pool)
        rows = batch(conn, last)
        pending = blobs.submit(conn, rows)
        while rows:
            following = batch(conn, int(rows[-1]["seq"]))
            ahead = blobs.submit(conn, following)  # checked while this batch is
            blobs.collect(pending)
            for row in rows:
                _check_entry(report, row, running, expected, blobs.seen, counted, tombstones,
                             by_seq)
                running = row["entry_hash"]
                expected = last = int(row["seq"])
                expected += 1
            if progress:
                progress(report.entries, report.bytes)
            rows, pending = following, ahead
        beyond = conn.execute(sa.select(sa.func.min(e.c.seq)).where(e.c.seq > head_seq)
                              ).scalar()
    now_seq = _heads(archive)[0][0]  # where the head is after reading
    if beyond is not None and int(beyond) > now_seq:
        report.problems.append(Problem(int(beyond), "inserted", (
            f"beyond the chain head #{now_seq}: added outside the relay")))
    report.last_seq = last if report.entries else None
    if since_seq is None and head_seq == 0:
        for cp in by_seq.get(0, []):
            if cp["entry_hash"] != chain.GENESIS:
                report.problems.append(Problem(0, "checkpoint", "a checkpoint of the empty "
                                               "archive names a hash (chain rewritten)"))
    covered = [int(cp["seq"]) for cp in valid if int(cp["seq"]) <= last] if ring else \
        [s for s in by_seq if s <= last]
    report.last_checkpoint = max(covered) if covered else None
    for cp_seq in sorted(s for s in by_seq if s > last):
        if head_seq < cp_seq <= now_seq:
            continue  # signed while we were reading
        for cp in by_seq[cp_seq]:
            report.problems.append(Problem(last + 1, "tail", (
                f"missing: the archive ends at #{last}, but a checkpoint signed "
                f"{chain.timestamp(cp['signed_at'])} covers #{cp_seq}: entries "
                f"#{last + 1}–#{cp_seq} were cut off")))
    if report.entries and (head_seq != last or head_hash != running):
        report.problems.append(Problem(head_seq, "head", (
            f"chain head says #{head_seq} but the archive ends at #{last} "
            "(tail cut or rewritten)")))
    _warn_unsigned(report, log, bool(ring))
    report.seconds = time.perf_counter() - started
    return report


def _warn_unsigned(report: Report, log: _AccessLog, checked: bool) -> None:
    """What the chain holds together but no signature vouches for yet."""
    if not checked:
        report.warnings.append("no public key: signatures were not checked, nothing counts "
                               "as signed")
        return
    last, signed = report.last_seq or 0, report.last_checkpoint or 0
    if report.entries and not signed and not report.signed_access:
        report.warnings.append(
            "nothing is signed yet: the chain is consistent, but whoever can write the "
            "database could rewrite all of it unnoticed (run `relay archive keygen`, then "
            "`relay archive checkpoint`)")
    elif last > signed:
        report.warnings.append(
            f"entries #{signed + 1}–#{last} are not yet signed: whoever can write the "
            "database could cut or change them unnoticed (`relay archive checkpoint` signs "
            "them now)")
    if log.last > (report.signed_access or 0):
        report.warnings.append(
            f"access-log records #{(report.signed_access or 0) + 1}–#{log.last} are not "
            "yet signed")


@dataclass
class _Tombstones:
    """What makes a purged entry legitimate: a signed purge record that names it, after
    the retention period configured here ended, while its mailbox was not on hold."""

    purges: dict[int, _Purge]
    signed: set[int]  # access seqs named by a valid checkpoint
    retention: float  # seconds; 0: keep forever

    def problems(self, row: Any) -> tuple[_Purge | None, list[str]]:
        purge = self.purges.get(int(row["seq"]))
        if purge is None:
            return None, ["marked purged, but no purge in the access log covers it"]
        out = []
        if purge.access_seq not in self.signed:
            out.append(f"purged by access-log #{purge.access_seq}, which no signature "
                       "covers: a forged purge cannot be told from a real one")
        if not self.retention:
            out.append(f"purged {purge.at}, but archive.retention is 0 (keep forever)")
        else:
            ends = row["recorded_at"] + timedelta(seconds=self.retention)
            if chain.timestamp(ends) > purge.at:
                out.append(f"purged {purge.at}, before its retention period "
                           f"({_days(self.retention)} configured) ended "
                           f"{chain.timestamp(ends)}")
        if row["mailbox"] in purge.held:
            out.append(f"purged {purge.at} while {row['mailbox']} was on legal hold")
        return purge, out


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days"


class _Blobs:
    """Checks each blob once, in worker threads, a batch ahead of the entries that need
    it: zlib and sha256 release the GIL, so the threads use every core while the main
    thread re-hashes the entries of the batch before. The database store is read with
    one query per batch; blobs go to the threads in chunks (one future per blob cost
    more than a small blob's check)."""

    CHUNK = 32

    def __init__(self, archive: Archive, pool: ThreadPoolExecutor) -> None:
        self.archive = archive
        self.pool = pool
        self.seen: dict[str, str | None] = {}  # digest -> None when good, else what is wrong
        self._asked: set[str] = set()

    def submit(self, conn: sa.Connection, rows: list[Any]) -> list[Future[list[Any]]]:
        sizes = {r[f"{w}_hash"]: int(r[f"{w}_size"]) for r in rows if r["purged_at"] is None
                 for w in ("accepted", "delivered")}
        wanted = sorted(set(sizes) - self._asked)
        if not wanted:
            return []
        self._asked.update(wanted)
        found: dict[str, bytes] | None = None
        if self.archive.blobs.in_transaction:
            b = schema.blob
            found = {r.hash: bytes(r.data) for r in conn.execute(
                sa.select(b.c.hash, b.c.data).where(b.c.hash.in_(wanted)))}
        return [self.pool.submit(self._check, [(d, sizes[d]) for d in wanted[i:i + self.CHUNK]],
                                 found)
                for i in range(0, len(wanted), self.CHUNK)]

    def _check(self, items: list[tuple[str, int]], found: dict[str, bytes] | None
               ) -> list[tuple[str, str | None]]:
        get = found.get if found is not None else (lambda d: self.archive.blobs.get(None, d))
        return [(digest, _check_blob(get(digest), digest, size)) for digest, size in items]

    def collect(self, futures: list[Future[list[Any]]]) -> None:
        for future in futures:
            self.seen.update(future.result())


def _check_entry(report: Report, row: Any, running: str | None, expected: int,
                 seen: dict[str, str | None], counted: set[str], tombstones: _Tombstones,
                 checkpoints: dict[int, list[Any]]) -> None:
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
            problems.append(Problem(seq, "checkpoint", "differs from the hash the checkpoint "
                                    f"signed {chain.timestamp(cp['signed_at'])} (chain "
                                    "rewritten)"))
    if row["purged_at"] is not None:
        purge, wrong = tombstones.problems(row)
        problems.extend(Problem(seq, "tombstone", why) for why in wrong)
        if purge is not None:
            report.tombstones.append({"seq": seq, "purged_at": purge.at, "by": purge.who,
                                      "mailbox": row["mailbox"]})
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

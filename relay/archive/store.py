"""The archive store: append entries to the chain, sign checkpoints, query, purge.

One `Archive` per process, built by `relay.services.Services.build()`.
The SMTP front calls `await archive.record(tx, accepted, delivered)` before it answers
250; it returns once the blobs are fsynced and the index row is committed.

Appends from every node that shares the database form one chain: the transaction
starts by bumping the chain head row (`UPDATE archive_head ... RETURNING`), which
takes the row lock on PostgreSQL and the write lock on SQLite, so the next append
waits until this one commits and then links to it.

Within a process, compression and blob files run in parallel threads; the messages
whose blobs are ready while a commit runs are linked by the next one (group commit),
so many sessions share one database commit instead of queueing for one each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from relay.archive import chain, schema
from relay.archive.blobs import BlobStore, DbBlobStore, FileBlobStore, compress, decompress
from relay.config import Config
from relay.db import make_engine
from relay.directory import naming
from relay.directory.store import DirectoryStore
from relay.message import Message
from relay.model import Transaction

log = logging.getLogger(__name__)

MAX_BATCH = 256  # messages per group commit


class ArchiveError(Exception):
    """The archive cannot do what was asked; str() is for the administrator."""


@dataclass(frozen=True)
class Party:
    """An archived mailbox taking part in a message, and which way the message went."""

    mailbox: str
    kind: str
    direction: str  # "out": the mailbox sent it; "in": it received it


@dataclass
class Filters:
    mailbox: str | None = None
    sender: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    subject: str | None = None
    since_seq: int | None = None
    limit: int | None = None


@dataclass
class PurgeReport:
    cutoff: datetime | None
    purged: list[int] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # mailbox -> entries kept by the hold
    blobs_deleted: int = 0
    dry_run: bool = False


def _clean(text: str, limit: int | None = None) -> str:
    """Text a database column accepts: no lone surrogates, no NUL."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\0", "")
    return text[:limit] if limit else text


def _address(addr: str) -> str:
    return addr.strip().strip("<>").lower()


def _json(obj: Any) -> str:
    return chain.canonical(json.loads(json.dumps(obj, default=str))).decode()


def ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[1,2,3,7] -> [[1,3],[7,7]]: how a purge record names the entries it removed."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@dataclass
class _Pending:
    """A message ready to be linked into the chain: its parties, fields and blobs."""

    parties: list[Party]
    common: dict[str, Any]
    blobs: dict[str, tuple[int, bytes]]


def _settle(future: asyncio.Future[list[int]], ids: list[int] | None = None,
            exc: BaseException | None = None) -> None:
    if future.done():  # the session went away meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(ids or [])


class Archive:
    def __init__(self, config: Config, db: Engine | None = None,
                 directory: DirectoryStore | None = None, node: str | None = None) -> None:
        self.config = config
        self.settings = config.archive
        self.db = db or make_engine(config.directory_url)
        self.directory = directory
        self.node = node or config.server.hostname
        store = self.settings.blob_store
        self.blobs: BlobStore = (FileBlobStore(self.blob_path) if store == "files"
                                 else DbBlobStore())
        self._opt_in = {_address(a) for a in self.settings.mailboxes}
        self._official = {_address(a) for a in self.settings.official}
        self._signer: Any = None
        self._signer_loaded = False
        self._ticker: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._waiting: list[tuple[_Pending, asyncio.Future[list[int]]]] = []

    # --- construction -------------------------------------------------------------
    @classmethod
    def open(cls, config: Config, directory: DirectoryStore | None = None, *,
             migrate: bool = True, node: str | None = None) -> Archive:
        """The archive of this configuration; `migrate=False` for read-only commands,
        which then fail clearly when there is no archive yet."""
        archive = cls(config, directory=directory, node=node)
        if migrate:
            schema.migrate(archive.db)
        elif not schema.is_current(archive.db):
            archive.close()
            raise ArchiveError(f"no archive (or an older schema) in {config.directory_url}; "
                               "the relay creates it when it starts")
        return archive

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.db.dispose()

    @property
    def blob_path(self) -> Path:
        return self.config.state_file(self.settings.blob_path)

    @property
    def signing_key_path(self) -> Path:
        return self.config.state_file(self.settings.signing_key)

    @property
    def public_key_path(self) -> Path:
        if self.settings.public_key:
            return self.config.state_file(self.settings.public_key)
        return self.signing_key_path.with_name(self.signing_key_path.name + ".pub")

    def signer(self) -> Any:
        """The Ed25519 private key, or None (with one warning) when there is none."""
        if not self._signer_loaded:
            self._signer_loaded = True
            path = self.signing_key_path
            if path.exists():
                self._signer = chain.load_private(path)
            else:
                log.warning("archive: no signing key at %s; checkpoints are not written "
                            "(run `relay archive keygen`)", path)
        return self._signer

    # --- who is archived ------------------------------------------------------------
    async def kind_of(self, address: str) -> str | None:
        """The mailbox kind (directory, else Điều 4 naming), None for outside addresses."""
        if address in self._official:
            return "official"
        if not self.config.is_local(address):
            return None
        if self.directory is not None:
            return await self.directory.kind(address)
        return naming.kind_of(address)

    async def parties(self, tx: Transaction) -> list[Party]:
        out: list[Party] = []
        sender = _address(tx.mail_from)
        candidates = [(sender, "out")] if sender else []
        seen: set[str] = set()
        for rcpt in tx.rcpt_to:
            addr = _address(rcpt)
            if addr not in seen:
                seen.add(addr)
                candidates.append((addr, "in"))
        for addr, direction in candidates:
            kind = await self.kind_of(addr)
            if (kind is not None and kind in self.settings.kinds) or addr in self._opt_in:
                out.append(Party(addr, kind or "personal", direction))
        return out

    # --- the hook --------------------------------------------------------------------
    async def record(self, tx: Transaction, accepted: bytes, delivered: bytes) -> list[int]:
        """Archive the message when an archived mailbox is a party; the entry ids.

        Durable when it returns (blobs fsynced, index committed); raises when it
        cannot archive, and the caller must then answer 4xx, not 250.
        """
        if not self.settings.enabled:
            return []
        parties = await self.parties(tx)
        if not parties:
            return []
        pending = await asyncio.to_thread(self._prepare, parties, tx, accepted, delivered)
        ids = await self._enqueue(pending)
        if (self._ticker is None or self._ticker.done()) and self.signer() is not None:
            self._ticker = asyncio.create_task(self._sign_periodically())
        return ids

    async def _sign_periodically(self) -> None:
        """An idle relay still signs its tail within checkpoint_interval."""
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:
                log.exception("archive: periodic checkpoint failed")

    def append(self, parties: Sequence[Party], tx: Transaction, accepted: bytes,
               delivered: bytes) -> list[int]:
        """One message, synchronously: prepare and commit (what record() does, unbatched)."""
        return self._commit([self._prepare(parties, tx, accepted, delivered)])[0]

    def _prepare(self, parties: Sequence[Party], tx: Transaction, accepted: bytes,
                 delivered: bytes) -> _Pending:
        """Everything but the chain: index fields, compression, and (file store) the blobs
        on disk and fsynced before any index row can name them. Runs in parallel."""
        # what the inspection kept of the message (parsed where hostile input is contained)
        summary = tx.summary or Message(accepted).summary()
        subject = summary.subject
        message_id = summary.message_id or ""
        meta = _json({
            "envelope": {"mail_from": tx.mail_from, "rcpt_to": tx.rcpt_to,
                         "mail_options": tx.mail_options},
            "client": {"ip": tx.client_ip, "port": tx.client_port, "helo": tx.helo,
                       "tls": tx.tls},
            "auth_login": tx.auth_login,
            "listener": tx.listener,
            "listener_kind": tx.listener_kind,
            "trusted": tx.trusted,
            "decisions": [d.as_dict() for d in tx.decisions],
            "conversions": tx.conversions,
            "added_headers": tx.added_headers,
            "date_header": summary.date or "",
            "started": tx.started,
        })
        a_hash = chain.sha256(accepted)
        d_hash = a_hash if delivered == accepted else chain.sha256(delivered)
        blobs = {a_hash: (len(accepted), compress(accepted))}
        if d_hash != a_hash:
            blobs[d_hash] = (len(delivered), compress(delivered))
        if not self.blobs.in_transaction:
            for digest, (size, stored) in blobs.items():
                self.blobs.put(None, digest, size, stored)
        common = {
            "node": self.node[:255], "queue_id": tx.queue_id[:64],
            "sender": _address(tx.mail_from)[:320],
            "recipients": _json([_address(r) for r in tx.rcpt_to]),
            "subject": subject, "subject_fold": chain.fold(subject), "message_id": message_id,
            "accepted_hash": a_hash, "accepted_size": len(accepted),
            "delivered_hash": d_hash, "delivered_size": len(delivered), "meta": meta,
        }
        return _Pending(list(parties), common, blobs)

    def _commit(self, batch: Sequence[_Pending]) -> list[list[int]]:
        """Link a batch of messages into the chain in one transaction: one commit (one
        fsync) however many sessions were waiting; the entry ids of each message."""
        n = sum(len(p.parties) for p in batch)
        with self.db.begin() as conn:
            if self.blobs.in_transaction:
                for pending in batch:
                    for digest, (size, stored) in pending.blobs.items():
                        self.blobs.put(conn, digest, size, stored)
            last, prev = self._take_head(conn, "entries", n)
            seq = last - n + 1
            recorded_at = chain.now()
            rows, ids = [], []
            for pending in batch:
                ids.append(list(range(seq, seq + len(pending.parties))))
                for party in pending.parties:
                    row = {**pending.common, "seq": seq, "recorded_at": recorded_at,
                           "mailbox": party.mailbox, "kind": party.kind,
                           "direction": party.direction, "prev_hash": prev, "purged_at": None}
                    row["entry_hash"] = prev = chain.link(prev, chain.fields_digest(
                        chain.entry_fields(row)))
                    rows.append(row)
                    seq += 1
            conn.execute(schema.entry.insert(), rows)
            self._set_head(conn, "entries", prev)
            self._maybe_checkpoint(conn, last, prev, n, recorded_at)
        return ids

    async def _enqueue(self, pending: _Pending) -> list[int]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((pending, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        return await future

    async def _commit_waiting(self) -> None:
        """Group commit: whatever arrived while the previous commit ran goes in the next."""
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                results = await asyncio.to_thread(self._commit, [p for p, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                for pending, future in batch:  # one bad message must not fail the others
                    try:
                        [ids] = await asyncio.to_thread(self._commit, [pending])
                    except Exception as one:
                        _settle(future, exc=one)
                    else:
                        _settle(future, ids)
                continue
            for (_, future), ids in zip(batch, results, strict=True):
                _settle(future, ids)

    @staticmethod
    def _take_head(conn: Connection, name: str, n: int) -> tuple[int, str]:
        """Reserve n positions on a chain; holds the chain's lock until commit."""
        h = schema.head
        stmt = (sa.update(h).where(h.c.chain == name).values(seq=h.c.seq + n)
                .returning(h.c.seq, h.c.hash))
        seq, prev = conn.execute(stmt).one()
        return int(seq), prev

    @staticmethod
    def _set_head(conn: Connection, name: str, value: str) -> None:
        conn.execute(sa.update(schema.head).where(schema.head.c.chain == name)
                     .values(hash=value))

    # --- checkpoints -------------------------------------------------------------------
    def _maybe_checkpoint(self, conn: Connection, seq: int, entry_hash: str, n: int,
                          at: datetime) -> None:
        if self.signer() is None:
            return
        every = self.settings.checkpoint_every
        if seq // every == (seq - n) // every:
            c = schema.checkpoint
            last = conn.execute(sa.select(c.c.signed_at).order_by(c.c.id.desc()).limit(1))
            last_at = last.scalar()
            if last_at is not None and (at - last_at).total_seconds() < \
                    self.settings.checkpoint_interval:
                return
        self._sign(conn, seq, entry_hash, at)

    def _sign(self, conn: Connection, seq: int, entry_hash: str, at: datetime) -> dict[str, Any]:
        key = self.signer()
        kid = chain.key_id(key.public_key())
        signed_at = chain.timestamp(at)
        signature = key.sign(chain.checkpoint_message(seq, entry_hash, signed_at, kid)).hex()
        row = {"seq": seq, "entry_hash": entry_hash, "signed_at": at, "node": self.node[:255],
               "key_id": kid, "signature": signature}
        conn.execute(schema.checkpoint.insert().values(**row))
        return row

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current chain head now (a no-op when it is already signed or empty)."""
        if self.signer() is None:
            raise ArchiveError(f"no signing key at {self.signing_key_path}; "
                               "run `relay archive keygen`")
        with self.db.begin() as conn:
            seq, head_hash = self._take_head(conn, "entries", 0)
            c = schema.checkpoint
            done = conn.execute(sa.select(c.c.id).where(c.c.seq == seq)).first()
            if seq == 0 or done is not None:
                return None
            return self._sign(conn, seq, head_hash, chain.now())

    async def aclose(self) -> None:
        """At shutdown: sign what the last checkpoint does not cover yet, then close."""
        if self._ticker is not None:
            self._ticker.cancel()
        try:
            if self._signer is not None or (not self._signer_loaded
                                            and self.signing_key_path.exists()):
                await asyncio.to_thread(self.checkpoint)
        except Exception:
            log.exception("archive: final checkpoint failed")
        self.close()

    # --- access log -----------------------------------------------------------------
    def log_access(self, who: str, action: str, target: dict[str, Any], reason: str) -> int:
        with self.db.begin() as conn:
            return self._log_access(conn, who, action, target, reason)

    def _log_access(self, conn: Connection, who: str, action: str, target: dict[str, Any],
                    reason: str) -> int:
        seq, prev = self._take_head(conn, "access", 1)
        row = {"seq": seq, "at": chain.now(), "who": _clean(who, 255), "action": action,
               "target": _json(target), "reason": _clean(reason), "prev_hash": prev}
        row["entry_hash"] = chain.link(prev, chain.fields_digest(
            chain.access_fields(row), chain.ACCESS_DOMAIN))
        conn.execute(schema.access.insert().values(**row))
        self._set_head(conn, "access", row["entry_hash"])
        return seq

    def access_log(self, limit: int | None = None) -> list[RowMapping]:
        a = schema.access
        stmt = sa.select(a).order_by(a.c.seq.desc())
        if limit:
            stmt = stmt.limit(limit)
        with self.db.connect() as conn:
            return list(reversed(conn.execute(stmt).mappings().all()))

    # --- reading -----------------------------------------------------------------------
    def query(self, filters: Filters) -> sa.Select:
        e = schema.entry
        stmt = sa.select(e).order_by(e.c.seq)
        if filters.mailbox:
            stmt = stmt.where(e.c.mailbox == _address(filters.mailbox))
        if filters.sender:
            stmt = stmt.where(e.c.sender == _address(filters.sender))
        if filters.recipient:
            stmt = stmt.where(e.c.recipients.contains(
                json.dumps(_address(filters.recipient)), autoescape=True))
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

    def search(self, filters: Filters) -> list[RowMapping]:
        with self.db.connect() as conn:
            return list(conn.execute(self.query(filters)).mappings())

    def get(self, seq: int) -> RowMapping | None:
        with self.db.connect() as conn:
            return conn.execute(sa.select(schema.entry).where(schema.entry.c.seq == seq)
                                ).mappings().first()

    def read_blob(self, digest: str, size: int, conn: Connection | None = None) -> bytes:
        """The exact bytes, checked against their address; raises ArchiveError if not."""
        if conn is None:
            with self.db.connect() as c:
                stored = self.blobs.get(c, digest)
        else:
            stored = self.blobs.get(conn, digest)
        if stored is None:
            raise ArchiveError(f"blob {digest} is missing")
        data = decompress(stored, size)
        if chain.sha256(data) != digest:
            raise ArchiveError(f"blob {digest} does not match its hash")
        return data

    # --- retention and legal hold ----------------------------------------------------------
    def holds(self) -> list[RowMapping]:
        with self.db.connect() as conn:
            return list(conn.execute(sa.select(schema.hold).order_by(schema.hold.c.mailbox))
                        .mappings())

    def hold(self, mailbox: str, who: str, reason: str) -> bool:
        addr = _address(mailbox)
        with self.db.begin() as conn:
            exists = conn.execute(sa.select(schema.hold.c.mailbox)
                                  .where(schema.hold.c.mailbox == addr)).first()
            if exists:
                return False
            conn.execute(schema.hold.insert().values(mailbox=addr, since=chain.now(),
                                                     who=_clean(who, 255), reason=reason))
            self._log_access(conn, who, "hold", {"mailbox": addr}, reason)
        return True

    def release(self, mailbox: str, who: str, reason: str) -> bool:
        addr = _address(mailbox)
        with self.db.begin() as conn:
            gone = conn.execute(schema.hold.delete().where(schema.hold.c.mailbox == addr))
            if not gone.rowcount:
                return False
            self._log_access(conn, who, "release", {"mailbox": addr}, reason)
        return True

    def purge(self, who: str, reason: str = "retention", at: datetime | None = None,
              dry_run: bool = False) -> PurgeReport:
        """Delete the blobs of entries older than the retention period, except held ones.

        The entries stay as tombstones (hashes intact, `purged_at` set) and the purge is
        recorded in the access log with the entries it covers, which `verify` checks.
        """
        retention = self.settings.retention
        if not retention:
            return PurgeReport(cutoff=None, dry_run=dry_run)
        at = at or chain.now()
        cutoff = at - timedelta(seconds=retention)
        e = schema.entry
        report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
        with self.db.begin() as conn:
            # serialise with appends and other purges: the chain lock
            self._take_head(conn, "entries", 0)
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
            self._log_access(conn, who, "purge", {
                "entries": ranges(report.purged), "cutoff": chain.timestamp(cutoff),
                "retention_seconds": retention, "blobs": sorted(doomed),
                "held": report.held}, reason)
            if self.blobs.in_transaction:
                for digest in doomed:
                    self.blobs.delete(conn, digest)
        if not self.blobs.in_transaction:  # files go only once the tombstones are committed
            for digest in doomed:
                self.blobs.delete(None, digest)  # type: ignore[arg-type]
        report.blobs_deleted = len(doomed)
        return report


def _chunks(items: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]

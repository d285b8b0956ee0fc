"""Appending messages to the entries chain: prepare in parallel, link in group commits.

`Writer.write()` returns once the blobs are fsynced and the index rows committed: the
SMTP front answers 250 only after that. Appends from every node that share the
database form one chain (see `heads`). Within a process, compression and blob files
run in parallel threads; the messages whose blobs are ready while a commit runs are
linked by the next one (group commit), so many sessions share one database commit
instead of queueing for one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from relay.archive import chain, heads, schema
from relay.archive.blobs import BlobStore, compress
from relay.archive.normalize import address, json_text
from relay.archive.parties import Party
from relay.archive.signing import Checkpoints
from relay.message import Message
from relay.model import Transaction

MAX_BATCH = 256  # messages per group commit


@dataclass
class Pending:
    """A message ready to be linked into the chain: its parties, fields and blobs."""

    parties: list[Party]
    common: dict[str, Any]
    blobs: dict[str, tuple[int, bytes]]  # sha256 -> (size, compressed)


def _settle(future: asyncio.Future[list[int]], ids: list[int] | None = None,
            exc: BaseException | None = None) -> None:
    if future.done():  # the session went away meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(ids or [])


class Writer:
    def __init__(self, db: Engine, blobs: BlobStore, node: str,
                 checkpoints: Checkpoints) -> None:
        self.db = db
        self.blobs = blobs
        self.node = node
        self.checkpoints = checkpoints
        self._committer: asyncio.Task[None] | None = None
        self._waiting: list[tuple[Pending, asyncio.Future[list[int]]]] = []

    def prepare(self, parties: Sequence[Party], tx: Transaction, accepted: bytes,
                delivered: bytes) -> Pending:
        """Everything but the chain: index fields, compression, and (file store) the blobs
        on disk and fsynced before any index row can name them. Runs in parallel."""
        # what the inspection kept of the message (parsed where hostile input is contained)
        summary = tx.summary or Message(accepted).summary()
        subject = summary.subject
        meta = json_text({
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
            "sender": address(tx.mail_from)[:320],
            "recipients": json_text([address(r) for r in tx.rcpt_to]),
            "subject": subject, "subject_fold": chain.fold(subject),
            "message_id": summary.message_id or "",
            "accepted_hash": a_hash, "accepted_size": len(accepted),
            "delivered_hash": d_hash, "delivered_size": len(delivered), "meta": meta,
        }
        return Pending(list(parties), common, blobs)

    def commit(self, batch: Sequence[Pending]) -> list[list[int]]:
        """Link a batch of messages into the chain in one transaction: one commit (one
        fsync) however many sessions were waiting; the entry ids of each message."""
        n = sum(len(p.parties) for p in batch)
        with self.db.begin() as conn:
            if self.blobs.in_transaction:
                for pending in batch:
                    for digest, (size, stored) in pending.blobs.items():
                        self.blobs.put(conn, digest, size, stored)
            last, prev = heads.take(conn, heads.ENTRIES, n)
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
            heads.advance(conn, heads.ENTRIES, prev)
            self.checkpoints.after_append(conn, last, n, recorded_at)
        return ids

    async def write(self, pending: Pending) -> list[int]:
        """Link one prepared message with whatever else is waiting; its entry ids."""
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
                results = await asyncio.to_thread(self.commit, [p for p, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc=exc)
                    continue
                for pending, future in batch:  # one bad message must not fail the others
                    try:
                        [ids] = await asyncio.to_thread(self.commit, [pending])
                    except Exception as one:
                        _settle(future, exc=one)
                    else:
                        _settle(future, ids)
                continue
            for (_, future), ids in zip(batch, results, strict=True):
                _settle(future, ids)

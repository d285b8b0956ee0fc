"""Checkpoints: Ed25519 signatures over the heads of both chains.

A checkpoint signs (entries seq, entries hash, access seq, access hash), so whoever
can write the database but does not hold the key can neither cut, rewrite nor add to
what a checkpoint covers: not the entries, and not the access log that records
shows, exports, holds, releases and purges.

When they are written:
- on the SMTP path, every `checkpoint_every` entries or when the newest is older than
  `checkpoint_interval` (inside the commit that links the entries);
- in the same transaction as every access-log record, when this process can read the
  key (so `show`/`export` records are signed as they are written);
- always in the same transaction as a purge or a release: those remove protection,
  and `verify` accepts them only with a checkpoint that names their own record;
- by the relay's ticker, at shutdown, and by `relay archive checkpoint`.

The key file is looked at again (at most once a second) while it is missing or
changes, so a key made by `relay archive keygen` while the relay runs is used from
the next message on, and a key replaced by `keygen --force` takes over.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Connection, Engine

from relay.archive import chain, heads, schema
from relay.archive.errors import ArchiveError

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0  # how often a missing or changed key file is looked at again


class SigningKey:
    """The private key in `archive.signing_key`, re-read when the file appears or changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: Ed25519PrivateKey | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._next_look = 0.0
        self._warned = False
        self._lock = threading.Lock()

    def get(self, warn: bool = True) -> Ed25519PrivateKey | None:
        """The key, or None when there is none (`warn`: say so once, as a warning)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_look:
                return self._key
            self._next_look = now + RECHECK_SECONDS
            try:
                st = self.path.stat()
            except OSError as exc:
                if self._key is not None:
                    log.warning("archive: signing key %s is gone (%s); checkpoints stop",
                                self.path, exc.strerror)
                self._key, self._stamp = None, None
                self._say_missing(warn, exc)
                return None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._key = chain.load_private(self.path)
                except (OSError, ValueError) as exc:
                    self._key = None
                    self._say_missing(warn, exc)
                else:
                    self._warned = False
                    log.info("archive: signing checkpoints with key %s (%s)",
                             chain.key_id(self._key.public_key()), self.path)
            return self._key

    def _say_missing(self, warn: bool, exc: Exception) -> None:
        if self._warned:
            return
        self._warned = warn
        why = "none" if isinstance(exc, FileNotFoundError) else str(exc)
        (log.warning if warn else log.debug)(
            "archive: no usable signing key at %s (%s); checkpoints are not written "
            "(run `relay archive keygen`)", self.path, why)

    def require(self, why: str) -> Ed25519PrivateKey:
        key = self.get(warn=False)
        if key is None:
            raise ArchiveError(f"{why} needs the signing key, and there is none usable at "
                               f"{self.path} (run `relay archive keygen`, or run this as "
                               "the user that can read the key)")
        return key


class Checkpoints:
    def __init__(self, key: SigningKey, node: str, every: int, interval: float) -> None:
        self.key = key
        self.node = node
        self.every = every
        self.interval = interval

    def sign(self, conn: Connection, at: datetime | None = None,
             key: Ed25519PrivateKey | None = None,
             entries: tuple[int, str] | None = None) -> dict[str, Any] | None:
        """Sign both heads as this transaction sees them (or `entries` as the entries
        head, for a writer between reserving and advancing); None when there is no key."""
        key = key or self.key.get(warn=False)
        if key is None:
            return None
        seq, entry_hash = entries or heads.read(conn, heads.ENTRIES)
        access_seq, access_hash = heads.read(conn, heads.ACCESS)
        at = at or chain.now()
        kid = chain.key_id(key.public_key())
        message = chain.checkpoint_message(seq, entry_hash, chain.timestamp(at), kid,
                                           access_seq, access_hash)
        row = {"seq": seq, "entry_hash": entry_hash, "access_seq": access_seq,
               "access_hash": access_hash, "signed_at": at, "node": self.node[:255],
               "key_id": kid, "signature": key.sign(message).hex()}
        conn.execute(schema.checkpoint.insert().values(**row))
        return row

    def after_append(self, conn: Connection, seq: int, n: int, at: datetime) -> None:
        """In the commit that took entries seq-n+1..seq: sign when a multiple of
        `checkpoint_every` was crossed, or the newest checkpoint is too old."""
        key = self.key.get()
        if key is None:
            return
        if seq // self.every == (seq - n) // self.every:
            c = schema.checkpoint
            last_at = conn.execute(sa.select(c.c.signed_at).order_by(c.c.id.desc()).limit(1)
                                   ).scalar()
            if last_at is not None and (at - last_at).total_seconds() < self.interval:
                return
        self.sign(conn, at, key)

    def sign_heads(self, db: Engine) -> dict[str, Any] | None:
        """Sign both heads now; None when a checkpoint already names them (or both are
        empty). Raises ArchiveError without a key."""
        key = self.key.require("a checkpoint")
        with db.begin() as conn:
            seq, _ = heads.take(conn, heads.ENTRIES)  # no append may slip in meanwhile
            access_seq, _ = heads.read(conn, heads.ACCESS)
            c = schema.checkpoint
            done = conn.execute(sa.select(c.c.id).where(
                c.c.seq == seq, c.c.access_seq == access_seq)).first()
            if (seq == 0 and access_seq == 0) or done is not None:
                return None
            return self.sign(conn, key=key)

"""`Archive`: the one way in to the archive for the fronts, the CLI and the console.

One per process, built by `relay.services.Services.build()`. The SMTP front calls
`await archive.record(tx, accepted, delivered)` before it answers 250; it returns once
the blobs are fsynced and the index row is committed. Each job lives in its own module
and this class only wires them together:

- `parties`: who is archived;            - `writer`: append, group commit;
- `signing`: checkpoints and the key;    - `access`: the access log;
- `query`: search, get, read a message;  - `retention`: holds and purges.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from relay.archive import access, query, schema
from relay.archive.blobs import BlobStore, DbBlobStore, FileBlobStore
from relay.archive.errors import ArchiveError
from relay.archive.parties import ArchivedMailboxes
from relay.archive.query import Filters
from relay.archive.retention import PurgeReport, Retention
from relay.archive.signing import Checkpoints, SigningKey
from relay.archive.writer import Writer
from relay.config import Config
from relay.db import make_engine
from relay.directory.store import DirectoryStore
from relay.model import Transaction

log = logging.getLogger(__name__)


class Archive:
    def __init__(self, config: Config, db: Engine | None = None,
                 directory: DirectoryStore | None = None, node: str | None = None) -> None:
        self.config = config
        self.settings = config.archive
        self.db = db or make_engine(config.directory_url)
        self.directory = directory
        self.node = node or config.server.hostname
        self.blobs: BlobStore = (FileBlobStore(self.blob_path)
                                 if self.settings.blob_store == "files" else DbBlobStore())
        self.mailboxes = ArchivedMailboxes(config, self.settings, directory)
        self.key = SigningKey(self.signing_key_path)
        self.checkpoints = Checkpoints(self.key, self.node, self.settings.checkpoint_every,
                                       self.settings.checkpoint_interval)
        self.writer = Writer(self.db, self.blobs, self.node, self.checkpoints)
        self.retention = Retention(self.db, self.blobs, self.checkpoints,
                                   self.settings.retention)
        self._ticker: asyncio.Task[None] | None = None

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

    async def aclose(self) -> None:
        """At shutdown: sign what the last checkpoint does not cover yet, then close."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self.key.get(warn=False) is not None:
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:
                log.exception("archive: final checkpoint failed")
        self.close()

    # --- where things are ----------------------------------------------------------
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

    @property
    def retired_public_key_paths(self) -> list[Path]:
        """Public keys replaced by `keygen --force`, listed in the configuration."""
        return [self.config.state_file(p) for p in self.settings.retired_public_keys]

    # --- the hook --------------------------------------------------------------------
    async def record(self, tx: Transaction, accepted: bytes, delivered: bytes) -> list[int]:
        """Archive the message when an archived mailbox is a party; the entry ids.

        Durable when it returns (blobs fsynced, index committed); raises when it
        cannot archive, and the caller must then answer 4xx, not 250.
        """
        if not self.settings.enabled:
            return []
        parties = await self.mailboxes.parties(tx)
        if not parties:
            return []
        pending = await asyncio.to_thread(self.writer.prepare, parties, tx, accepted,
                                          delivered)
        ids = await self.writer.write(pending)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._sign_periodically())
        return ids

    async def _sign_periodically(self) -> None:
        """An idle relay still signs its tail within checkpoint_interval, and signs
        with a key that appeared (`keygen`) after the first message."""
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            if self.key.get() is None:
                continue
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:
                log.exception("archive: periodic checkpoint failed")

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign both chain heads now (None when already signed, or nothing to sign)."""
        return self.checkpoints.sign_heads(self.db)

    # --- access log -------------------------------------------------------------------
    def log_access(self, who: str, action: str, target: dict[str, Any], reason: str) -> int:
        """Record who looked at what and why (signed at once when the key is here)."""
        with self.db.begin() as conn:
            seq = access.append(conn, who, action, target, reason)
            self.checkpoints.sign(conn)
            return seq

    def access_log(self, limit: int | None = None) -> list[RowMapping]:
        return access.records(self.db, limit)

    # --- reading -----------------------------------------------------------------------
    def query(self, filters: Filters) -> sa.Select:
        return query.select(filters)

    def search(self, filters: Filters) -> list[RowMapping]:
        return query.search(self.db, filters)

    def get(self, seq: int) -> RowMapping | None:
        return query.get(self.db, seq)

    def read_blob(self, digest: str, size: int, conn: Connection | None = None) -> bytes:
        """The exact bytes, checked against their address; raises ArchiveError if not."""
        return query.read_blob(self.db, self.blobs, digest, size, conn)

    # --- retention and legal hold ----------------------------------------------------------
    def holds(self) -> list[RowMapping]:
        return self.retention.holds()

    def hold(self, mailbox: str, who: str, reason: str) -> bool:
        return self.retention.hold(mailbox, who, reason)

    def release(self, mailbox: str, who: str, reason: str) -> bool:
        return self.retention.release(mailbox, who, reason)

    def purge(self, who: str, reason: str = "retention", at: datetime | None = None,
              dry_run: bool = False) -> PurgeReport:
        return self.retention.purge(who, reason, at, dry_run)


"""Content-addressed, compressed message bodies.

The address is the sha256 of the exact bytes; the stored form is zlib (level 6).
zlib because an archive is read decades later by tools nobody chose yet: the format is
frozen (RFC 1950), in every language's standard library, and on mail (text, base64)
it keeps about a third of the size at tens of MB/s, so it costs little on the SMTP path;
lzma saves a little more but is several times slower to write (see bench/archive_bench.py).

Two places, one interface:
- `FileBlobStore`: files under a folder (state_dir/archive/blobs), written to a
  temporary name, fsynced, renamed and the directory fsynced: keeps a very large
  archive's bytes out of the database.
- `DbBlobStore`: a row in `archive_blob`, written in the same transaction as the
  index entry. The default: on the SMTP path it costs no fsync besides the commit
  (official mail measured 30% faster than with files on SQLite), every node already
  reaches the database,
  a blob and its entry commit together (no orphan, no dangling entry), and backups,
  replication and access control are the database's — no NFS whose fsync and
  locking semantics nobody can promise.
"""

from __future__ import annotations

import os
import secrets
import zlib
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from relay.archive import schema
from relay.durable import fsync_dir, write_durably

LEVEL = 6


class CorruptBlob(Exception):
    """The stored form does not decompress to the size the index records."""


def compress(data: bytes) -> bytes:
    return zlib.compress(data, LEVEL)


def decompress(stored: bytes, size: int) -> bytes:
    """Decompress, never beyond the size the (hashed) index records: a bomb stops here."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(stored, size + 1)
    except zlib.error as exc:
        raise CorruptBlob(f"not valid zlib data: {exc}") from None
    if len(out) != size or not d.eof or d.unconsumed_tail:
        raise CorruptBlob(f"decompresses to {len(out)}{'+' if d.unconsumed_tail else ''} "
                          f"bytes, index says {size}")
    return out


class BlobStore(Protocol):
    name: str

    def put(self, conn: Connection | None, digest: str, size: int, stored: bytes) -> int:
        """Store the compressed form of `size` bytes hashing to `digest`; returns the
        bytes written (0 when already there)."""

    def get(self, conn: Connection, digest: str) -> bytes | None:
        """The stored (compressed) form, or None when absent."""

    def delete(self, conn: Connection, digest: str) -> None: ...

    @property
    def in_transaction(self) -> bool:
        """True when put() must run inside the index transaction."""


class FileBlobStore:
    name = "files"
    in_transaction = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / f"{digest}.z"

    def put(self, conn: Connection | None, digest: str, size: int, stored: bytes) -> int:
        path = self.path(digest)
        if path.exists():
            return 0
        created = _makedirs(path.parent)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            write_durably(tmp, stored, 0o640)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        for folder in (path.parent, *created):
            fsync_dir(folder)
        return len(stored)

    def get(self, conn: Connection | None, digest: str) -> bytes | None:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, conn: Connection | None, digest: str) -> None:
        path = self.path(digest)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)


class DbBlobStore:
    name = "database"
    in_transaction = True

    def put(self, conn: Connection | None, digest: str, size: int, stored: bytes) -> int:
        assert conn is not None
        # the same bytes may arrive through another node at the same instant
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        ins = insert(schema.blob).values(hash=digest, size=size, data=stored)
        result = conn.execute(ins.on_conflict_do_nothing(index_elements=["hash"]))
        return len(stored) if result.rowcount else 0

    def get(self, conn: Connection, digest: str) -> bytes | None:
        row = conn.execute(sa.select(schema.blob.c.data).where(schema.blob.c.hash == digest))
        value = row.scalar()
        return None if value is None else bytes(value)

    def delete(self, conn: Connection, digest: str) -> None:
        conn.execute(schema.blob.delete().where(schema.blob.c.hash == digest))


def _makedirs(folder: Path) -> list[Path]:
    """mkdir -p; returns the parents of newly created folders (to fsync their entries)."""
    created: list[Path] = []
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for m in reversed(missing):
        try:
            m.mkdir(mode=0o750)
        except FileExistsError:
            continue
        created.append(m.parent)
    return created

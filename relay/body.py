"""A message's bytes as a front receives them: in memory while small, in a file once large.

DATA is written here as it arrives, so a 25 MB message costs the front a small
buffer, not 25 MB (and not the 7-9x that holding, parsing and copying it cost
before). The file lives in the spool's `tmp/` (removed at start-up if a crash left
it); the inspection worker reads it from there, and the spool copies it into the
queue file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

IN_MEMORY = 1024 * 1024  # past this a message goes to a file
CHUNK = 256 * 1024


class Body:
    def __init__(self, spill_dir: Path | None = None, name: str = "",
                 threshold: int = IN_MEMORY) -> None:
        self._buffer = bytearray()
        self._frozen: bytes | None = None  # read() of a finished in-memory body, once
        self._file: int | None = None
        self.path: Path | None = None
        self._spill = (spill_dir / f"{name}.data") if spill_dir is not None else None
        self._threshold = threshold
        self.size = 0

    @classmethod
    def at(cls, path: Path) -> Body:
        """A message a front already spooled to `path`."""
        body = cls()
        body.path, body.size = path, path.stat().st_size
        return body

    @classmethod
    def of(cls, data: bytes) -> Body:
        """Bytes already in memory (kept as they are, not copied)."""
        body = cls()
        body._frozen, body.size = data, len(data)
        return body

    def write(self, chunk: bytes) -> None:
        assert self._frozen is None, "a body is written before it is read"
        self.size += len(chunk)
        if self._file is not None:
            _write_all(self._file, chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > self._threshold and self._spill is not None:
            self.path = self._spill
            self._file = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            _write_all(self._file, self._buffer)
            self._buffer = bytearray()

    def finish(self) -> None:
        """No more writes (the file is closed; its pages stay in the cache for readers)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def read(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        if self._frozen is None:
            self._frozen, self._buffer = bytes(self._buffer), bytearray()
        return self._frozen

    def head(self, n: int) -> bytes:
        """The first n bytes (enough for the header section)."""
        if self.path is None:
            return self.read()[:n]
        with self.path.open("rb") as fh:
            return fh.read(n)

    def chunks(self) -> Iterator[bytes]:
        if self.path is None:
            yield self.read()
            return
        with self.path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def discard(self) -> None:
        self.finish()
        self._buffer, self._frozen = bytearray(), None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

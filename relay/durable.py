"""Files that survive a crash: what the spool, Maildir delivery and the archive write.

A rename is durable only once its directory is fsynced too (Exim does both; Postfix
only the file), so each helper says which of the two it does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes | Iterable[bytes], mode: int = 0o600) -> None:
    """Create, write, fsync, close: the bytes are on disk (the name not yet: fsync_dir).

    `data` may be pieces (read from a large message's file as they are written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        for piece in [data] if isinstance(data, bytes | bytearray) else data:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace `path` with `data`, file and directory fsynced."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        write_durably(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)

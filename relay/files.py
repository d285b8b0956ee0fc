"""State files are private whatever the umask of whoever creates them.

`directory.db` holds argon2 hashes, the queue and the archive hold mail, the decision
log holds addresses; they were created with the caller's umask, so an administrator
running `relay directory mailbox add` with the usual 022 made a world-readable
directory.db (issue 10, item 11). These helpers create with an explicit mode instead:
0600 for secrets and mail, 0640 for logs (a log reader group), 0750 for folders.
The daemons also set umask 027 (`relay.daemon`) for anything created another way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

SECRET = 0o600
LOG = 0o640
FOLDER = 0o750
DAEMON_UMASK = 0o027


def private_dir(path: Path, mode: int = FOLDER) -> None:
    """mkdir -p where every folder created gets MODE (pathlib gives parents the umask's)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue
        os.chmod(folder, mode)  # mkdir's mode is filtered by the umask too


def create_private(path: Path, mode: int = SECRET) -> None:
    """Create PATH empty with MODE unless it exists (an existing file keeps its mode)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def open_append(path: Path, mode: int = LOG) -> TextIO:
    """A UTF-8 text file opened for appending, line-buffered, created with MODE."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def write_private(path: Path, data: bytes, mode: int = SECRET) -> None:
    """Replace PATH with DATA, never readable beyond MODE, not even for a moment."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)

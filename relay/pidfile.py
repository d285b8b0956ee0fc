"""`relay.pid`: written by `relay serve`, read by `relay queue` to signal it.

A pid file outlives a crash or a `kill -9`, and the kernel hands the number to the
next process that needs one: signalling whatever it names sent SIGUSR1 (whose default
action is to terminate) to an unrelated process (issue 10, item 11). So the reader
checks that the process is a `relay serve` before it signals it.
"""

from __future__ import annotations

import os
from pathlib import Path

from relay.files import LOG, write_private


def write(path: Path) -> None:
    write_private(path, f"{os.getpid()}\n".encode(), LOG)


def is_relay_server(pid: int) -> bool:
    """The process runs `relay serve` (`relay serve …`, `python -m relay serve …`)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = [arg.decode("utf-8", "replace") for arg in cmdline.split(b"\0") if arg]
    if "serve" not in args:
        return False
    before = args[:args.index("serve")]
    return any(Path(arg).name == "relay" for arg in before)


def running_relay(path: Path) -> int | None:
    """The pid in PATH when it is a running relay server, else None (no file, garbage,
    or a stale number now used by another process)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 1 and is_relay_server(pid) else None

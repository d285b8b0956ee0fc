"""What both daemons (`relay serve`, `relay milter`) need from systemd and journald.

sd_notify(3) without a dependency, stderr lines with `<N>` priority prefixes, a
watchdog ping from the event loop (so a stuck loop is restarted), and the reload
step: RELOADING=1, load and build, READY=1; a refused file changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from relay.config import Config, ConfigError, load
from relay.files import DAEMON_UMASK
from relay.policyset import PolicySet, configure
from relay.runtime import Runtime
from relay.transaction import Hub

log = logging.getLogger("relay")

# syslog levels for journald's <N> prefixes (sd-daemon(3))
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str, tag: str = "") -> None:
    """`tag` names the process (front1, front2...) when a daemon runs as several."""
    handler = logging.StreamHandler(sys.stderr)
    where = f"[{tag}]" if tag else ""
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s{where}: %(message)s"))
    else:  # journald or a pipe: let the priority prefix carry the level
        handler.setFormatter(JournalFormatter(f"%(name)s{where}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter


def sd_notify(state: str) -> None:
    """The sd_notify(3) datagram; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)



class Daemon:
    """What `relay serve` and `relay milter` share: stop on SIGTERM/SIGINT, reload on
    SIGHUP, ping the watchdog, and keep background tasks referenced until they end.

    `self.hub.runtime` is the configuration in force; a reload builds a new runtime
    and swaps it in: connections already open keep theirs until they end."""

    hub: Hub

    def __init__(self, config: Config, policies: PolicySet, config_path: Path | None) -> None:
        # files created without an explicit mode stay out of other users' reach (files.py)
        os.umask(DAEMON_UMASK)
        self.config = config
        self.policies = policies
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self.reload()))
        self.spawn(watchdog())

    async def reload(self) -> None:
        """SIGHUP: RELOADING=1, load and build, READY=1; a refused file changes nothing."""
        sd_notify("RELOADING=1\nMONOTONIC_USEC="
                  f"{int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)}")
        try:
            config = load(self.config_path)
            policies = configure(config)
            self.note_restart_needed(self.config, config)
            await self.apply(config, policies)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        except Exception:
            log.exception("reload failed, keeping the running configuration")
            return
        finally:
            sd_notify("READY=1")
        self.config, self.policies = config, policies
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")

    async def apply(self, config: Config, policies: PolicySet) -> None:
        """Serve new connections under a new configuration (one process: a new runtime)."""
        self.hub.swap(await Runtime.build(config, policies))

    def note_restart_needed(self, old: Config, new: Config) -> None:
        """Log the changes a reload cannot apply (listening addresses)."""


async def watchdog() -> None:
    """Ping WATCHDOG=1 at half of WatchdogSec= while the event loop runs; no-op without it."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(int(usec) / 2_000_000)

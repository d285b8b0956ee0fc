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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay import services as services_mod
from relay.config import Config, ConfigError, load
from relay.engine import Engine

log = logging.getLogger("relay")

# syslog levels for journald's <N> prefixes (sd-daemon(3))
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:  # journald or a pipe: let the priority prefix carry the level
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
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
    SIGHUP, ping the watchdog, and keep background tasks referenced until they end."""

    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.config = config
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
        raise NotImplementedError


async def watchdog() -> None:
    """Ping WATCHDOG=1 at half of WatchdogSec= while the event loop runs; no-op without it."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(int(usec) / 2_000_000)


async def reload_runtime(config_path: Path | None
                         ) -> tuple[Config, dict[str, Any], Engine] | None:
    """A new configuration with its services and engine, or None (logged) when refused."""
    sd_notify(f"RELOADING=1\nMONOTONIC_USEC={int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)}")
    try:
        config = load(config_path)
        services = await services_mod.build(config)
        return config, services, Engine(config, services)
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration:\n%s", exc)
    except Exception:
        log.exception("reload failed, keeping the running configuration")
    finally:
        sd_notify("READY=1")
    return None


async def retire(engine: Engine, services: dict[str, Any],
                 wait_for: Callable[[], Awaitable[Any]]) -> None:
    """Close an engine replaced by a reload once the sessions still using it are done."""
    await wait_for()
    await engine.close()
    await services_mod.close(services)

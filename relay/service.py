"""`relay serve`: listeners, queue runner and delivery in one asyncio process.

Signals: SIGHUP reloads relay.toml (an invalid file is refused and the old
configuration stays), SIGTERM/SIGINT stop after the sessions in progress,
SIGUSR1 rescans the queue (what `relay queue flush` sends). systemd is told
READY=1, RELOADING=1 and WATCHDOG=1 when it asks for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from relay import metrics
from relay import services as services_mod
from relay.config import Config, ConfigError, load
from relay.decisionlog import DecisionLog
from relay.delivery import Router
from relay.engine import Engine
from relay.runner import QueueRunner
from relay.smtp import Hub, start_listeners
from relay.spool import Spool
from relay.tls import server_context

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


class Service:
    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    async def main(self) -> None:
        config = self.config
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.spool = Spool(config.spool_path)
        dropped = self.spool.recover()
        if dropped:
            log.info("removed %d unacknowledged partial queue files", dropped)
        self.services = await services_mod.build(config)
        engine = Engine(config, self.services)
        self.router = Router(config)
        self.runner = QueueRunner(config, self.spool, self.router)
        self.decisions = DecisionLog(config.state_file(config.server.decision_log))
        self.hub = Hub(config, engine, self.spool, self.decisions, self.services,
                       self.runner.submit)
        if config.server.metrics_bind is not None:
            metrics.serve(config.server.metrics_bind)
        tls = server_context(config)
        servers = await start_listeners(self.hub, tls)
        runner_task = asyncio.create_task(self.runner.run())
        pid_file = config.state_file("relay.pid")
        pid_file.write_text(f"{os.getpid()}\n")

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._spawn, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.runner.rescan)
        self._watchdog()
        sd_notify(f"READY=1\nSTATUS=accepting mail on {len(servers)} listeners\n"
                  f"MAINPID={os.getpid()}")
        log.info("relay ready: %d listeners, %d policies, state in %s", len(servers),
                 len(engine.policies), config.state_path)
        await self._stop.wait()

        sd_notify("STOPPING=1")
        log.info("stopping")
        for server in servers:
            server.close()
        await self.runner.stop()
        runner_task.cancel()
        await self.router.close()
        await self.hub.engine.close()
        await services_mod.close(self.services)
        self.decisions.close()
        self.spool.close()
        pid_file.unlink(missing_ok=True)

    def _spawn(self, coro_fn: Any) -> None:
        task = asyncio.create_task(coro_fn())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> None:
        monotonic_us = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_us}")
        try:
            new = load(self.config_path)
            if new.listeners != self.config.listeners:
                log.warning("listener changes take effect at the next restart")
            services = await services_mod.build(new)
            engine = Engine(new, services)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        except Exception:
            log.exception("reload failed, keeping the running configuration")
            return
        finally:
            sd_notify("READY=1")
        old_engine, old_services = self.hub.engine, self.services
        self.hub.reconfigure(new, engine, services)
        self.config, self.services = new, services
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")
        # sessions still inside a stage may hold the old engine for a moment
        await asyncio.sleep(5)
        await old_engine.close()
        await services_mod.close(old_services)

    def _watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return
        interval = int(usec) / 2_000_000

        async def ping() -> None:
            while True:
                sd_notify("WATCHDOG=1")
                await asyncio.sleep(interval)

        self._spawn(ping)


def run(config: Config, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    if config_path is None:
        log.info("no configuration file: running on the embedded defaults")
    asyncio.run(Service(config, config_path).main())
    return 0

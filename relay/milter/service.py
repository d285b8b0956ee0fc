"""`relay milter`: the milter server as a daemon, in one process or several.

SIGHUP reloads relay.toml, SIGTERM stops (open sessions get their grace), systemd
is told READY/RELOADING/STOPPING. With `[milter] workers` above one, milter
processes share the socket under a supervisor (relay.supervisor), as `relay serve`
does for SMTP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from pathlib import Path

from relay import metrics
from relay.anvil import Anvil, LocalAnvil
from relay.config import Config
from relay.daemon import Daemon, listening, sd_notify, setup_logging
from relay.decisionlog import DecisionLog
from relay.eventloop import run_loop
from relay.milter.server import MilterServer
from relay.petitions.gauges import collectors as petition_gauges
from relay.policyset import PolicySet
from relay.runtime import Runtime
from relay.supervisor import Supervisor, listening_sockets
from relay.transaction import Hub

log = logging.getLogger("relay.milter")


class MilterService(Daemon):
    """`relay milter`: the server and its runtime, in this process (`[milter] workers = 1`)
    or in several milter processes sharing the socket; SIGHUP reloads, SIGTERM stops."""

    supervisor: Supervisor | None = None

    async def main(self) -> int:
        self.stop_on_signals()
        config = self.config
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
        bind = config.milter_bind
        if not bind.startswith("unix:"):
            log.warning("milter on TCP %s: any local process can connect and speak for "
                        "Postfix (invented AUTH logins are archived as such); prefer a Unix "
                        "socket", bind)
        if config.milter.metrics_bind is not None:
            with listening({"milter.metrics_bind": config.milter.metrics_bind}):
                # counted where the log is written; petitions read from the database
                metrics.serve(config.milter.metrics_bind, petition_gauges(config))
        self.anvil = Anvil(config.milter.max_connections, 0, 0, lambda ip: True)
        processes = config.milter.workers or os.cpu_count() or 1
        with listening({"milter.bind": bind}):  # a busy address: one line, exit 69
            if processes == 1:
                decisions = DecisionLog(config.state_file(config.server.decision_log))
                self.hub = Hub(await Runtime.build(config, self.policies), decisions,
                               gate=LocalAnvil(self.anvil))
                self.server = MilterServer(self.hub)
                await self.server.start()
            else:
                sockets = milter_sockets(config, processes)
        if processes != 1:
            self.supervisor = Supervisor("milter", config, sockets, self.anvil,
                                         lambda queue_id: None)
            await self.supervisor.start()
        self.handle_signals()
        if not self.stopping.is_set():  # not told to stop while starting
            sd_notify(f"READY=1\nSTATUS=milter on {bind}, {processes} processes\n"
                      f"MAINPID={os.getpid()}")
            log.info("relay milter ready on %s: %d processes, %d policies", bind, processes,
                     len(self.policies))
        await self.stopping.wait()
        sd_notify("STOPPING=1")
        if self.supervisor is not None:
            await self.supervisor.stop()
            _remove_socket(bind)
        else:
            await self.server.stop()
            await self.hub.runtime.aclose()
            decisions.close()
        return 0

    async def apply(self, config: Config, policies: PolicySet) -> None:
        self.anvil.max_connections = config.milter.max_connections
        if self.supervisor is not None:
            self.supervisor.reload(config)
        else:
            await super().apply(config, policies)

    def note_restart_needed(self, old: Config, new: Config) -> None:
        if new.milter_bind != old.milter_bind:
            log.warning("milter.bind changes take effect at the next restart")


def milter_sockets(config: Config, copies: int) -> list[list[tuple[str, str, socket.socket]]]:
    """The milter's listening socket(s), for each milter process: a Unix socket is one,
    shared; TCP gets one per process (SO_REUSEPORT)."""
    bind = config.milter_bind
    if not bind.startswith("unix:"):
        host, _, port = bind.rpartition(":")
        return listening_sockets([("milter", "milter", (host.strip("[]"), int(port)))], copies)
    path = Path(bind[5:])
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()  # left by a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {bind}: {exc.strerror}") from None
    os.chmod(path, config.milter.socket_mode)
    sock.listen(1024)
    sock.setblocking(False)
    return [[("milter", "milter", sock)] for _ in range(copies)]


def _remove_socket(bind: str) -> None:
    if bind.startswith("unix:"):
        with contextlib.suppress(FileNotFoundError):
            Path(bind[5:]).unlink()


def run(config: Config, policies: PolicySet, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    try:
        return run_loop(MilterService(config, policies, config_path).main())
    finally:
        metrics.remove_files()

"""`relay serve`: SMTP listeners, the queue runner and delivery.

With `[server] workers = 1` everything runs in this one process (and its inspection
workers). Otherwise this process supervises `workers` front processes (one per
core by default) that share the listening sockets, and runs the one queue runner,
the metrics endpoint and the connection counts for all of them.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from relay import metrics, pidfile
from relay.anvil import Anvil, LocalAnvil
from relay.config import Config
from relay.daemon import Daemon, listening, sd_notify, setup_logging
from relay.decisionlog import DecisionLog
from relay.delivery import Router
from relay.eventloop import run_loop
from relay.petitions.gauges import collectors as petition_gauges
from relay.policyset import PolicySet
from relay.runner import QueueRunner
from relay.runtime import Runtime
from relay.smtp import start_listeners
from relay.spool import Spool
from relay.supervisor import Supervisor, listening_sockets
from relay.tls import server_context
from relay.transaction import Hub

log = logging.getLogger("relay")


def front_count(configured: int) -> int:
    return configured or os.cpu_count() or 1


def anvil_for(config: Config) -> Anvil:
    s = config.server
    return Anvil(s.max_connections, s.max_connections_per_ip, s.connection_rate_limit,
                 config.is_trusted)


class Server(Daemon):
    supervisor: Supervisor | None = None

    async def main(self) -> None:
        self.stop_on_signals()
        config = self.config
        # file and database work (fsyncs, SQLite commits) waits on the disk, not the CPU:
        # more threads than asyncio's default (cores + 4) keep sessions from queueing
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="io"))
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
        spool = Spool(config.spool_path)
        dropped = spool.recover()  # before any front writes: no session is open yet
        if dropped:
            log.info("removed %d unacknowledged partial queue files", dropped)
        router = Router(config)
        runner = QueueRunner(config, spool, router)
        self.anvil = anvil_for(config)
        if config.server.metrics_bind is not None:
            with listening({"server.metrics_bind": config.server.metrics_bind}):
                metrics.serve(config.server.metrics_bind, petition_gauges(config))
        tls = server_context(config)  # made here once, before fronts may look for it
        fronts = front_count(config.server.workers)
        binds = {f"listeners.{name}": lc.bind for name, lc in config.listeners.items()}
        if fronts == 1:
            decisions = DecisionLog(config.state_file(config.server.decision_log))
            runtime = await Runtime.build(config, self.policies)
            self.hub = Hub(runtime, decisions, spool, runner.submit, LocalAnvil(self.anvil))
            with listening(binds):
                servers = await start_listeners(self.hub, tls)
        else:
            with listening(binds):
                sockets = listening_sockets([(name, listener.kind, listener.bind)
                                             for name, listener in config.listeners.items()],
                                            fronts)
            self.supervisor = Supervisor("smtp", config, sockets, self.anvil, runner.submit)
            await self.supervisor.start()
        runner_task = asyncio.create_task(runner.run())
        pid_file = config.state_file("relay.pid")
        pidfile.write(pid_file)

        self.handle_signals()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, runner.rescan)
        if not self.stopping.is_set():  # not told to stop while starting
            sd_notify(f"READY=1\nSTATUS=accepting mail on {len(config.listeners)} listeners, "
                      f"{fronts} front processes\nMAINPID={os.getpid()}")
            log.info("relay ready: %d listeners, %d front processes, %d policies, state in %s",
                     len(config.listeners), fronts, len(self.policies), config.state_path)
        await self.stopping.wait()

        sd_notify("STOPPING=1")
        log.info("stopping")
        if self.supervisor is not None:
            await self.supervisor.stop()
        else:
            for server in servers:
                server.close()
        await runner.stop()
        runner_task.cancel()
        await router.close()
        if self.supervisor is None:
            await self.hub.runtime.aclose()
            decisions.close()
        spool.close()
        pid_file.unlink(missing_ok=True)

    async def apply(self, config: Config, policies: PolicySet) -> None:
        s = config.server
        self.anvil.max_connections = s.max_connections
        self.anvil.per_ip, self.anvil.rate = s.max_connections_per_ip, s.connection_rate_limit
        if self.supervisor is not None:
            self.supervisor.reload(config)
        else:
            await super().apply(config, policies)

    def note_restart_needed(self, old: Config, new: Config) -> None:
        if new.listeners != old.listeners:
            log.warning("listener changes take effect at the next restart")
        if new.server.workers != old.server.workers:
            log.warning("server.workers changes take effect at the next restart")


def run(config: Config, policies: PolicySet, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    if config_path is None:
        log.info("no configuration file: running on the embedded defaults")
    try:
        run_loop(Server(config, policies, config_path).main())
    finally:
        metrics.remove_files()
    return 0

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from relay import metrics
from relay import services as services_mod
from relay.config import Config
from relay.daemon import Daemon, reload_runtime, retire, sd_notify, setup_logging
from relay.decisionlog import DecisionLog
from relay.delivery import Router
from relay.engine import Engine
from relay.runner import QueueRunner
from relay.smtp import Hub, start_listeners
from relay.spool import Spool
from relay.tls import server_context

log = logging.getLogger("relay")

class Service(Daemon):
    async def main(self) -> None:
        config = self.config
        # file and database work (fsyncs, SQLite commits) waits on the disk, not the CPU:
        # more threads than asyncio's default (cores + 4) keep sessions from queueing
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="io"))
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

        self.handle_signals()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.runner.rescan)
        sd_notify(f"READY=1\nSTATUS=accepting mail on {len(servers)} listeners\n"
                  f"MAINPID={os.getpid()}")
        log.info("relay ready: %d listeners, %d policies, state in %s", len(servers),
                 len(engine.policies), config.state_path)
        await self.stopping.wait()

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

    async def reload(self) -> None:
        runtime = await reload_runtime(self.config_path)
        if runtime is None:
            return
        new, services, engine = runtime
        if new.listeners != self.config.listeners:
            log.warning("listener changes take effect at the next restart")
        old_engine, old_services = self.hub.engine, self.services
        self.hub.reconfigure(new, engine, services)
        self.config, self.services = new, services
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")
        # sessions still inside a stage may hold the old engine for a moment
        await retire(old_engine, old_services, lambda: asyncio.sleep(5))

def run(config: Config, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    if config_path is None:
        log.info("no configuration file: running on the embedded defaults")
    asyncio.run(Service(config, config_path).main())
    return 0

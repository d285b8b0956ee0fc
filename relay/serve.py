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
from relay.config import Config
from relay.daemon import Daemon, listening, sd_notify, setup_logging
from relay.decisionlog import DecisionLog
from relay.delivery import Router
from relay.policyset import PolicySet
from relay.runner import QueueRunner
from relay.runtime import Runtime
from relay.smtp import start_listeners
from relay.spool import Spool
from relay.tls import server_context
from relay.transaction import Hub

log = logging.getLogger("relay")


class Server(Daemon):
    async def main(self) -> None:
        config = self.config
        # file and database work (fsyncs, SQLite commits) waits on the disk, not the CPU:
        # more threads than asyncio's default (cores + 4) keep sessions from queueing
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="io"))
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
        spool = Spool(config.spool_path)
        dropped = spool.recover()
        if dropped:
            log.info("removed %d unacknowledged partial queue files", dropped)
        router = Router(config)
        runner = QueueRunner(config, spool, router)
        decisions = DecisionLog(config.state_file(config.server.decision_log))
        runtime = await Runtime.build(config, self.policies)
        self.hub = Hub(runtime, decisions, spool, runner.submit)
        if config.server.metrics_bind is not None:
            with listening({"server.metrics_bind": config.server.metrics_bind}):
                metrics.serve(config.server.metrics_bind)
        tls = server_context(config)
        with listening({f"listeners.{name}": lc.bind for name, lc in config.listeners.items()}):
            servers = await start_listeners(self.hub, tls)
        runner_task = asyncio.create_task(runner.run())
        pid_file = config.state_file("relay.pid")
        pid_file.write_text(f"{os.getpid()}\n")

        self.handle_signals()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, runner.rescan)
        sd_notify(f"READY=1\nSTATUS=accepting mail on {len(servers)} listeners\n"
                  f"MAINPID={os.getpid()}")
        log.info("relay ready: %d listeners, %d policies, state in %s", len(servers),
                 len(runtime.engine.policies), config.state_path)
        await self.stopping.wait()

        sd_notify("STOPPING=1")
        log.info("stopping")
        for server in servers:
            server.close()
        await runner.stop()
        runner_task.cancel()
        await router.close()
        await self.hub.runtime.aclose()
        decisions.close()
        spool.close()
        pid_file.unlink(missing_ok=True)

    def note_restart_needed(self, old: Config, new: Config) -> None:
        if new.listeners != old.listeners:
            log.warning("listener changes take effect at the next restart")


def run(config: Config, policies: PolicySet, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    if config_path is None:
        log.info("no configuration file: running on the embedded defaults")
    asyncio.run(Server(config, policies, config_path).main())
    return 0

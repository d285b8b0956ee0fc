"""The milter server (many Postfix connections on one event loop) and `relay milter`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import Any

from relay import metrics
from relay import services as services_mod
from relay.config import Config
from relay.daemon import Daemon, reload_runtime, retire, sd_notify, setup_logging
from relay.decisionlog import DecisionLog
from relay.engine import Engine
from relay.milter.session import MilterSession

log = logging.getLogger("relay.milter")


class MilterServer:
    """Serves milter connections on `[milter] bind`, each in its own task."""

    def __init__(self, config: Config, engine: Engine, services: dict[str, Any] | None = None,
                 decisions: DecisionLog | None = None) -> None:
        self.decisions = decisions
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.swap(config, engine, services or {})

    def swap(self, config: Config, engine: Engine, services: dict[str, Any]
             ) -> set[asyncio.Task[None]]:
        """Serve new sessions with another configuration; returns the sessions still on
        the old one (its engine may be closed once they are done)."""
        self.config, self.engine, self.services = config, engine, dict(services)
        return set(self._sessions)

    @property
    def bind(self) -> str:
        return self.config.milter.bind

    @property
    def socket_path(self) -> Path | None:
        return Path(self.bind[5:]) if self.bind.startswith("unix:") else None

    async def start(self) -> None:
        path = self.socket_path
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.stat().st_mode):
                    path.unlink()  # left by a previous run
            self._server = await asyncio.start_unix_server(self._accept, path=str(path))
            os.chmod(path, self.config.milter.socket_mode)
        else:
            host, _, port = self.bind.rpartition(":")
            self._server = await asyncio.start_server(self._accept, host.strip("[]"),
                                                      int(port), reuse_address=True)
        log.info("milter listening on %s", self.bind)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._sessions) >= self.config.milter.max_connections:
            # Postfix applies milter_default_action (tempfail) to this SMTP session
            log.warning("milter: %d connections open, refusing another", len(self._sessions))
            metrics.REFUSED_CONNECTIONS.inc()
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        metrics.CONNECTIONS.inc()
        try:
            await MilterSession(self, reader, writer).run()
        except Exception:
            log.exception("milter session failed")
        finally:
            metrics.CONNECTIONS.dec()
            self._sessions.discard(task)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let open sessions finish for up to `grace` seconds."""
        if self._server is not None:
            self._server.close()
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        path = self.socket_path
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def __aenter__(self) -> MilterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=1.0)


# --- `relay milter` -----------------------------------------------------------------
class MilterService(Daemon):
    """`relay milter`: the server, its engine and services; SIGHUP reloads, SIGTERM stops."""

    async def main(self) -> int:
        config = self.config
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
        services = await services_mod.build(config)
        if config.milter.metrics_bind is not None:
            metrics.serve(config.milter.metrics_bind)  # counted where the decision log is written
        decisions = DecisionLog(config.state_file(config.server.decision_log))
        self.server = MilterServer(config, Engine(config, services), services, decisions)
        try:
            try:
                await self.server.start()
            except OSError as exc:
                log.error("milter cannot listen on %s: %s", config.milter.bind, exc.strerror)
                return 71  # EX_OSERR
            self.handle_signals()
            sd_notify(f"READY=1\nSTATUS=milter on {config.milter.bind}\nMAINPID={os.getpid()}")
            log.info("relay milter ready on %s: %d policies", config.milter.bind,
                     len(self.server.engine.policies))
            await self.stopping.wait()
            sd_notify("STOPPING=1")
            await self.server.stop()
            return 0
        finally:
            await self.server.engine.close()
            await services_mod.close(self.server.services)
            decisions.close()

    async def reload(self) -> None:
        runtime = await reload_runtime(self.config_path)
        if runtime is None:
            return
        new, services, engine = runtime
        if new.milter.bind != self.server.config.milter.bind:
            log.warning("milter.bind changes take effect at the next restart")
        old_engine, old_services = self.server.engine, self.server.services
        still_open = self.server.swap(new, engine, services)
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")
        # a milter session lasts as long as Postfix's SMTP session: wait for those on
        # the old engine before closing it

        async def sessions_done() -> None:
            if still_open:
                await asyncio.wait(still_open, timeout=3600)

        await retire(old_engine, old_services, sessions_done)


def run(config: Config, config_path: Path | None) -> int:
    setup_logging(config.server.log_level)
    return asyncio.run(MilterService(config, config_path).main())

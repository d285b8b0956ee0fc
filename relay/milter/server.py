"""The milter server (many Postfix connections on one event loop) and `relay milter`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from pathlib import Path

from relay import metrics
from relay.anvil import Anvil, LocalAnvil
from relay.config import Config
from relay.daemon import Daemon, sd_notify, setup_logging
from relay.decisionlog import DecisionLog
from relay.milter.session import MilterSession
from relay.policyset import PolicySet
from relay.runtime import Runtime
from relay.supervisor import Supervisor, listening_sockets
from relay.transaction import Hub

log = logging.getLogger("relay.milter")


class MilterServer:
    """Serves milter connections on `[milter] bind`, each in its own task."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self.hub.runtime.config

    @property
    def bind(self) -> str:
        return self.config.milter_bind

    @property
    def socket_path(self) -> Path | None:
        return Path(self.bind[5:]) if self.bind.startswith("unix:") else None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on [milter] bind, or on a socket a supervisor opened."""
        path = self.socket_path
        if sock is not None:
            if sock.family == socket.AF_UNIX:
                self._server = await asyncio.start_unix_server(self._accept, sock=sock)
            else:
                self._server = await asyncio.start_server(self._accept, sock=sock)
        elif path is not None:
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
        # this process's sessions, and all milter processes' (the supervisor's count)
        if (len(self._sessions) >= self.config.milter.max_connections
                or await self.hub.gate.admit("") is not None):
            # Postfix applies milter_default_action (tempfail) to this SMTP session
            log.warning("milter: %d connections open, refusing another", len(self._sessions))
            metrics.REFUSED_CONNECTIONS.inc()
            writer.close()
            return
        try:
            await self._session(reader, writer)
        finally:
            self.hub.gate.release("")

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
    """`relay milter`: the server and its runtime, in this process (`[milter] workers = 1`)
    or in several milter processes sharing the socket; SIGHUP reloads, SIGTERM stops."""

    supervisor: Supervisor | None = None

    async def main(self) -> int:
        config = self.config
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
        bind = config.milter_bind
        if not bind.startswith("unix:"):
            log.warning("milter on TCP %s: any local process can connect and speak for "
                        "Postfix (invented AUTH logins are archived as such); prefer a Unix "
                        "socket", bind)
        if config.milter.metrics_bind is not None:
            metrics.serve(config.milter.metrics_bind)  # counted where the decision log is written
        self.anvil = Anvil(config.milter.max_connections, 0, 0, lambda ip: True)
        processes = config.milter.workers or os.cpu_count() or 1
        try:
            if processes == 1:
                decisions = DecisionLog(config.state_file(config.server.decision_log))
                self.hub = Hub(await Runtime.build(config, self.policies), decisions,
                               gate=LocalAnvil(self.anvil))
                self.server = MilterServer(self.hub)
                await self.server.start()
            else:
                self.supervisor = Supervisor("milter", config, milter_sockets(config, processes),
                                             self.anvil, lambda queue_id: None)
                await self.supervisor.start()
        except OSError as exc:
            log.error("milter cannot listen on %s: %s", bind, exc.strerror or exc)
            return 71  # EX_OSERR
        self.handle_signals()
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
        return asyncio.run(MilterService(config, policies, config_path).main())
    finally:
        metrics.remove_files()

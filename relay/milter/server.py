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
from relay.config import Config
from relay.milter.session import MilterSession
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
        metrics.batched_counter(metrics.CONNECTIONS).inc()
        try:
            await MilterSession(self, reader, writer).run()
        except Exception:
            log.exception("milter session failed")
        finally:
            metrics.batched_counter(metrics.CONNECTIONS).dec()
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

"""A front process: SMTP (or milter) listeners on sockets its supervisor opened.

Several fronts share each listening socket, so every core serves clients; each
has its own runtime (engine, inspection workers, stores). What must be counted
for the whole relay is asked of the supervisor over the control channel: whether
a client may connect (relay.anvil), and which messages were queued (the one
queue runner lives in the supervisor). The supervisor also sends the reloaded
configuration and tells a front to stop; a front whose supervisor is gone stops.

Control messages are JSON lines, in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from relay import maillog
from relay.anvil import REFUSALS
from relay.config import Config, ConfigError, from_dict
from relay.daemon import setup_logging
from relay.eventloop import run_loop
from relay.model import Reply
from relay.policyset import configure
from relay.runtime import Runtime

log = logging.getLogger("relay.front")

STOP_GRACE = 10.0


class Outbox:
    """Control messages as JSON lines, both ways: what one turn of the event loop sends
    goes out in one write (and wakes the other end once), not a write per message; under
    load a turn admits, releases and queues for several sessions."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._lines: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(json.dumps(message).encode() + b"\n")

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(lines))


class Control(Outbox):
    """The front's end of the control channel; also the front's connection gate."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.reader = reader
        self._seq = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[str | None]] = {}

    async def admit(self, ip: str) -> Reply | None:
        seq = next(self._seq)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        self.send({"op": "admit", "seq": seq, "ip": ip})
        try:
            why = await asyncio.wait_for(future, 10)
        finally:
            self._waiting.pop(seq, None)
        return None if why is None else REFUSALS.get(why, REFUSALS["total"])

    def release(self, ip: str) -> None:
        self.send({"op": "release", "ip": ip})

    def queued(self, queue_id: str) -> None:
        self.send({"op": "queued", "id": queue_id})

    def answered(self, seq: int, why: str | None) -> None:
        future = self._waiting.get(seq)
        if future is not None and not future.done():
            future.set_result(why)


class Front:
    def __init__(self, kind: str, sockets: list[tuple[str, str, socket.socket]],
                 control: socket.socket, config: Config, index: int) -> None:
        self.kind, self.sockets, self.index = kind, sockets, index
        self.control_socket = control
        self.config = config
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        reader, writer = await asyncio.open_connection(sock=self.control_socket)
        self.control = Control(reader, writer)
        listening = await self._start(await Runtime.build(self.config, configure(self.config)))
        self.control.send({"op": "ready"})
        listen_task = asyncio.create_task(self._listen())
        await self.stopping.wait()
        listen_task.cancel()
        await self._stop(listening)

    async def _listen(self) -> None:
        try:
            while line := await self.control.reader.readline():
                message = json.loads(line)
                op = message.get("op")
                if op == "admitted":
                    self.control.answered(message["seq"], message.get("why"))
                elif op == "ping":
                    self.control.send({"op": "pong"})
                elif op == "reload":
                    await self._reload(message)
                elif op == "reopen" and self.hub.decisions is not None:  # SIGUSR2
                    self.hub.decisions.reopen()
                elif op == "stop":
                    break
        except (ConnectionError, ValueError) as exc:
            # a supervisor that died before this front was ready resets the channel (the
            # "ready" line met a closed socket) rather than closing it
            log.warning("front %d: control channel broken: %s", self.index, exc)
        finally:
            self.stopping.set()  # asked to, or the supervisor is gone

    async def _reload(self, message: dict[str, Any]) -> None:
        try:
            config = from_dict(message["config"], Path(message["source"])
                               if message.get("source") else None)
            runtime = await Runtime.build(config, configure(config))
        except (ConfigError, Exception):
            log.exception("front %d: reload failed, keeping the running configuration",
                          self.index)
            return
        self.hub.swap(runtime)
        maillog.setup(config.server)
        log.info("front %d: configuration reloaded", self.index)

    async def _start(self, runtime: Runtime) -> Any:
        from relay.decisionlog import DecisionLog
        from relay.transaction import Hub

        config = runtime.config
        decisions = DecisionLog(config.state_file(config.server.decision_log))
        if self.kind == "milter":
            from relay.milter.server import MilterServer

            self.hub = Hub(runtime, decisions, gate=self.control)
            server = MilterServer(self.hub)
            await server.start(sock=self.sockets[0][2])
            return server
        from relay.smtp import start_listeners
        from relay.spool import Spool
        from relay.tls import server_context

        self.hub = Hub(runtime, decisions, Spool(config.spool_path), self.control.queued,
                       gate=self.control)
        return await start_listeners(self.hub, server_context(config), self.sockets)

    async def _stop(self, listening: Any) -> None:
        if self.kind == "milter":
            await listening.stop(grace=STOP_GRACE)
        else:
            for server in listening:
                server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(s.wait_closed() for s in listening)), STOP_GRACE)
        await self.hub.runtime.aclose()
        if self.hub.spool is not None:
            self.hub.spool.close()
        if self.hub.decisions is not None:
            self.hub.decisions.close()


def main(kind: str, sockets: list[tuple[str, str, socket.socket]], control: socket.socket,
         raw: dict[str, Any], source: str | None, index: int) -> None:
    """Entry point of a front process (started by relay.supervisor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    config = from_dict(raw, Path(source) if source else None)
    setup_logging(config.server.log_level, tag=f"front{index}")
    maillog.setup(config.server)
    run_loop(Front(kind, sockets, control, config, index).run())

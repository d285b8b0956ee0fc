"""Front processes of a daemon, watched over: started, answered, restarted, stopped.

The supervisor opens the listening sockets once (so a busy port is one clear error,
and a front that restarts takes over the same sockets), starts `workers` front
processes that share them, and answers their control messages: admission of new
clients (one `Anvil` for the whole relay) and the ids of messages they queued
(handed to the queue runner, the only one). A front that dies is restarted (its
connections are forgotten; mail it acknowledged is on disk already); a front that
stops answering pings (a stuck event loop) is killed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable
from typing import Any

from relay import front
from relay.anvil import Anvil
from relay.config import Config
from relay.metrics import FRONT_RESTARTS, process_gone

log = logging.getLogger("relay")

PING_EVERY = 10.0
STUCK_AFTER = 60.0  # no answer to pings for this long: the front's loop is stuck
READY_TIMEOUT = 120.0


class FrontProcess(front.Outbox):
    def __init__(self, index: int, process: Any, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.index, self.process = index, process
        self.reader = reader
        self.ready = asyncio.Event()
        self.last_heard = time.monotonic()


class Supervisor:
    def __init__(self, kind: str, config: Config,
                 sockets: list[list[tuple[str, str, socket.socket]]], anvil: Anvil,
                 on_queued: Callable[[str], None]) -> None:
        """`sockets[i]` are front i+1's listening sockets (kept here across its restarts)."""
        self.kind, self.config, self.sockets, self.count = kind, config, sockets, len(sockets)
        self.anvil = anvil
        self.on_queued = on_queued
        self.fronts: dict[int, FrontProcess] = {}
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._context = multiprocessing.get_context("spawn")

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(i) for i in range(1, self.count + 1)))
        self._keep(self._watch())

    def _keep(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=front.main, name=f"relay-front{index}",
            args=(self.kind, self.sockets[index - 1], theirs, self.config.raw,
                  str(self.config.source) if self.config.source else None, index))
        await asyncio.to_thread(process.start)
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        handle = FrontProcess(index, process, reader, writer)
        self.fronts[index] = handle
        self._keep(self._serve(handle))
        try:
            await asyncio.wait_for(handle.ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            log.error("front %d did not start within %.0fs", index, READY_TIMEOUT)
            process.kill()
            raise

    async def _serve(self, handle: FrontProcess) -> None:
        """A front's control messages until it goes away; then restart it."""
        try:
            while line := await handle.reader.readline():
                handle.last_heard = time.monotonic()
                message = json.loads(line)
                op = message.get("op")
                if op == "admit":
                    why = self.anvil.admit(handle.index, str(message.get("ip", "")))
                    handle.send({"op": "admitted", "seq": message["seq"], "why": why})
                elif op == "release":
                    self.anvil.release(handle.index, str(message.get("ip", "")))
                elif op == "queued":
                    self.on_queued(str(message["id"]))
                elif op == "ready":
                    handle.ready.set()
        except (ConnectionError, ValueError) as exc:
            log.warning("front %d: control channel broken: %s", handle.index, exc)
        finally:
            handle.writer.close()
            await self._gone(handle)

    async def _gone(self, handle: FrontProcess) -> None:
        await asyncio.to_thread(handle.process.join, 10)
        if handle.process.is_alive():
            handle.process.kill()
            await asyncio.to_thread(handle.process.join, 5)
        self.anvil.forget(handle.index)
        process_gone(handle.process.pid)
        if self.fronts.get(handle.index) is handle:
            del self.fronts[handle.index]
        if self.stopping:
            return
        FRONT_RESTARTS.inc()
        log.error("front %d exited (status %s): starting it again", handle.index,
                  handle.process.exitcode)
        for delay in (0.5, 1, 2, 5, 10, 30):
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                await self._spawn(handle.index)
                return
            except Exception:
                log.exception("front %d could not start", handle.index)

    async def _watch(self) -> None:
        """Ping the fronts; kill one whose event loop stopped answering."""
        while not self.stopping:
            await asyncio.sleep(PING_EVERY)
            now = time.monotonic()
            for handle in list(self.fronts.values()):
                if not handle.ready.is_set():
                    continue
                if now - handle.last_heard > STUCK_AFTER:
                    log.error("front %d has not answered for %.0fs: killing it",
                              handle.index, now - handle.last_heard)
                    handle.process.kill()
                else:
                    handle.send({"op": "ping"})

    def reload(self, config: Config) -> None:
        """Every front builds the new configuration (already validated here)."""
        self.config = config
        for handle in self.fronts.values():
            handle.send({"op": "reload", "config": config.raw,
                         "source": str(config.source) if config.source else None})

    def reopen_logs(self) -> None:
        """Every front opens the decision log by its name again (after logrotate)."""
        for handle in self.fronts.values():
            handle.send({"op": "reopen"})

    async def stop(self, grace: float = front.STOP_GRACE + 5) -> None:
        self.stopping = True
        handles = list(self.fronts.values())
        for handle in handles:
            handle.send({"op": "stop"})
        deadline = time.monotonic() + grace
        for handle in handles:
            await asyncio.to_thread(handle.process.join, max(0.1, deadline - time.monotonic()))
            if handle.process.is_alive():
                handle.process.kill()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sockets in self.sockets:
            for _, _, sock in sockets:
                sock.close()


def listening_sockets(binds: list[tuple[str, str, tuple[str, int]]], copies: int
                      ) -> list[list[tuple[str, str, socket.socket]]]:
    """For each of `copies` fronts, (name, kind, socket) per listener, bound and listening.

    Each front gets its own socket on each address (SO_REUSEPORT), so the kernel spreads
    new connections over the fronts evenly; a shared socket would let whichever front
    woke first take a whole burst. A plain bind first makes a port that something else
    holds one clear error (OSError naming the address), not a silent share."""
    out: list[list[tuple[str, str, socket.socket]]] = [[] for _ in range(copies)]
    try:
        for name, kind, (host, port) in binds:
            for family, type_, proto, _, address in socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
                with socket.socket(family, type_, proto) as probe:
                    _bind(probe, address, f"{host}:{port} ({name})", reuse_port=False)
                for sockets in out:
                    sock = socket.socket(family, type_, proto)
                    sockets.append((name, kind, sock))
                    _bind(sock, address, f"{host}:{port} ({name})", reuse_port=True)
                    sock.listen(1024)
                    sock.setblocking(False)
    except BaseException:
        for sockets in out:
            for _, _, sock in sockets:
                sock.close()
        raise
    return out


def _bind(sock: socket.socket, address: object, what: str, reuse_port: bool) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {what}: {exc.strerror}") from None

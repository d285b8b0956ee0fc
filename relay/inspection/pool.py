"""A supervised pool of inspection workers with a budget per message.

`workers` processes are kept ready; when all are busy, more are started up to
`max_workers`, so that a few slow (or hostile) messages never make the others
wait for a worker; extras that stay idle go away again. A message that runs over
`timeout` has its worker killed (SIGKILL: whatever it was doing, it stops) and
replaced; a worker that dies answers `inspection.crashed` (451). Workers are
forked from multiprocessing's fork server, which imported the engine and the
policies once, so starting one costs a fork and building an engine, not an
interpreter start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import socket
import time
from typing import Any

from relay.body import Body
from relay.config import Config
from relay.engine import Verdict
from relay.inspection import worker
from relay.inspection.inline import over_budget
from relay.inspection.wire import (
    PREFIX,
    WireError,
    apply_verdict,
    decode_header,
    envelope,
    frame,
    lengths,
)
from relay.metrics import INSPECTION_KILLS, INSPECTION_WORKERS, process_gone
from relay.model import Transaction

log = logging.getLogger("relay.inspection")

# a message this large costs a worker a multiple of its size to parse: at most `workers`
# of them are inspected at once, so memory stays flat in the number of large messages
LARGE = 4 * 1024 * 1024
IDLE_EXTRA = 30.0  # seconds an extra worker may stay idle before it is stopped
START_TIMEOUT = 60.0

_context: Any = None


def context() -> Any:
    """The fork server, started once per process with the engine and policies loaded."""
    global _context
    if _context is None:
        from relay.policyset import SHIPPED

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["relay.inspection.worker"] + [
            f"policies.{p.stem}" for p in sorted(SHIPPED.glob("*.py"))
            if not p.stem.startswith("_")])
        _context = ctx
    return _context


class WorkerDied(Exception):
    pass


class Worker:
    """One worker process and the front's end of its socket."""

    def __init__(self, process: Any, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, max_payload: int) -> None:
        self.process = process
        self.reader, self.writer = reader, writer
        self.max_payload = max_payload
        self.idle_since = time.monotonic()

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def read(self) -> tuple[dict[str, Any], bytes]:
        try:
            head_len, payload_len = lengths(await self.reader.readexactly(PREFIX),
                                            self.max_payload)
            header = decode_header(await self.reader.readexactly(head_len))
            payload = await self.reader.readexactly(payload_len)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerDied(f"worker {self.pid} closed its socket") from exc
        return header, payload

    async def call(self, header: dict[str, Any], payload: bytes
                   ) -> tuple[dict[str, Any], bytes]:
        self.writer.writelines(frame(header, payload))
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise WorkerDied(f"worker {self.pid}: {exc}") from exc
        return await self.read()

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    async def stop(self, kill: bool = False) -> None:
        self.writer.close()  # the worker exits at the end of its socket
        if kill and self.process.is_alive():
            self.process.kill()
        await asyncio.to_thread(self.process.join, 5)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)
        process_gone(self.pid)
        with contextlib.suppress(ValueError):
            self.process.close()


class WorkerPool:
    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.inspection
        self.size = settings.workers or os.cpu_count() or 1
        self.max = max(self.size, settings.max_workers or 4 * self.size)
        self.timeout = settings.timeout
        self._idle: list[Worker] = []
        self._count = 0  # started or starting
        self._waiters: collections.deque[asyncio.Future[Worker]] = collections.deque()
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._large = asyncio.Semaphore(self.size)

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        started = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        self._idle.extend(started)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())
        log.info("inspection: %d workers ready (up to %d), %.0fs and %d MiB per message",
                 self.size, self.max, self.timeout, self.config.inspection.max_memory >> 20)

    async def aclose(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(w.stop() for w in idle), return_exceptions=True)

    async def _spawn(self) -> Worker:
        self._count += 1
        INSPECTION_WORKERS.inc()
        try:
            return await asyncio.wait_for(self._start_one(), START_TIMEOUT)
        except BaseException:
            self._count -= 1
            INSPECTION_WORKERS.dec()
            raise

    async def _start_one(self) -> Worker:
        ours, theirs = socket.socketpair()
        source = str(self.config.source) if self.config.source else None
        process = context().Process(target=worker.main, args=(theirs, self.config.raw, source),
                                    daemon=True, name="relay-inspection")
        try:
            await asyncio.to_thread(process.start)
        finally:
            theirs.close()
        max_payload = self.config.server.max_message_size + 1024 * 1024
        reader, writer = await asyncio.open_connection(sock=ours, limit=1024 * 1024)
        new = Worker(process, reader, writer, max_payload)
        try:
            header, _ = await new.read()
        except WorkerDied:
            await new.stop(kill=True)
            raise
        if "ready" not in header:
            await new.stop(kill=True)
            raise WorkerDied("worker did not say it was ready")
        return new

    async def _retire(self, w: Worker, kill: bool = False) -> None:
        self._count -= 1
        INSPECTION_WORKERS.dec()
        await w.stop(kill=kill)
        if not self._closed and self._count < self.size:
            self._in_background(self._replace())

    async def _replace(self) -> None:
        try:
            self._release(await self._spawn())
        except Exception:
            log.exception("inspection: could not start a worker")

    def _in_background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap(self) -> None:
        """Stop extra workers that stayed idle; replace workers that died idle."""
        while True:
            await asyncio.sleep(IDLE_EXTRA / 3)
            now = time.monotonic()
            for w in list(self._idle):
                dead = not w.alive()
                extra = self._count > self.size and now - w.idle_since > IDLE_EXTRA
                if dead or extra:
                    self._idle.remove(w)
                    self._in_background(self._retire(w, kill=dead))

    # --- handing workers out --------------------------------------------------------
    async def _acquire(self) -> Worker:
        while self._idle:
            w = self._idle.pop()
            if w.alive():
                break
            self._in_background(self._retire(w, kill=True))
        else:
            if self._count < self.max:
                w = await self._spawn()
            else:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    w = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        self._release(waiter.result())
                    raise
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
        if not self._idle and self._count < self.max and not self._closed:
            # the next message should not wait for a fork: keep one spare ready
            self._in_background(self._replace())
        return w

    def _release(self, w: Worker) -> None:
        if self._closed:
            self._in_background(self._retire(w))
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(w)
                return
        w.idle_since = time.monotonic()
        self._idle.append(w)

    # --- the one thing it does -------------------------------------------------------
    async def inspect(self, tx: Transaction, body: Body) -> Verdict:
        if body.size > LARGE:
            async with self._large:
                return await self._inspect(tx, body)
        return await self._inspect(tx, body)

    async def _inspect(self, tx: Transaction, body: Body) -> Verdict:
        request: dict[str, Any] = {"tx": envelope(tx)}
        if body.path is not None:
            request["path"] = str(body.path)  # large: the worker reads the spooled file
        w = await self._acquire()
        try:
            async with asyncio.timeout(self.timeout):
                header, payload = await w.call(request, b"" if body.path else body.read())
        except TimeoutError:
            INSPECTION_KILLS.labels("timeout").inc()
            log.warning("inspection of %s took over %.0fs: worker %d killed", tx.queue_id,
                        self.timeout, w.pid)
            self._in_background(self._retire(w, kill=True))
            return over_budget(self.config, tx, "inspection.timeout", body,
                               f"over {self.timeout:.0f}s")
        except WorkerDied as exc:
            return await self._died(w, tx, body, str(exc))
        except BaseException:  # cancelled mid-request: its answer would reach the next one
            self._in_background(self._retire(w, kill=True))
            raise
        try:
            verdict = apply_verdict(tx, header, payload)
        except WireError as exc:
            return await self._died(w, tx, body, str(exc))
        if header.get("recycle"):
            self._in_background(self._retire(w))
        else:
            self._release(w)
        return verdict

    async def _died(self, w: Worker, tx: Transaction, body: Body, why: str) -> Verdict:
        await asyncio.to_thread(w.process.join, 2)
        code = w.process.exitcode
        INSPECTION_KILLS.labels("crashed").inc()
        log.error("inspection worker %d died on %s (exit %s): %s", w.pid, tx.queue_id, code, why)
        self._in_background(self._retire(w, kill=True))
        return over_budget(self.config, tx, "inspection.crashed", body, f"exit {code}")

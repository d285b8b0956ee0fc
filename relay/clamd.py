"""A small asyncio client for clamd's INSTREAM command (Unix or TCP socket).

Why our own and not the `clamd` PyPI package: that package is synchronous
(blocking sockets, last release 2014), so every scan would need a thread, and
its timeouts are socket timeouts per call rather than one deadline per scan.
The protocol is a few lines (clamd(8): `zINSTREAM\\0`, then chunks each
prefixed by a 4-byte big-endian length, then a zero length; the reply ends in
NUL), so a native asyncio client keeps the event loop free, cancels cleanly
and puts the whole scan under one `asyncio.timeout`.

Every failure becomes a `ScanResult` with status `error`: a scan that did not
finish is never reported as clean.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from typing import Literal

from relay.metrics import CLAMD_SECONDS

CHUNK = 64 * 1024
MAX_REPLY = 4096


@dataclass(frozen=True)
class ScanResult:
    status: Literal["clean", "infected", "error"]
    signature: str | None = None  # set when infected
    error: str | None = None  # set when status is error
    seconds: float = 0.0


def parse_address(address: str) -> tuple[str, int] | str:
    """A Unix socket path (`/run/clamav/clamd.ctl`, `unix:/…`) or (host, port) from HOST:PORT."""
    address = address.strip()
    if address.startswith("unix:"):
        return address[5:]
    if address.startswith("/"):
        return address
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected a socket path or HOST:PORT, got {address!r}")
    return host, int(port)


def parse_reply(reply: str) -> ScanResult:
    """clamd's answer to one INSTREAM: `stream: OK`, `stream: NAME FOUND`, `… ERROR`."""
    text = reply.strip("\0").strip()
    if text.endswith(" FOUND"):
        name = text.removesuffix(" FOUND").removeprefix("stream:").strip()
        return ScanResult("infected", signature=name or "unknown")
    if text == "stream: OK":
        return ScanResult("clean")
    # `… ERROR`, an empty answer, or anything we do not understand: not clean
    return ScanResult("error", error=text or "empty reply from clamd")


class ClamdClient:
    def __init__(self, address: str, timeout: float = 30.0, retries: int = 1,
                 retry_delay: float = 0.5) -> None:
        self.address = parse_address(address)
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        a = self.address
        where = a if isinstance(a, str) else f"{a[0]}:{a[1]}"
        return f"ClamdClient({where!r})"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.address, str):
            return await asyncio.open_unix_connection(self.address)
        return await asyncio.open_connection(*self.address)

    async def _connect_retrying(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # clamd refuses connections for a moment while it (re)starts; one short retry
        # covers that without holding an SMTP client for long.
        for attempt in range(self.retries + 1):
            try:
                return await self._connect()
            except OSError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self.retry_delay)
        raise AssertionError("unreachable")

    async def instream(self, data: bytes) -> ScanResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._instream(data)
        except TimeoutError:
            result = ScanResult("error", error=f"clamd did not answer within {self.timeout:g}s")
        except OSError as exc:
            result = ScanResult("error", error=f"clamd unreachable at {self!r}: {exc}")
        elapsed = time.monotonic() - started
        CLAMD_SECONDS.labels(result.status).observe(elapsed)
        return ScanResult(result.status, result.signature, result.error, elapsed)

    async def _instream(self, data: bytes) -> ScanResult:
        reader, writer = await self._connect_retrying()
        try:
            try:
                writer.write(b"zINSTREAM\0")
                view = memoryview(data)
                for start in range(0, len(view), CHUNK):
                    chunk = view[start:start + CHUNK]
                    writer.write(struct.pack("!L", len(chunk)))
                    writer.write(chunk)
                    await writer.drain()
                writer.write(struct.pack("!L", 0))
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                # clamd hangs up mid-stream when StreamMaxLength is exceeded; its reason
                # is usually already waiting in the socket
                pass
            reply = await reader.readuntil(b"\0")
        except asyncio.IncompleteReadError as exc:
            reply = exc.partial
        except asyncio.LimitOverrunError:
            return ScanResult("error", error="clamd reply too long")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        return parse_reply(reply[:MAX_REPLY].decode("utf-8", "replace"))

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect()
                try:
                    writer.write(b"zPING\0")
                    await writer.drain()
                    return await reader.readuntil(b"\0") == b"PONG\0"
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return False

"""Delivery to the backend mail store (Maildir, SMTP, LMTP) and to the outbound relayhost.

Each backend returns a result per recipient: delivered, temporary or permanent
failure, with the remote reply, so the queue runner can retry or bounce.
Line endings are normalised to CRLF and bare CR/LF are never forwarded (SMTP
smuggling: the stock Postfix on Debian 12 still accepts bare LF).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from relay.address import mailbox_name
from relay.config import Config
from relay.durable import fsync_dir, write_durably
from relay.files import private_dir
from relay.mailauth.signing import Signer, SigningError
from relay.metrics import DELIVERY_SECONDS, worst
from relay.spool import QueueEnvelope

log = logging.getLogger(__name__)

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def crlf(data: bytes) -> bytes:
    data = _LINE_ENDINGS.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


@dataclass(frozen=True)
class Result:
    status: str  # delivered | temporary | permanent
    reply: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "delivered"


def result_for_code(code: int, text: str) -> Result:
    reply = f"{code} {text}".strip()
    if 200 <= code < 300:
        return Result("delivered", reply)
    return Result("permanent" if 500 <= code < 600 else "temporary", reply)


class Backend(Protocol):
    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        ...

    async def close(self) -> None:
        ...


class MaildirBackend:
    """path/<address>/{tmp,new,cur}: write to tmp, fsync, rename into new, fsync new."""

    def __init__(self, root: Path, hostname: str) -> None:
        self.root = root
        self.hostname = hostname.replace("/", "_").replace(":", "_")
        self._seq = 0

    def _unique(self) -> str:
        self._seq += 1
        now = time.time()
        return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{self._seq}.{self.hostname}"

    def _deliver_one(self, rcpt: str, data: list[bytes]) -> Result:
        folder = self.root / mailbox_folder(rcpt)
        for sub in ("tmp", "new", "cur"):
            private_dir(folder / sub, 0o700)
        name = self._unique()
        tmp = folder / "tmp" / name
        write_durably(tmp, data)
        os.rename(tmp, folder / "new" / name)
        fsync_dir(folder / "new")
        return Result("delivered", f"250 2.0.0 maildir {folder.name}/new/{name}")

    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        results = {}
        for rcpt in recipients:
            if mailbox_name(rcpt) is None:  # the engine refuses these at RCPT since issue 10
                results[rcpt] = Result("permanent", "553 5.1.3 not a valid mailbox name")
                continue
            headers = (f"Return-Path: <{env.sender}>\r\nDelivered-To: {rcpt}\r\n").encode()
            try:
                # written as two pieces: a large message is not copied to add two lines
                results[rcpt] = await asyncio.to_thread(self._deliver_one, rcpt,
                                                        [headers, data])
            except Exception as exc:  # one recipient's failure keeps the others' results
                if not isinstance(exc, OSError):
                    log.exception("queue %s: maildir delivery to %r", env.queue_id, rcpt)
                results[rcpt] = Result("temporary", f"451 4.3.0 maildir write failed: {exc}")
        return results

    async def close(self) -> None:
        pass


def mailbox_folder(address: str) -> str:
    """The Maildir folder name of an address: lowercased, no path tricks."""
    name = mailbox_name(address)
    if name is None:
        raise ValueError(f"unsafe mailbox name {address!r}")
    return name


class SmtpBackend:
    """SMTP via aiosmtplib, keeping up to `max_connections` sessions open for reuse."""

    def __init__(self, host: str, port: int, hostname: str, timeout: float,
                 max_connections: int, starttls: str = "none", ca_file: str = "") -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.timeout = timeout
        self.starttls = starttls
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(max_connections)
        # built once: loading the CA store takes ~20 ms and would stall the event loop
        self._tls_context = ssl.create_default_context(cafile=ca_file or None)
        if starttls != "required":
            # opportunistic TLS protects against passive reading only; do not fail on names
            self._tls_context.check_hostname = False
            self._tls_context.verify_mode = ssl.CERT_NONE

    async def _connect(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client  # idle clients ended their last transaction cleanly
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            local_hostname=self.hostname, start_tls=False, tls_context=self._tls_context,
        )
        await client.connect()
        await client.ehlo()
        if self.starttls != "none" and client.supports_extension("starttls"):
            await client.starttls()
            await client.ehlo()
        elif self.starttls == "required":
            client.close()
            raise aiosmtplib.SMTPException("STARTTLS required but not offered")
        return client

    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        async with self._slots:
            try:
                client = await self._connect()
            except Exception as exc:  # every failure is a per-recipient result
                return {r: Result("temporary", f"connect to {self.host}:{self.port}: {exc}")
                        for r in recipients}
            try:
                results = await self._transaction(client, env, data, recipients)
            except Exception as exc:  # every failure is a per-recipient result
                client.close()
                return {r: Result("temporary", f"{self.host}:{self.port}: {exc}")
                        for r in recipients}
            if client.is_connected:
                self._idle.append(client)
            return results

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """After a refused MAIL or all-refused RCPTs the session needs RSET before reuse."""
        try:
            await client.rset()
        except aiosmtplib.SMTPException:
            client.close()

    async def _transaction(self, client: aiosmtplib.SMTP, env: QueueEnvelope, data: bytes,
                           recipients: list[str]) -> dict[str, Result]:
        results: dict[str, Result] = {}
        options = []
        encoding = "ascii"
        if not _is_ascii(env.sender, recipients):
            if not client.supports_extension("smtputf8"):
                # RFC 6531 3.2: never downgrade; refused for good rather than retried
                refused = Result("permanent", "553 5.6.7 next server has no SMTPUTF8 for a "
                                              "UTF-8 address")
                if not env.sender.isascii():
                    return {r: refused for r in recipients}
                results = {r: refused for r in recipients if not r.isascii()}
                recipients = [r for r in recipients if r.isascii()]
                if not recipients:
                    return results
            else:
                options.append("SMTPUTF8")
                encoding = "utf-8"  # aiosmtplib sends commands in ASCII unless told
        if client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        try:
            await client.mail(env.sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client)
            results.update({r: result_for_code(exc.code, exc.message) for r in recipients})
            return results
        accepted = []
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
                accepted.append(rcpt)
            except aiosmtplib.SMTPResponseException as exc:
                results[rcpt] = result_for_code(exc.code, exc.message)
        if not accepted:
            await self._reset(client)
            return results
        try:
            response = await client.data(data)  # aiosmtplib makes line ends CRLF itself
            final = result_for_code(response.code, response.message)
        except aiosmtplib.SMTPResponseException as exc:
            final = result_for_code(exc.code, exc.message)
        for rcpt in accepted:
            results[rcpt] = final
        return results

    async def close(self) -> None:
        for client in self._idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        self._idle.clear()


def _is_ascii(sender: str, recipients: list[str]) -> bool:
    return all(a.isascii() for a in (sender, *recipients))


class LmtpBackend:
    """LMTP (RFC 2033): one reply per recipient after DATA, which aiosmtplib does not read,
    so this is a small client of its own on asyncio streams."""

    def __init__(self, host: str, port: int, hostname: str, timeout: float) -> None:
        self.host, self.port, self.hostname, self.timeout = host, port, hostname, timeout
        self._lock = asyncio.Lock()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _reply(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        lines = []
        while True:
            line = await asyncio.wait_for(reader.readline(), self.timeout)
            if not line:
                raise ConnectionError("LMTP server closed the connection")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), " ".join(lines)

    async def _command(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                       line: str) -> tuple[int, str]:
        reader, writer = conn
        if any(c in line for c in "\r\n\0"):
            raise ValueError("control character in LMTP command")
        writer.write(line.encode("utf-8") + b"\r\n")
        await writer.drain()
        return await self._reply(reader)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._conn is not None:
            try:
                code, _ = await self._command(self._conn, "RSET")
                if code == 250:
                    return self._conn
            except (TimeoutError, OSError, ConnectionError):
                pass
            self._conn[1].close()
            self._conn = None
        if self.host.startswith("/"):
            conn = await asyncio.wait_for(asyncio.open_unix_connection(self.host), self.timeout)
        else:
            conn = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout)
        code, text = await self._reply(conn[0])
        if code != 220:
            raise ConnectionError(f"LMTP greeting {code} {text}")
        code, text = await self._command(conn, f"LHLO {self.hostname}")
        if code != 250:
            raise ConnectionError(f"LHLO refused: {code} {text}")
        self._conn = conn
        return conn

    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        async with self._lock:
            try:
                await self._deliver(env, data, recipients, results)
            except Exception as exc:  # every failure is a per-recipient result
                if self._conn is not None:
                    self._conn[1].close()
                    self._conn = None
                where = self.host if self.host.startswith("/") else f"{self.host}:{self.port}"
                # recipients answered before the break keep their result: no double delivery
                for r in recipients:
                    results.setdefault(r, Result("temporary", f"LMTP {where}: {exc}"))
        return results

    async def _deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str],
                       results: dict[str, Result]) -> None:
        conn = await self._open()
        code, text = await self._command(conn, f"MAIL FROM:<{env.sender}>")
        if code != 250:
            results.update({r: result_for_code(code, text) for r in recipients})
            return
        accepted = []
        for rcpt in recipients:
            code, text = await self._command(conn, f"RCPT TO:<{rcpt}>")
            if code == 250:
                accepted.append(rcpt)
            else:
                results[rcpt] = result_for_code(code, text)
        if not accepted:
            return
        code, text = await self._command(conn, "DATA")
        if code != 354:
            results.update({r: result_for_code(code, text) for r in accepted})
            return
        reader, writer = conn
        writer.write(_LEADING_DOT.sub(b"..", crlf(data)) + b".\r\n")
        await writer.drain()
        for rcpt in accepted:  # RFC 2033 4.2: one reply per accepted recipient, in order
            code, text = await self._reply(reader)
            results[rcpt] = result_for_code(code, text)

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await self._command(self._conn, "QUIT")
            except (TimeoutError, OSError, ConnectionError):
                pass
            self._conn[1].close()
            self._conn = None


async def guarded(backend: Backend, env: QueueEnvelope, data: bytes, recipients: list[str]
                  ) -> dict[str, Result]:
    """backend.deliver() that cannot raise and answers for every recipient it was given.

    A backend bug (an exception it did not expect) is a temporary failure of the
    recipients it had not answered for: retried with backoff, bounced when the queue
    lifetime ends; never a retry loop that saves no state."""
    try:
        results = await backend.deliver(env, data, recipients)
    except Exception as exc:
        log.exception("queue %s: %s failed", env.queue_id, type(backend).__name__)
        results = {}
        reason = f"451 4.3.0 internal error in delivery: {type(exc).__name__}"
    else:
        reason = "451 4.3.0 no result from the delivery backend"
    wanted = set(recipients)
    out = {r: result for r, result in results.items() if r in wanted}
    for rcpt in recipients:
        out.setdefault(rcpt, Result("temporary", reason))
    return out


class Router:
    """Local recipients go to the backend, others to the relayhost."""

    def __init__(self, config: Config) -> None:
        self.config = config
        b = config.backend
        hostname = config.server.hostname
        self.local: Backend
        if b.kind == "maildir":
            self.local = MaildirBackend(config.state_file(b.path), hostname)
        elif b.kind == "smtp":
            self.local = SmtpBackend(b.host, b.port, hostname, b.timeout, b.max_connections)
        else:
            self.local = LmtpBackend(b.host, b.port, hostname, b.timeout)
        self.signer = Signer(config)  # [dkim_signing]: outbound mail of our domains
        out = config.outbound
        self.outbound: Backend | None = None
        if out.relayhost is not None:
            self.outbound = SmtpBackend(out.relayhost[0], out.relayhost[1], hostname,
                                        out.timeout, 4, out.starttls,
                                        str(config.state_file(out.ca_file)) if out.ca_file
                                        else "")

    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        """A result for every recipient, whatever a backend does (issue 10, item 1)."""
        local = [r for r in recipients if self.config.is_local(r)]
        remote = [r for r in recipients if not self.config.is_local(r)]
        results: dict[str, Result] = {}
        if local:
            results.update(await self._timed(self.local, self.config.backend.kind, env, data,
                                             local))
        if remote:
            if self.outbound is None:
                results.update({r: Result("temporary", "no route: outbound.relayhost is not set")
                                for r in remote})
            else:
                results.update(await self._outbound(env, data, remote))
        return results

    async def _outbound(self, env: QueueEnvelope, data: bytes, remote: list[str]
                        ) -> dict[str, Result]:
        """To the relayhost, DKIM-signed where it is ours to sign (after every change the
        relay made, so the signature survives); a key that cannot be read defers."""
        assert self.outbound is not None
        try:
            if self.signer.settings.enabled:  # no thread hop per message when it is off
                data = await asyncio.to_thread(self.signer.sign, data,
                                               env.auth_login is not None, env.client_ip)
        except SigningError as exc:
            log.error("queue %s: %s", env.queue_id, exc)
            return {r: Result("temporary", f"451 4.3.0 {exc}") for r in remote}
        return await self._timed(self.outbound, "relayhost", env, data, remote)

    async def _timed(self, backend: Backend, route: str, env: QueueEnvelope, data: bytes,
                     recipients: list[str]) -> dict[str, Result]:
        started = time.monotonic()
        results = await guarded(backend, env, data, recipients)
        DELIVERY_SECONDS.labels(route, worst([r.status for r in results.values()])).observe(
            time.monotonic() - started)
        return results

    def describe(self, recipient: str) -> tuple[str, str]:
        """(transport, relay) of RECIPIENT for the mail log: ("lmtp",
        "127.0.0.1[127.0.0.1]:24"), ("local", "maildir"), ("smtp", ...)."""
        if self.config.is_local(recipient):
            b = self.config.backend
            if b.kind == "maildir":
                return "local", "maildir"
            where = b.host if b.host.startswith("/") else f"{b.host}[{b.host}]:{b.port}"
            return b.kind, where
        relayhost = self.config.outbound.relayhost
        if relayhost is None:
            return "smtp", "none"
        return "smtp", f"{relayhost[0]}[{relayhost[0]}]:{relayhost[1]}"

    async def close(self) -> None:
        await self.local.close()
        if self.outbound is not None:
            await self.outbound.close()

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
from relay.metrics import DELIVERY_SECONDS, batched_histogram, worst
from relay.spool import QueueEnvelope

log = logging.getLogger(__name__)

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def crlf(data: bytes) -> bytes:
    """Every line ending CRLF, the last line ended. What the spool holds already is
    (relay.smtpdata normalises): counting is C-fast, a substitution at each line was an
    eighth of the queue runner's CPU."""
    lines = data.count(b"\r\n")
    if data.count(b"\r") != lines or data.count(b"\n") != lines:
        data = _LINE_ENDINGS.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def dot_stuffed(data: bytes) -> bytes:
    """RFC 5321 4.5.2: a line that begins with a dot gets a second one (few do)."""
    if data.startswith(b".") or b"\n." in data:
        return _LEADING_DOT.sub(b"..", data)
    return data


@dataclass(frozen=True)
class Result:
    status: str  # delivered | temporary | permanent
    reply: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "delivered"


def result_for_code(code: int, text: str) -> Result:
    reply = f"{code} {text}".replace("\n", " ").strip()  # a reply of several lines: one
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
        utf8, results, recipients = utf8_plan(env.sender, recipients,
                                              client.supports_extension("smtputf8"))
        if not recipients:
            return results
        options = ["SMTPUTF8"] if utf8 else []
        # aiosmtplib sends commands in ASCII unless told
        encoding = "utf-8" if utf8 else "ascii"
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


class StreamBackend:
    """The backend mail store over SMTP or LMTP (RFC 2033), on asyncio streams, keeping up
    to `max_connections` sessions open for reuse.

    With PIPELINING (RFC 2920, which Postfix, Dovecot and most stores offer) MAIL, every
    RCPT and DATA go in one write and the message with its final dot in another: two
    round trips a message, where a client in lockstep (aiosmtplib, the relayhost's
    client) needs four and more; on this path that was most of the queue runner's CPU.
    LMTP answers once per accepted recipient after the message, which aiosmtplib does
    not read either."""

    def __init__(self, host: str, port: int, hostname: str, timeout: float,
                 max_connections: int, lmtp: bool) -> None:
        self.host, self.port, self.hostname, self.timeout = host, port, hostname, timeout
        self.lmtp = lmtp
        self._idle: list[_Session] = []
        self._slots = asyncio.Semaphore(max_connections)

    @property
    def _where(self) -> str:
        name = "LMTP" if self.lmtp else "SMTP"
        return f"{name} {self.host}" if self.host.startswith("/") else \
            f"{name} {self.host}:{self.port}"

    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        async with self._slots:
            session = self._idle.pop() if self._idle else None
            try:
                if session is not None:
                    try:
                        reuse = await self._transaction(session, env, data, recipients, results)
                    except _Closed:  # the server ended the idle session: nothing was taken
                        session.close()
                        session = None
                if session is None:
                    session = await self._open()
                    reuse = await self._transaction(session, env, data, recipients, results)
            except Exception as exc:  # every failure is a per-recipient result
                if session is not None:
                    session.close()
                # recipients answered before the break keep their result: no double delivery
                for r in recipients:
                    results.setdefault(r, Result("temporary", f"{self._where}: {exc}"))
                return results
            if reuse:
                self._idle.append(session)
            else:
                session.close()
        return results

    async def _open(self) -> _Session:
        async with asyncio.timeout(self.timeout):
            if self.host.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(self.host)
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            session = _Session(reader, writer)
            try:
                code, text = await session.reply()
                if code != 220:
                    raise ConnectionError(f"greeting {code} {text}")
                session.send([f"{'LHLO' if self.lmtp else 'EHLO'} {self.hostname}"])
                code, text = await session.reply()
                if code != 250:
                    raise ConnectionError(f"{'LHLO' if self.lmtp else 'EHLO'} refused: "
                                          f"{code} {text}")
            except BaseException:
                session.close()
                raise
        session.extensions = {line.split(" ", 1)[0].upper() for line in text.split("\n")[1:]}
        return session

    async def _transaction(self, session: _Session, env: QueueEnvelope, data: bytes,
                           recipients: list[str], results: dict[str, Result]) -> bool:
        """One message on an open session; True when the session can carry another."""
        utf8, refused, recipients = utf8_plan(env.sender, recipients,
                                              "SMTPUTF8" in session.extensions)
        results.update(refused)
        if not recipients:
            return True
        options = (" SMTPUTF8" if utf8 else "") + \
            (" BODY=8BITMIME" if "8BITMIME" in session.extensions else "")
        commands = [f"MAIL FROM:<{env.sender}>{options}",
                    *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
        async with asyncio.timeout(self.timeout):
            replies = await session.exchange(commands, "PIPELINING" in session.extensions)
        mail, data_reply = replies[0], replies[-1] if len(replies) == len(commands) else None
        if mail[0] != 250:
            results.update({r: result_for_code(*mail) for r in recipients})
            return False
        accepted = []
        for rcpt, (code, text) in zip(recipients, replies[1:1 + len(recipients)],
                                      strict=False):
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                results[rcpt] = result_for_code(code, text)
        if not accepted or data_reply is None or data_reply[0] != 354:
            if accepted and data_reply is not None:
                results.update({r: result_for_code(*data_reply) for r in accepted})
            return False  # the session is mid-transaction (or was told DATA with no one)
        async with asyncio.timeout(self.timeout):
            session.writer.write(dot_stuffed(crlf(data)) + b".\r\n")
            await session.writer.drain()
            if self.lmtp:  # RFC 2033 4.2: one reply per accepted recipient, in order
                for rcpt in accepted:
                    results[rcpt] = result_for_code(*await session.reply())
            else:
                final = result_for_code(*await session.reply())
                results.update(dict.fromkeys(accepted, final))
        return True

    async def close(self) -> None:
        for session in self._idle:
            try:
                async with asyncio.timeout(5):
                    session.send(["QUIT"])
                    await session.reply()
            except (TimeoutError, OSError, ConnectionError, ValueError):
                pass
            session.close()
        self._idle.clear()


MAX_REPLY_LINES = 100  # a reply of more is a broken (or hostile) server, not a long one


class _Closed(ConnectionError):
    """The server closed the session before it answered anything of this message."""


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.extensions: set[str] = set()
        self.answered = 0  # replies read so far: none means a closed session took nothing

    def send(self, commands: list[str]) -> None:
        for line in commands:
            if any(c in line for c in "\r\n\0"):
                raise ValueError("control character in a command")
        self.writer.write("".join(f"{line}\r\n" for line in commands).encode("utf-8"))

    async def exchange(self, commands: list[str], pipelined: bool) -> list[tuple[int, str]]:
        """Each command's reply. Pipelined: all sent at once, all answered. In lockstep:
        one at a time, stopping after a refused MAIL or, before DATA, when no recipient
        was accepted (the last reply is then not DATA's)."""
        self.answered = 0
        if pipelined:
            self.send(commands)
            return [await self.reply() for _ in commands]
        replies = []
        for i, command in enumerate(commands):
            if i == len(commands) - 1 and not any(c in (250, 251) for c, _ in replies[1:]):
                break
            self.send([command])
            replies.append(await self.reply())
            if i == 0 and replies[0][0] != 250:
                break
        return replies

    async def reply(self) -> tuple[int, str]:
        """One reply, its lines joined by newlines (EHLO's list their extensions). A
        server's lines are bounded like a client's: each by the reader's limit (64 KiB),
        their number by MAX_REPLY_LINES."""
        lines: list[str] = []
        while True:
            if len(lines) >= MAX_REPLY_LINES:
                raise ConnectionError(f"a reply of more than {MAX_REPLY_LINES} lines")
            try:
                line = await self.reader.readline()
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
                line, reset = b"", exc  # the pipelined write met a closed session
            else:
                reset = None
            if not line:
                raise (_Closed if not self.answered and not lines else ConnectionError)(
                    "the server closed the connection") from reset
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if len(text) < 3 or not text[:3].isdigit():
                raise ConnectionError(f"not an SMTP reply: {text[:80]!r}")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                self.answered += 1
                return int(text[:3]), "\n".join(lines) if len(lines) > 1 else lines[0]

    def close(self) -> None:
        self.writer.close()


def utf8_plan(sender: str, recipients: list[str], offered: bool
              ) -> tuple[bool, dict[str, Result], list[str]]:
    """RFC 6531 3.2, never downgrade: (send SMTPUTF8, recipients refused for good, the
    recipients still to send to) for a server that offers SMTPUTF8 or not."""
    if _is_ascii(sender, recipients):
        return False, {}, recipients
    if offered:
        return True, {}, recipients
    refused = Result("permanent", "553 5.6.7 next server has no SMTPUTF8 for a UTF-8 address")
    if not sender.isascii():
        return False, dict.fromkeys(recipients, refused), []
    return False, {r: refused for r in recipients if not r.isascii()}, \
        [r for r in recipients if r.isascii()]


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
        else:
            self.local = StreamBackend(b.host, b.port, hostname, b.timeout, b.max_connections,
                                       lmtp=b.kind == "lmtp")
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
        batched_histogram(DELIVERY_SECONDS, route, worst([r.status for r in results.values()])
                          ).observe(time.monotonic() - started)
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

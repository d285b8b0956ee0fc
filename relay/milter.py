"""Milter front: the same engine inside an existing Postfix (`smtpd_milters`).

Postfix opens one milter connection per SMTP session and reports each command;
we answer each with continue or with our bilingual reply (SMFIR_REPLYCODE), and
at end of message with the header and body edits that `tag` and `convert` made.

Milter protocol version 6 with option negotiation. `kilter.protocol` is the
codec for packet contents (message classes, packing); the rest is ours, for
reasons found reading and trying it against Postfix 3.7:

- framing: a packet length is checked (1..MAX_PACKET) before its bytes are read,
  so a bogus length neither stalls a session nor grows a buffer (kilter's
  `Message.unpack` mis-frames a zero length);
- Connect and Macro are decoded here: kilter decodes the client hostname as IDNA
  and macro values as ASCII and raises on anything else (a PTR name such as
  `xn--abc.example`, a UTF-8 SASL login), which would refuse real clients;
- the session is a plain loop with one answer per event: kilter's
  `FilterProtocol` table has no SMFIC_QUIT_NC and forbids answers Postfix takes.

Anything that does not decode closes that connection (Postfix then applies
`milter_default_action`); the server keeps serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import os
import signal
import stat
import struct
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from kilter.protocol import (
    Abort,
    ActionFlags,
    AddHeader,
    Body,
    ChangeHeader,
    Close,
    Connect,
    Continue,
    Data,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    InsufficientSpace,
    Macro,
    Message,
    Negotiate,
    Progress,
    ProtocolFlags,
    ReplaceBody,
    ReplyCode,
    Stage,
    Unknown,
)
from kilter.protocol.buffer import SimpleBuffer

from relay import metrics
from relay import services as services_mod
from relay.config import Config, ConfigError, load
from relay.decisionlog import DecisionLog, record
from relay.engine import BAD_RECIPIENT, BAD_SENDER, POLICY_ERROR, Engine, Verdict, bilingual
from relay.message import split_header
from relay.model import Reply, Transaction

log = logging.getLogger(__name__)

T = TypeVar("T")

PROTOCOL_VERSION = 6
MAX_PACKET = 1 << 20  # Postfix sends body chunks of at most 64 KiB; macros and headers are small
BODY_CHUNK = 65535  # largest SMFIR_REPLBODY chunk libmilter sends
READ_SIZE = 256 * 1024
QUIT_NC = ord("K")  # SMFIC_QUIT_NC: end this SMTP session, keep the connection for the next

# What we ask Postfix for: header and body edits; no DATA/EOH/unknown-command events
# (nothing to decide there); no reply at connect, HELO, each header and each body
# chunk (we never refuse there: a round trip saved each); header values with their
# leading space, so the message is rebuilt exactly as it came.
WANT_ACTIONS = (ActionFlags.ADD_HEADERS | ActionFlags.CHANGE_HEADERS | ActionFlags.CHANGE_BODY
                | ActionFlags.SETSYMLIST)
WANT_PROTOCOL = (ProtocolFlags.NO_UNKNOWN | ProtocolFlags.NO_DATA | ProtocolFlags.NO_EOH
                 | ProtocolFlags.NR_CONNECT | ProtocolFlags.NR_HELO | ProtocolFlags.NR_HEADER
                 | ProtocolFlags.NR_BODY | ProtocolFlags.HEADER_LEADING_SPACE)
NO_REPLY_FLAGS = {Connect.ident: ProtocolFlags.NR_CONNECT, Helo.ident: ProtocolFlags.NR_HELO,
                  Header.ident: ProtocolFlags.NR_HEADER, Body.ident: ProtocolFlags.NR_BODY}
WANT_MACROS = {
    Stage.HELO: ["{tls_version}"],
    Stage.ENVELOPE_FROM: ["{auth_authen}", "{auth_type}"],
    Stage.END_MESSAGE: ["i"],
}

ARCHIVE_ERROR = bilingual(
    451, "4.3.0", "Không lưu trữ được thư của hộp thư công vụ, xin gửi lại sau (Điều 8)",
    "Could not archive official-mailbox mail, try again later (Article 8)",
)


def too_big(limit: int) -> Reply:
    return bilingual(552, "5.3.4", f"Thư quá lớn: giới hạn {limit} byte (Điều 5.1)",
                     f"Message too large: limit {limit} bytes (Article 5.1)")


class MalformedPacket(Exception):
    """Input that is not the milter protocol: the connection is closed."""


class QuitNewConnection:
    """SMFIC_QUIT_NC, which kilter does not know: a new SMTP session follows."""


# --- decoding ----------------------------------------------------------------------
def decode_packet(ident: int, payload: bytes) -> object:
    if ident == ord("C"):
        return decode_connect(payload)
    if ident == ord("D"):
        return decode_macro(payload)
    if ident == QUIT_NC:
        return QuitNewConnection()
    buf = SimpleBuffer(len(payload) + 5)
    buf[:] = struct.pack("!LB", len(payload) + 1, ident) + payload
    try:
        message, _ = Message.unpack(buf)
    except Exception as exc:  # UnknownMessage, struct.error, UnicodeError, AssertionError...
        raise MalformedPacket(f"command {chr(ident)!r}: {exc or type(exc).__name__}") from None
    message.freeze()  # copy out of the packet buffer
    return message


def decode_connect(payload: bytes) -> Connect:
    host, sep, rest = payload.partition(b"\0")
    if not sep or not rest:
        raise MalformedPacket("connect: truncated")
    hostname = host.decode("utf-8", "replace")
    family = rest[:1]
    if family == b"U":
        return Connect(hostname)
    if len(rest) < 4:
        raise MalformedPacket("connect: truncated address")
    port = int.from_bytes(rest[1:3], "big")
    address = rest[3:].partition(b"\0")[0].decode("utf-8", "replace")
    if family == b"L":
        return Connect(hostname, Path(address))
    if family not in (b"4", b"6"):
        raise MalformedPacket(f"connect: unknown address family {family!r}")
    try:
        ip = ipaddress.ip_address(address.removeprefix("IPv6:"))
    except ValueError:
        raise MalformedPacket(f"connect: bad address {address[:60]!r}") from None
    return Connect(hostname, ip, port)


def decode_macro(payload: bytes) -> Macro:
    if not payload:
        raise MalformedPacket("macro: empty")
    items = payload[1:].split(b"\0")
    if items[-1] == b"":
        items.pop()
    if len(items) % 2:
        raise MalformedPacket("macro: name without value")
    values = [item.decode("utf-8", "replace") for item in items]
    return Macro(payload[0], dict(zip(values[::2], values[1::2], strict=True)))


def pack(message: Message) -> bytes:
    size = 256
    while True:
        buf = SimpleBuffer(size)
        try:
            message.pack(buf)
        except InsufficientSpace:
            size *= 16
            continue
        return buf[:].tobytes()


def reply_code(reply: Reply, utf8: bool) -> ReplyCode:
    """SMFIR_REPLYCODE: our multi-line reply; Postfix un-escapes `%%`."""
    text = reply.render(utf8=utf8).replace("%", "%%")
    return ReplyCode(text.encode("utf-8") + b"\0")


# --- message edits ------------------------------------------------------------------
def header_fields(head: bytes) -> list[tuple[str, bytes]]:
    """(name, value after the colon with folding kept as LF) for each header field."""
    fields: list[tuple[str, bytes]] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
        else:
            name_b, _, value = line.partition(b":")
            fields.append((name_b.decode("ascii", "replace"), value))
    return fields


def message_edits(original: bytes, final: bytes, leading_space: bool) -> list[Message]:
    """The milter edits that turn `original` into `final`.

    Header fields are compared by name and occurrence (the index SMFIR_CHGHEADER
    uses): a changed value is changed, a missing one deleted (last first, so
    indices stay right), a new one added. A changed body is replaced whole.
    """
    old_head, old_body = split_header(original)
    new_head, new_body = split_header(final)
    old: dict[str, list[bytes]] = {}
    new: dict[str, list[bytes]] = {}
    spelling: dict[str, str] = {}
    for table, head in ((old, old_head), (new, new_head)):
        for name, value in header_fields(head):
            table.setdefault(name.lower(), []).append(value)
            spelling.setdefault(name.lower(), name)

    def out(value: bytes) -> bytes:
        return value if leading_space else value.lstrip(b" \t")

    edits: list[Message] = []
    for key in dict.fromkeys([*new, *old]):
        name, before, after = spelling[key], old.get(key, []), new.get(key, [])
        for i in range(min(len(before), len(after))):
            if before[i].strip() != after[i].strip():
                edits.append(ChangeHeader(i + 1, name, out(after[i])))
        for i in range(len(before) - 1, len(after) - 1, -1):
            edits.append(ChangeHeader(i + 1, name, b""))
        for value in after[len(before):]:
            edits.append(AddHeader(name, out(value)))
    if new_body != old_body:
        chunks = [new_body[i:i + BODY_CHUNK] for i in range(0, len(new_body), BODY_CHUNK)]
        edits.extend(ReplaceBody(chunk) for chunk in chunks or [b""])
    return edits


# --- one Postfix connection ---------------------------------------------------------
class MilterSession:
    def __init__(self, server: MilterServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        # a reload swaps these on the server; a session keeps the ones it started with
        self.engine = server.engine
        self.config = server.config
        self.services = server.services
        self.reader = reader
        self.writer = writer
        self._inbuf = bytearray()
        self.no_reply: set[int] = set()
        self.leading_space = False
        self.macros: dict[int, dict[str, str]] = {}
        self.tx = Transaction(listener="milter", relay_checked=True)
        self.held: Reply | None = None  # a refusal at connect, given at every later command
        self._reset_message()

    def _reset_message(self) -> None:
        self.headers: list[tuple[str, bytes]] = []
        self.body = bytearray()
        self.size = 0
        self.oversize = False

    async def run(self) -> None:
        peer = self.writer.get_extra_info("peername") or "unix"
        try:
            while True:
                ident, payload = await self._read_packet()
                if not await self.dispatch(decode_packet(ident, payload)):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # Postfix closed the connection
        except TimeoutError:
            log.info("milter connection from %s idle for %.0fs: closed", peer,
                     self.config.milter.idle_timeout)
        except MalformedPacket as exc:
            log.warning("milter connection from %s: malformed input, closed: %s", peer, exc)
        finally:
            self._finish()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _read_packet(self) -> tuple[int, bytes]:
        """The next packet. Postfix sends several at once (macros with their event,
        headers, body): they are cut from one read, and the idle timer is only armed
        when we have to wait (per-packet timers were a third of the CPU time)."""
        buf = self._inbuf
        while True:
            if len(buf) >= 4:
                (length,) = struct.unpack_from("!L", buf)
                if not 1 <= length <= MAX_PACKET:
                    raise MalformedPacket(f"packet length {length}")
                if len(buf) >= 4 + length:
                    ident, payload = buf[4], bytes(buf[5:4 + length])
                    del buf[:4 + length]
                    return ident, payload
            async with asyncio.timeout(self.config.milter.idle_timeout):
                chunk = await self.reader.read(READ_SIZE)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            buf += chunk

    async def _send(self, *messages: Message) -> None:
        self.writer.write(b"".join(pack(message) for message in messages))
        await self.writer.drain()

    async def _answer(self, event: Message, reply: Reply | None) -> None:
        if reply is None:
            reply = self.held
        if event.ident in self.no_reply:
            return
        if reply is None or reply.positive:
            await self._send(Continue())
        else:
            await self._send(reply_code(reply, self.tx.smtputf8))

    async def _engine(self, call: Awaitable[T]) -> T | Reply:
        """An engine call; a bug there answers 451 rather than dropping the connection."""
        try:
            return await call
        except Exception:
            log.exception("engine failed on milter transaction %s", self.tx.queue_id)
            return POLICY_ERROR

    def _macro(self, name: str) -> str | None:
        for stage in self.macros.values():
            if stage.get(name):
                return stage[name]
        return None

    # --- events -----------------------------------------------------------------
    async def dispatch(self, msg: object) -> bool:
        """Handle one packet; False when the connection is to be closed."""
        match msg:
            case Negotiate():
                await self._send(self._negotiate(msg))
            case Macro():
                self.macros[msg.stage] = dict(msg.macros)
            case Connect():
                await self._on_connect(msg)
            case Helo():
                self.tx.helo = msg.hostname
                self.tx.tls = self._macro("{tls_version}") is not None
                await self._answer(msg, None)
            case EnvelopeFrom():
                await self._on_mail(msg)
            case EnvelopeRecipient():
                await self._on_rcpt(msg)
            case Header():
                self._on_header(msg)
                await self._answer(msg, self._size_reply())
            case Body():
                self._add_body(bytes(msg.content))  # past the size limit: refused at the end
                await self._answer(msg, self._size_reply())
            case EndOfMessage():
                await self._on_end_of_message(msg)
            case Data() | EndOfHeaders() | Unknown():
                await self._answer(msg, None)
            case Abort():
                self._finish()
                self.tx.reset_envelope()
                self._reset_message()
            case QuitNewConnection():
                self._finish()
                self.tx = Transaction(listener="milter", relay_checked=True)
                self.held = None
                self.macros = {}
                self._reset_message()
            case Close():
                return False
            case _:
                raise MalformedPacket(f"not an MTA command: {msg!r}")
        return True

    def _negotiate(self, offer: Negotiate) -> Negotiate:
        actions = WANT_ACTIONS & offer.action_flags
        protocol = WANT_PROTOCOL & offer.protocol_flags
        missing = (WANT_ACTIONS & ~ActionFlags.SETSYMLIST) & ~actions
        if missing:
            log.warning("the MTA does not offer milter actions %r: tag/convert edits are lost",
                        missing)
        self.leading_space = ProtocolFlags.HEADER_LEADING_SPACE in protocol
        self.no_reply = {ident for ident, flag in NO_REPLY_FLAGS.items() if flag in protocol}
        macros = WANT_MACROS if ActionFlags.SETSYMLIST in actions else {}
        version = min(offer.version, PROTOCOL_VERSION)
        return Negotiate(version, actions, protocol, macros)

    async def _on_connect(self, msg: Connect) -> None:
        self.tx = Transaction(listener="milter", relay_checked=True)
        if isinstance(msg.address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            self.tx.client_ip, self.tx.client_port = str(msg.address), msg.port
            self.tx.trusted = self.server.is_trusted(msg.address)
        else:  # a Unix-socket or unknown client (local submission): no address to trust
            self.tx.client_ip = ""
        reply = await self._engine(self.engine.connect(self.tx))
        # libmilter allows no reply text at connect: the refusal is given, with our
        # text, to every command the client sends next
        self.held = reply if isinstance(reply, Reply) else None
        if Connect.ident not in self.no_reply:
            await self._send(Continue())

    async def _on_mail(self, msg: EnvelopeFrom) -> None:
        self._finish()
        tx = self.tx
        tx.reset_envelope()
        self._reset_message()
        options = [bytes(a).decode("utf-8", "replace") for a in msg.arguments]
        tx.mail_options = options
        tx.smtputf8 = any(o.upper() == "SMTPUTF8" for o in options)
        login = self.macros.get(ord("M"), {}).get("{auth_authen}") or None
        tx.auth_login = login
        # what the SMTP front would call it; relay control stays with Postfix
        tx.listener_kind = "submission" if login else "mx"
        tx.tls = tx.tls or self._macro("{tls_version}") is not None
        sender = _address(bytes(msg.sender))
        if self.held:
            reply: Reply | None = self.held
        elif sender is None:
            reply = BAD_SENDER
        else:
            reply = await self._engine(self.engine.mail(tx, sender))
        if reply is not None:
            self._finish("tempfail" if reply.temporary else "reject", reply)
        await self._answer(msg, reply)

    async def _on_rcpt(self, msg: EnvelopeRecipient) -> None:
        recipient = _address(bytes(msg.recipient))
        if self.held:
            reply: Reply | None = self.held
        elif recipient is None:
            reply = BAD_RECIPIENT
        else:
            # a refusal here rejects this recipient only; Postfix keeps the others
            reply = await self._engine(self.engine.rcpt(self.tx, recipient))
        if reply is not None:
            self.tx.cache["last_reply"] = str(reply)
        await self._answer(msg, reply)

    def _on_header(self, msg: Header) -> None:
        value = bytes(msg.value)
        self.size += len(msg.name) + len(value) + 4
        if not self.oversize:
            self.headers.append((msg.name, value))

    def _add_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.config.server.max_message_size:
            self.oversize = True
            self.body = bytearray()  # the message is refused: stop holding it in memory
        elif not self.oversize:
            self.body += chunk

    def _size_reply(self) -> Reply | None:
        limit = self.config.server.max_message_size
        return too_big(limit) if self.size > limit else None

    def raw_message(self) -> bytes:
        """The message as the client sent it, rebuilt from the header and body packets."""
        lines = []
        for name, value in self.headers:
            value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            sep = b":" if self.leading_space else b": "
            lines.append(name.encode("ascii", "replace") + sep + value + b"\r\n")
        return b"".join(lines) + b"\r\n" + bytes(self.body)

    async def _on_end_of_message(self, msg: EndOfMessage) -> None:
        self._add_body(bytes(msg.content))
        tx = self.tx
        tx.cache["postfix_queue_id"] = self.macros.get(ord("E"), {}).get("i", "")
        if self.held or self.oversize:
            reply = self.held or self._size_reply()
            assert reply is not None
            self._finish("tempfail" if reply.temporary else "reject", reply, self.size)
            await self._answer(msg, reply)
            return
        raw = self.raw_message()
        result = await self._with_progress(self._engine(self.engine.data(tx, raw)))
        if isinstance(result, Reply):
            verdict = Verdict("tempfail", result, raw)
        else:
            verdict = result
        if verdict.action == "accept" and not await self._archive(raw, verdict.data):
            verdict = Verdict("tempfail", ARCHIVE_ERROR, raw)
        self._log(verdict)
        self._finish(verdict.action, verdict.reply, len(raw))
        if verdict.action != "accept":
            await self._send(reply_code(verdict.reply, tx.smtputf8))
            return
        edits = message_edits(raw, verdict.data, self.leading_space)
        await self._send(*edits, Continue())

    async def _with_progress(self, call: Awaitable[T]) -> T:
        """Await a slow check, telling Postfix we are alive so it does not time out."""
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.config.milter.progress_interval)
                if done:
                    return task.result()
                await self._send(Progress())
        finally:
            task.cancel()

    async def _archive(self, accepted: bytes, delivered: bytes) -> bool:
        """Official-mailbox mail is archived as on the SMTP path, before Postfix takes it."""
        archive = self.services.get("archive")
        if archive is None:
            return True
        try:
            result = archive.record(self.tx, accepted, delivered)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("archive failed for milter transaction %s", self.tx.queue_id)
            return False
        return True

    def _finish(self, action: str | None = None, reply: Reply | str = "",
                size: int | None = None) -> None:
        """The decision-log line of a transaction, once (as the SMTP front writes it)."""
        tx, decisions = self.tx, self.server.decisions
        if decisions is None or not (tx.mail_from or tx.decisions or tx.rcpt_to):
            return
        if tx.cache.get("logged"):
            return
        entry = record(tx, action or "abandoned", reply or tx.cache.get("last_reply", ""), size)
        entry["postfix_queue_id"] = tx.cache.get("postfix_queue_id") or None
        decisions.write(entry)
        tx.cache["logged"] = True

    def _log(self, verdict: Verdict) -> None:
        tx = self.tx
        log.info(
            "milter %s (postfix %s) from=<%s> to=%s client=%s auth=%s action=%s reply=%r "
            "findings=%s", tx.queue_id, tx.cache.get("postfix_queue_id", ""), tx.mail_from,
            ",".join(tx.rcpt_to), tx.client_ip, tx.auth_login or "-", verdict.action,
            verdict.reply.render().split("\r\n")[0],
            ",".join(f"{d.finding.code}:{d.action.value}" for d in tx.decisions) or "-",
        )


def _address(value: bytes) -> str | None:
    """`<user@example>` as Postfix reports it; None when it is not UTF-8."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


# --- the server ---------------------------------------------------------------------
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
        self._networks = [ipaddress.ip_network(n) for n in config.server.trusted_networks]
        return set(self._sessions)

    def is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._networks)

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
class MilterService:
    """`relay milter`: the server, its engine and services; SIGHUP reloads, SIGTERM stops."""

    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.config = config
        self.config_path = config_path
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    async def main(self) -> int:
        from relay.service import sd_notify

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
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)
            self._watchdog()
            sd_notify(f"READY=1\nSTATUS=milter on {config.milter.bind}\nMAINPID={os.getpid()}")
            log.info("relay milter ready on %s: %d policies", config.milter.bind,
                     len(self.server.engine.policies))
            await self._stop.wait()
            sd_notify("STOPPING=1")
            await self.server.stop()
            return 0
        finally:
            await self.server.engine.close()
            await services_mod.close(self.server.services)
            decisions.close()

    def _spawn_reload(self) -> None:
        self._spawn(self.reload())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _watchdog(self) -> None:
        """WatchdogSec=: ping from the event loop, so a stuck loop gets restarted."""
        from relay.service import sd_notify

        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return

        async def ping() -> None:
            while True:
                sd_notify("WATCHDOG=1")
                await asyncio.sleep(int(usec) / 2_000_000)

        self._spawn(ping())

    async def reload(self) -> None:
        from relay.service import sd_notify

        sd_notify("RELOADING=1\nMONOTONIC_USEC="
                  f"{int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)}")
        try:
            new = load(self.config_path)
            services = await services_mod.build(new)
            engine = Engine(new, services)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        except Exception:
            log.exception("reload failed, keeping the running configuration")
            return
        finally:
            sd_notify("READY=1")
        if new.milter.bind != self.server.config.milter.bind:
            log.warning("milter.bind changes take effect at the next restart")
        old_engine, old_services = self.server.engine, self.server.services
        still_open = self.server.swap(new, engine, services)
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")
        # a milter session lasts as long as Postfix's SMTP session: wait for those on
        # the old engine before closing it
        if still_open:
            await asyncio.wait(still_open, timeout=3600)
        await old_engine.close()
        await services_mod.close(old_services)


def run(config: Config, config_path: Path | None) -> int:
    from relay.service import setup_logging

    setup_logging(config.server.log_level)
    return asyncio.run(MilterService(config, config_path).main())

"""One Postfix connection: its events fed to the engine, its answers and edits."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from kilter.protocol import (
    Abort,
    ActionFlags,
    Body,
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
    Macro,
    Message,
    Negotiate,
    Progress,
    ProtocolFlags,
    Stage,
    Unknown,
)

from relay.body import Body as MessageBody
from relay.config import Config
from relay.engine import BAD_RECIPIENT, BAD_SENDER, Verdict, size_refusal
from relay.milter.codec import (
    MAX_PACKET,
    PROTOCOL_VERSION,
    MalformedPacket,
    QuitNewConnection,
    decode_packet,
    message_edits,
    pack,
    reply_code,
)
from relay.model import Outcome, Reply, Transaction
from relay.transaction import Conversation

if TYPE_CHECKING:
    from relay.milter.server import MilterServer

log = logging.getLogger("relay.milter")

T = TypeVar("T")

READ_SIZE = 256 * 1024
# what Postfix sends stays far below these; past them the peer is not a sane MTA and the
# connection is closed (a header flood once took one connection from 87 to 291 MiB)
MAX_MACROS = 64  # per stage
MAX_MACRO_VALUE = 4096
MAX_HEADERS = 2000
MAX_HEADER_VALUE = 1024 * 1024  # Postfix's header_size_limit is 102400
MAX_HEADER_BYTES = 4 * 1024 * 1024


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

class MilterSession:
    """One milter connection from Postfix: one SMTP session at a time (QUIT_NC starts the next).

    Each SMTP session is a `Conversation` under the runtime in force when it began."""

    def __init__(self, server: MilterServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self._inbuf = bytearray()
        self.no_reply: set[int] = set()
        self.leading_space = False
        self.macros: dict[int, dict[str, str]] = {}
        self.conversation = self._new_conversation()
        self.held: Reply | None = None  # a refusal at connect, given at every later command
        self._reset_message()

    def _new_conversation(self) -> Conversation:
        return Conversation(self.server.hub, Transaction(listener="milter", relay_checked=True))

    @property
    def tx(self) -> Transaction:
        return self.conversation.tx

    @property
    def config(self) -> Config:
        return self.conversation.config

    def _reset_message(self) -> None:
        self.headers: list[tuple[str, bytes]] = []
        self.header_bytes = 0
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
            self.conversation.close()
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
                macros = dict(msg.macros)
                if len(macros) > MAX_MACROS or any(
                        len(k) > 256 or len(v) > MAX_MACRO_VALUE for k, v in macros.items()):
                    raise MalformedPacket("oversized macro packet")
                self.macros[msg.stage] = macros
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
                self.conversation.reset()
                self._reset_message()
            case QuitNewConnection():
                self.conversation.close()
                self.conversation = self._new_conversation()
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
        tx = self.tx
        if isinstance(msg.address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            tx.client_ip, tx.client_port = str(msg.address), msg.port
            tx.trusted = self.config.is_trusted(msg.address)
        else:  # a Unix-socket or unknown client (local submission): no address to trust
            tx.client_ip = ""
        # libmilter allows no reply text at connect: the refusal is given, with our
        # text, to every command the client sends next
        self.held = await self.conversation.connect()
        if Connect.ident not in self.no_reply:
            await self._send(Continue())

    async def _on_mail(self, msg: EnvelopeFrom) -> None:
        self._reset_message()
        tx = self.tx
        login = self.macros.get(ord("M"), {}).get("{auth_authen}") or None
        tx.auth_login = login
        # what the SMTP front would call it; relay control stays with Postfix
        tx.listener_kind = "submission" if login else "mx"
        tx.tls = tx.tls or self._macro("{tls_version}") is not None
        options = [bytes(a).decode("utf-8", "replace") for a in msg.arguments]
        sender = _address(bytes(msg.sender))
        if self.held:
            reply: Reply = self.held
        elif sender is None:
            reply = BAD_SENDER
        else:
            reply = await self.conversation.mail(sender, options)
        if not reply.positive and (self.held or sender is None):
            self.conversation.reset()
        await self._answer(msg, reply)

    async def _on_rcpt(self, msg: EnvelopeRecipient) -> None:
        recipient = _address(bytes(msg.recipient))
        if self.held:
            reply: Reply = self.held
        elif recipient is None:
            reply = BAD_RECIPIENT
        else:
            # a refusal here rejects this recipient only; Postfix keeps the others
            reply = await self.conversation.rcpt(recipient)
        await self._answer(msg, reply)

    def _on_header(self, msg: Header) -> None:
        value = bytes(msg.value)
        if len(msg.name) > 998 or len(value) > MAX_HEADER_VALUE:
            raise MalformedPacket("oversized header packet")
        self.header_bytes += len(msg.name) + len(value) + 4
        if len(self.headers) >= MAX_HEADERS or self.header_bytes > MAX_HEADER_BYTES:
            raise MalformedPacket("more header packets than any message has")
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
        return size_refusal(self.size, limit) if self.size > limit else None

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
        tx.mta_queue_id = self.macros.get(ord("E"), {}).get("i", "")
        if self.held is not None:
            self.conversation.refuse_data(self.held, self.size)
            await self._answer(msg, self.held)
            return
        if self.oversize:
            await self._answer(msg, self.conversation.refuse_oversize(self.size))
            return
        raw = self.raw_message()
        verdict = await self._with_progress(self.conversation.data(MessageBody.of(raw)))
        self._log(verdict)
        if verdict.outcome is not Outcome.ACCEPT:
            await self._send(reply_code(verdict.reply, tx.smtputf8))
            return
        edits = message_edits(raw, verdict.delivered(raw), self.leading_space)
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

    def _log(self, verdict: Verdict) -> None:
        tx = self.tx
        log.info(
            "milter %s (postfix %s) from=<%s> to=%s client=%s auth=%s action=%s reply=%r "
            "findings=%s", tx.queue_id, tx.mta_queue_id or "", tx.mail_from,
            ",".join(tx.rcpt_to), tx.client_ip, tx.auth_login or "-", verdict.outcome.value,
            verdict.reply.render().split("\r\n")[0],
            ",".join(f"{d.finding.code}:{d.action.value}" for d in tx.decisions) or "-",
        )


def _address(value: bytes) -> str | None:
    """`<user@example>` as Postfix reports it ("" for the null sender); None when it is
    not UTF-8."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text

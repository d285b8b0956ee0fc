"""Helpers for the milter tests: the milter in a thread, and a milter client.

The client is built on the `kilter.protocol` codec (the MTA side), independent of
the server's session loop; Debian's `miltertest` is the other independent client.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from kilter.protocol import (
    Accept,
    ActionFlags,
    Body,
    Connect,
    Continue,
    Discard,
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
    Reject,
    ReplyCode,
    TemporaryFailure,
)
from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.core import NR_FLAG_MAP

from relay.config import Config, from_dict
from relay.decisionlog import DecisionLog
from relay.milter import MilterServer, pack
from relay.runtime import Runtime
from relay.transaction import Hub

POLICY_DIR = Path(__file__).parent / "milter_policies"
FINAL = (Continue, Reject, Discard, Accept, TemporaryFailure, ReplyCode)


def milter_config(bind: str, state_dir: Path, server: dict[str, Any] | None = None,
                  policies: dict[str, dict[str, Any]] | None = None) -> Config:
    return from_dict({
        "server": {"policy_dirs": [str(POLICY_DIR)], "state_dir": str(state_dir),
                   **(server or {})},
        "milter": {"bind": bind},
        "policies": policies if policies is not None else {
            "headers": {}, "probe": {}},
    })


class MilterThread:
    """`relay milter` in a background event loop, so tests can use blocking clients."""

    def __init__(self, config: Config, decisions: Path | None = None) -> None:
        self.config = config
        self.decisions = DecisionLog(decisions) if decisions else None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: MilterServer | None = None

    async def _start(self) -> None:
        self.runtime = await Runtime.build(self.config)
        self.server = MilterServer(Hub(self.runtime, self.decisions))
        await self.server.start()

    async def _stop(self) -> None:
        assert self.server is not None
        await self.server.stop(grace=1.0)
        await self.runtime.aclose()
        if self.decisions is not None:
            self.decisions.close()

    def __enter__(self) -> MilterThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class MilterClient:
    """The MTA side of the protocol, as Postfix speaks it, over a blocking socket."""

    def __init__(self, bind: str, timeout: float = 10.0) -> None:
        if bind.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(bind[5:])
        else:
            host, _, port = bind.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.no_reply: set[int] = set()  # events the filter asked not to answer (SMFIP_NR_*)
        self.progress = 0  # SMFIR_PROGRESS packets seen

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *messages: Message) -> None:
        self.sock.sendall(b"".join(pack(m) for m in messages))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("milter closed the connection")
            out += chunk
        return out

    def recv(self) -> Message:
        header = self._read(4)
        (length,) = struct.unpack("!L", header)
        data = self._read(length)
        buf = SimpleBuffer(length + 4)
        buf[:] = header + data
        message, _ = Message.unpack(buf)
        message.freeze()
        return message

    def negotiate(self, protocol: ProtocolFlags | None = None) -> Negotiate:
        offer = protocol if protocol is not None else ProtocolFlags(0x1FFFFF)
        self.send(Negotiate(6, ActionFlags.ALL, offer))
        reply = self.recv()
        assert isinstance(reply, Negotiate)
        self.no_reply = {i for i, flag in NR_FLAG_MAP.items() if flag in reply.protocol_flags}
        return reply

    def event(self, *messages: Message) -> list[Message]:
        """Send, then read up to and including the final answer (edits come first);
        nothing when the last event is one the filter does not answer."""
        self.send(*messages)
        out: list[Message] = []
        if messages[-1].ident in self.no_reply:
            return out
        while True:
            message = self.recv()
            if isinstance(message, Progress):
                self.progress += 1
                continue
            out.append(message)
            if isinstance(message, FINAL):
                return out

    def answer(self, *messages: Message) -> Message | None:
        answers = self.event(*messages)
        return answers[-1] if answers else None


def reply_text(message: Message) -> str:
    assert isinstance(message, ReplyCode), message
    return bytes(message.content).rstrip(b"\0").decode("utf-8")


HEADERS = [("From", " a@dienbien.gov.vn"), ("To", " b@dienbien.gov.vn"),
           ("Date", " Sun, 29 Nov 2026 10:00:00 +0700"), ("Message-ID", " <1@x>")]


def open_session(bind: str, sender: str = "<a@dienbien.gov.vn>",
                 auth: str | None = None) -> MilterClient:
    """A milter connection as Postfix opens it, up to an accepted MAIL FROM."""
    client = MilterClient(bind)
    client.negotiate()
    assert client.answer(Connect("mx.example", IPv4Address("192.0.2.7"), 4567)) is None
    assert client.answer(Helo("mx.example")) is None
    if auth:
        client.send(Macro(ord("M"), {"{auth_authen}": auth}))
    assert isinstance(client.answer(EnvelopeFrom(sender.encode())), Continue)
    return client


def send_message(client: MilterClient, subject: str, body: bytes = b"Hello\r\n",
                 extra: list[tuple[str, str]] | None = None) -> list:
    """RCPT b@, the headers (with this Subject) and body; the answers to end of message."""
    assert isinstance(client.answer(EnvelopeRecipient(b"<b@dienbien.gov.vn>")), Continue)
    headers = [*HEADERS, ("Subject", f" {subject}"), *(extra or [])]
    client.send(*(Header(n, v.encode()) for n, v in headers))  # no reply: NR_HEADER
    client.send(Body(body))  # no reply: NR_BODY
    return client.event(EndOfMessage(b""))

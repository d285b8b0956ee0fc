"""The milter wire format: packets in and out, and the edits that turn one message
into another. `kilter.protocol` gives the message classes; framing and the two
decoders kilter is too strict for (connect, macros) are here.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from kilter.protocol import (
    AddHeader,
    ChangeHeader,
    Connect,
    InsufficientSpace,
    Macro,
    Message,
    ReplaceBody,
    ReplyCode,
)
from kilter.protocol.buffer import SimpleBuffer

from relay.message import split_header
from relay.model import Reply

PROTOCOL_VERSION = 6
MAX_PACKET = 1 << 20  # Postfix sends body chunks of at most 64 KiB; macros and headers are small
BODY_CHUNK = 65535  # largest SMFIR_REPLBODY chunk libmilter sends
QUIT_NC = ord("K")  # SMFIC_QUIT_NC: end this SMTP session, keep the connection for the next


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

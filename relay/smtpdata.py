"""The content of an SMTP DATA command (RFC 5321 4.5.2), decoded as it streams in.

Sans-IO: `feed()` takes what the front read and writes the message to a sink.
- The end is only `<CR><LF>.<CR><LF>`: no other line ending ends DATA, so nothing
  can be smuggled past a server that reads it differently (CVE-2023-51764 family).
- Bare CR or LF (a line ending other than CRLF) is normalised to CRLF by default, as
  Postfix >= 3.9 does (`smtpd_forbid_bare_newline = normalize`): scripts that send
  LF-only messages work, and what is stored and forwarded has one kind of line
  ending. With `reject` the message is read to its end and refused (554 5.6.0).
- Dot-stuffing is undone; past `limit` bytes the rest is counted, not kept.

The front reads with `readuntil(b".\\r\\n")` (or whatever it read when a line is
too long for one call): a chunk is the terminator's end only when the bytes
before it, also from earlier chunks, end in CRLF.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_EOL = re.compile(rb"\r\n|\r|\n")
END = b".\r\n"


class DataStream:
    def __init__(self, sink: Callable[[bytes], None], limit: int, normalize: bool = True
                 ) -> None:
        self.sink = sink
        self.limit = limit
        self.normalize = normalize
        self.size = 0  # bytes of message content (after unstuffing), also past the limit
        self.oversize = False
        self.bare_newline = False  # a line ended in something other than CRLF
        self.done = False
        self._raw_tail = b"\r\n"  # the DATA command's own line ending precedes the content
        self._out_tail = b"\r\n"
        self._held_cr = b""  # a CR at a chunk's end may be the first half of a CRLF

    def feed(self, chunk: bytes) -> bool:
        """One chunk as read; True once the terminator was read (nothing may follow)."""
        assert not self.done
        if chunk.endswith(END) and (self._raw_tail + chunk).endswith(b"\r\n" + END):
            content, self.done = chunk[: -len(END)], True
        else:
            content = chunk
        self._raw_tail = (self._raw_tail + chunk)[-4:]
        content = self._held_cr + content
        self._held_cr = b""
        if not self.done and content.endswith(b"\r"):
            content, self._held_cr = content[:-1], b"\r"
        crlf = content.count(b"\r\n")
        if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
            self.bare_newline = True
            if self.normalize:
                content = _EOL.sub(b"\r\n", content)
        joined = self._out_tail + content
        content = joined.replace(b"\r\n.", b"\r\n")[len(self._out_tail):]
        if content:
            self._out_tail = (self._out_tail + content)[-2:]
        self.size += len(content)
        if self.size > self.limit:
            self.oversize = True
        elif content and not (self.bare_newline and not self.normalize):
            self.sink(content)
        return self.done


_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)


class MsaHeaders:
    """RFC 6409 8.2-8.3: a submission server may add the Date: and Message-ID: a client
    left out (Postfix does for local_header_rewrite_clients). Sits between DataStream and
    the message's sink: holds the header section (up to `limit` bytes), adds what is
    missing at its end, then passes everything through."""

    def __init__(self, sink: Callable[[bytes], None], message_id: str, limit: int,
                 now: Callable[[], str]) -> None:
        self.sink, self.message_id, self.limit, self.now = sink, message_id, limit, now
        self._head = bytearray()
        self._passing = False
        self.added: list[tuple[str, str]] = []

    def write(self, chunk: bytes) -> None:
        if self._passing:
            self.sink(chunk)
            return
        self._head += chunk
        if self._head.startswith(b"\r\n"):
            end: int | None = 0
        else:
            blank = self._head.find(b"\r\n\r\n")
            end = blank + 2 if blank >= 0 else None
        if end is not None:
            self._release(end)
        elif len(self._head) > self.limit:  # not a header section we will touch
            self._passing = True
            self.sink(bytes(self._head))
            self._head = bytearray()

    def finish(self) -> None:
        """The message ended inside its header section (no body)."""
        if not self._passing:
            self._release(len(self._head))

    def _release(self, end: int) -> None:
        names = {m.group(1).lower() for m in _FIELD.finditer(self._head, 0, end)}
        if b"date" not in names:
            self.added.append(("Date", self.now()))
        if b"message-id" not in names:
            self.added.append(("Message-ID", self.message_id))
        fields = b"".join(f"{n}: {v}\r\n".encode() for n, v in self.added)
        head = bytes(self._head)
        if end == len(head) and head and not head.endswith(b"\r\n"):
            fields = b"\r\n" + fields  # a last header line without its line ending
        self._passing = True
        self._head = bytearray()
        self.sink(head[:end] + fields + head[end:])

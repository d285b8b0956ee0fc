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

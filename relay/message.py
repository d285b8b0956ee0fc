"""A message parsed once, with bounds, and shared by every policy.

Python's `email` package can be made slow or made to raise by hostile input
(CPython gh-136063, the CVE-2024-6923 family), so the header section is split
and bounded here before anything else looks at it, the structure is parsed
with `compat32` (no lazy header re-parsing), and parse errors become
`problems` that the `headers` policy reports instead of exceptions.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.message
import email.parser
import email.policy
import quopri
import re
from functools import cached_property

from relay.model import Summary

MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_FIELDS = 1000
MAX_MIME_PARTS = 1000  # defaults of [inspection] max_parts / max_depth
MAX_MIME_DEPTH = 20


class MessageTooComplex(Exception):
    """More MIME parts or deeper nesting than the inspection budget allows: the
    message is refused as a whole (`inspection.too_complex`), not half-inspected."""

_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")  # RFC 5322 ftext


def _parseparam(s: object) -> list[str]:
    """`email.message._parseparam` in linear time, same results.

    CPython's counts the quotes from the start of the value again for every `;`
    (gh-136063): a Content-Type with an unclosed quote and 200,000 `;` took over a
    minute of CPU, and the parser calls it while it reads the MIME structure (the
    boundary), so no policy could avoid it. Here each quote is counted once.
    Quotes are counted per stretch between two `;`: a `\\"` cannot straddle a `;`.
    """
    text = ";" + str(s)
    params: list[str] = []
    pos, n = 0, len(text)
    while pos < n and text[pos] == ";":
        start = pos + 1
        end = text.find(";", start)
        counted, quotes = start, 0
        while end > start:
            quotes += text.count('"', counted, end) - text.count('\\"', counted, end)
            counted = end
            if quotes % 2 == 0:
                break
            end = text.find(";", end + 1)
        if end < 0:
            end = n
        field = text[start:end]
        if "=" in field:
            i = field.index("=")
            field = field[:i].strip().lower() + "=" + field[i + 1:].strip()
        params.append(field.strip())
        pos = end
    return params


email.message._parseparam = _parseparam  # type: ignore[attr-defined]


class Part:
    """A leaf MIME part: its headers, where its body lies, and the body decoded on demand.

    The body is not decoded until a policy asks (`payload`, or `head()` for the first
    bytes only): a 25 MB attachment whose type is known from its first 64 KB is never
    decoded whole."""

    __slots__ = ("path", "content_type", "charset", "filename", "disposition",
                 "transfer_encoding", "raw", "_source", "_start", "_end", "_payload",
                 "_problems")

    def __init__(self, path: str, headers: email.message.Message, source: bytes,
                 start: int, end: int, problems: list[str]) -> None:
        self.path = path  # "1", "2.1", ...: where it is, for findings
        self.raw = headers  # the part's header fields (compat32: raw strings)
        self.content_type = headers.get_content_type()
        self.charset = headers.get_content_charset()
        try:
            filename = headers.get_filename()
        except Exception:
            filename = None
        self.filename = decode_header_value(str(filename)) if filename is not None else None
        self.disposition = headers.get_content_disposition()
        self.transfer_encoding = str(headers.get("Content-Transfer-Encoding", "7bit")
                                     ).strip().lower()
        self._source, self._start, self._end = source, start, end
        self._payload: bytes | None = None
        self._problems = problems

    @property
    def encoded_size(self) -> int:
        return self._end - self._start

    @property
    def payload(self) -> bytes:
        """The decoded body (base64, quoted-printable), as the email package decodes it."""
        if self._payload is None:
            self._payload = self._decode(self._source[self._start:self._end])
        return self._payload

    def head(self, n: int) -> bytes:
        """About the first n decoded bytes, decoding only as much as that needs."""
        if self._payload is not None or self.transfer_encoding not in ("base64",
                                                                       "quoted-printable"):
            return self.payload[:n] if self._payload is not None else \
                self._source[self._start:min(self._end, self._start + n)]
        # base64: 4 characters for 3 bytes, plus line breaks; qp: at most 3 for 1
        span = n * 2 + 1024 if self.transfer_encoding == "base64" else n * 3 + 1024
        if span >= self.encoded_size:
            return self.payload[:n]
        chunk = self._source[self._start:self._start + span]
        if self.transfer_encoding == "base64":
            chunk = chunk[:chunk.rfind(b"\n") + 1] or chunk  # whole lines only
        return self._decode(chunk)[:n]

    def _decode(self, data: bytes) -> bytes:
        try:
            if self.transfer_encoding == "base64":
                return _b64decode(data)
            if self.transfer_encoding == "quoted-printable":
                return quopri.decodestring(data)
        except Exception as exc:
            self._problems.append(f"part {self.path}: payload could not be decoded: {exc}")
            return b""
        return data

    @property
    def is_text(self) -> bool:
        return self.content_type.startswith("text/") and self.disposition != "attachment"

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or (
            self.filename is not None or not self.content_type.startswith(("text/", "multipart/"))
        )

    def __repr__(self) -> str:
        return f"Part({self.path!r}, {self.content_type!r}, {self.filename!r})"


def _b64decode(data: bytes) -> bytes:
    """Base64 as lenient as the email package's decoding: padding added where missing,
    stray characters skipped; a length no padding can fix gives the text back."""
    data = b"".join(data.splitlines())
    missing = b"==="[: 4 - len(data) % 4] if len(data) % 4 else b""
    for attempt, validate in ((data + missing, True), (data, False), (data + b"==", False)):
        try:
            return base64.b64decode(attempt, validate=validate)
        except binascii.Error:
            continue
    return data


_BLANK_LINE = re.compile(rb"(\r?\n)\r?\n")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _split_multipart(raw: bytes, start: int, end: int,
                     boundary: str) -> list[tuple[int, int]] | None:
    """Body spans between delimiter lines (RFC 2046 5.1.1: the line break before a
    delimiter belongs to it); None when there is none. A missing close delimiter ends
    the last part at the end, as the email package does. Candidates are found with
    bytes.find (a regex over a large base64 part cost a millisecond a message)."""
    marker = b"--" + boundary.encode("utf-8", "replace")
    spans: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while (at := raw.find(marker, pos, end)) >= 0:
        pos = at + len(marker)
        if at != start and raw[at - 1:at] != b"\n":
            continue  # not at the start of a line
        after = pos
        closing = raw.startswith(b"--", after, end)
        if closing:
            after += 2
        while after < end and raw[after] in b" \t":
            after += 1
        if after < end and raw[after:after + 1] not in (b"\r", b"\n"):
            continue  # the boundary is only the beginning of a longer line
        line_start = at - (2 if at >= start + 2 and raw[at - 2:at] == b"\r\n" else
                           1 if at > start else 0)
        line_end = after + (2 if raw.startswith(b"\r\n", after, end) else
                            1 if raw.startswith(b"\n", after, end) else 0)
        if part_start is not None:
            spans.append((part_start, max(part_start, line_start)))
        if closing:
            return spans or None
        part_start = line_end
        pos = max(pos, line_end - 1 if line_end > after else line_end)
    if part_start is not None:  # the email package drops the last line break here too
        last = end - (2 if raw.endswith(b"\r\n", part_start, end) else
                      1 if raw.endswith(b"\n", part_start, end) else 0)
        spans.append((part_start, max(part_start, last)))
    return spans or None


def _clean(text: str | None, limit: int) -> str | None:
    """Header text fit for a log line or a database column: valid UTF-8, no NUL."""
    if text is None:
        return None
    text = text.strip().encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\0", "")[:limit]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """Header section (with its last line ending) and body, split at the first empty line."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw.split(b"\n", 1)[1]
    m = _BLANK_LINE.search(raw)
    if not m:
        return raw, b""
    return raw[: m.end(1)], raw[m.end() :]


def decode_header_value(value: str) -> str:
    """RFC 2047 words decoded; undecodable words are left as they came."""
    try:
        parts = email.header.decode_header(value)
    except (ValueError, LookupError, AssertionError):
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(charset or "ascii", "replace"))
            except (LookupError, ValueError):  # unknown charset, or a NUL in its name
                out.append(chunk.decode("latin-1"))
        else:
            out.append(chunk)
    return "".join(out)


class Message:
    def __init__(self, raw: bytes, max_parts: int = MAX_MIME_PARTS,
                 max_depth: int = MAX_MIME_DEPTH) -> None:
        self.raw = raw
        self.max_parts, self.max_depth = max_parts, max_depth
        self.problems: list[str] = []
        head, self.body = split_header(raw)
        self.head = head
        self.headers: list[tuple[str, str]] = []
        if len(head) > MAX_HEADER_BYTES:
            self.problems.append(f"header section is {len(head)} bytes (limit {MAX_HEADER_BYTES})")
            head = head[:MAX_HEADER_BYTES]
        self._split_fields(head)

    def _split_fields(self, head: bytes) -> None:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        current: list[bytes] = []
        fields: list[list[bytes]] = []
        for line in lines:
            if not line:
                continue
            if line[:1] in (b" ", b"\t"):
                if current:
                    current.append(line)
                else:
                    self.problems.append("message starts with a continuation line")
                continue
            current = [line]
            fields.append(current)
        if len(fields) > MAX_HEADER_FIELDS:
            self.problems.append(f"{len(fields)} header fields (limit {MAX_HEADER_FIELDS})")
            fields = fields[:MAX_HEADER_FIELDS]
        for field_lines in fields:
            name, colon, value = field_lines[0].partition(b":")
            if not colon or not _FIELD_NAME.match(name):
                self.problems.append(f"malformed header line {field_lines[0][:60]!r}")
                continue
            unfolded = b"".join([value, *field_lines[1:]]).strip()
            self.headers.append(
                (name.decode("ascii"), unfolded.decode("utf-8", "surrogateescape"))
            )

    # --- headers --------------------------------------------------------------
    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    def decoded(self, name: str) -> str | None:
        value = self.get(name)
        return None if value is None else decode_header_value(value)

    def summary(self) -> Summary:
        return Summary(size=len(self.raw), message_id=_clean(self.get("Message-ID"), 998),
                       subject=_clean(self.decoded("Subject"), 998) or "",
                       date=_clean(self.get("Date"), 200))

    # --- structure ------------------------------------------------------------
    @cached_property
    def parts(self) -> list[Part]:
        """The leaf parts, numbered as the email package numbers them ("1", "2.1"...).

        Split at the bytes level (headers parsed per part, bodies left in place), so a
        large message costs about its size, not the several times its size that the
        email package's tree of strings costs."""
        # every part starts at a delimiter line: far more such lines than parts allowed
        # is refused before any work is spent on them
        if self.raw.count(b"\n--") > 2 * self.max_parts + 10:
            raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
        out: list[Part] = []
        self._walk(0, len(self.raw), "1", 0, out)
        return out

    def _walk(self, start: int, end: int, path: str, depth: int, out: list[Part]) -> None:
        if depth > self.max_depth:
            raise MessageTooComplex(f"MIME nesting deeper than {self.max_depth}")
        raw = self.raw
        blank = _BLANK_LINE.search(raw, start, end)
        if raw.startswith((b"\r\n", b"\n"), start):  # no header fields at all
            head_end, body_start = start, start + (2 if raw.startswith(b"\r\n", start) else 1)
        elif blank is None:
            head_end = body_start = end
        else:
            head_end, body_start = blank.end(1), blank.end()
        headers = _HEADERS.parsebytes(raw[start:head_end][:MAX_HEADER_BYTES])
        boundary = None
        if headers.get_content_maintype() == "multipart":
            try:
                boundary = headers.get_boundary()
            except Exception:
                boundary = None
        if boundary:
            spans = _split_multipart(raw, body_start, end, boundary)
            if spans is not None:
                for i, (s, e) in enumerate(spans, 1):
                    if len(out) >= self.max_parts:
                        raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
                    self._walk(s, e, f"{path}.{i}" if depth else str(i), depth + 1, out)
                return
            self.problems.append(f"part {path}: multipart boundary not found")
        elif headers.get_content_type() == "message/rfc822":
            self._walk(body_start, end, f"{path}.1" if depth else "1", depth + 1, out)
            return
        if len(out) >= self.max_parts:
            raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
        out.append(Part(path, headers, raw, body_start, end, self.problems))

    # --- rewriting ------------------------------------------------------------
    @staticmethod
    def prepend_headers(raw: bytes, headers: list[tuple[str, str]]) -> bytes:
        """Add header fields at the top; refuses values that would start a new line."""
        lines = []
        for name, value in headers:
            if not _FIELD_NAME.match(name.encode("ascii", "replace")) or any(
                c in value for c in "\r\n\0"
            ):
                raise ValueError(f"refusing to write header {name!r}: {value!r}")
            lines.append(f"{name}: {value}\r\n".encode())
        return b"".join(lines) + raw

"""A message parsed once, with bounds, and shared by every policy.

Python's `email` package can be made slow or made to raise by hostile input
(CPython gh-136063, the CVE-2024-6923 family), so the header section is split
and bounded here before anything else looks at it, the structure is parsed
with `compat32` (no lazy header re-parsing), and parse errors become
`problems` that the `headers` policy reports instead of exceptions.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Part:
    """A leaf MIME part with its decoded bytes."""

    path: str  # "1", "2.1", ...: where it is, for findings
    content_type: str
    charset: str | None
    filename: str | None
    disposition: str | None
    payload: bytes
    transfer_encoding: str
    raw: email.message.Message

    @property
    def is_text(self) -> bool:
        return self.content_type.startswith("text/") and self.disposition != "attachment"

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or (
            self.filename is not None or not self.content_type.startswith(("text/", "multipart/"))
        )


_BLANK_LINE = re.compile(rb"(\r?\n)\r?\n")


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
    def email(self) -> email.message.Message:
        """The MIME tree (compat32: headers stay raw strings; nothing re-folds them)."""
        # every part starts at a delimiter line: far more such lines than parts allowed
        # is refused before the parser spends time and memory on them
        if self.raw.count(b"\n--") > 2 * self.max_parts + 10:
            raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
        try:
            return email.message_from_bytes(self.raw, policy=email.policy.compat32)
        except Exception as exc:  # the parser should not raise; if it does, say so
            self.problems.append(f"MIME structure could not be parsed: {exc}")
            return email.message.Message()

    @cached_property
    def parts(self) -> list[Part]:
        out: list[Part] = []
        self._walk(self.email, "1", 0, out)
        return out

    def _walk(self, msg: email.message.Message, path: str, depth: int, out: list[Part]) -> None:
        if depth > self.max_depth:
            raise MessageTooComplex(f"MIME nesting deeper than {self.max_depth}")
        if msg.is_multipart():
            payload = msg.get_payload()
            assert isinstance(payload, list)
            for i, sub in enumerate(payload, 1):
                if len(out) >= self.max_parts:
                    raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
                self._walk(sub, f"{path}.{i}" if depth else str(i), depth + 1, out)
            return
        try:
            data = msg.get_payload(decode=True)
        except Exception as exc:
            self.problems.append(f"part {path}: payload could not be decoded: {exc}")
            data = b""
        if not isinstance(data, bytes):
            data = b""
        try:
            filename = msg.get_filename()
        except Exception:
            filename = None
        if filename is not None:
            filename = decode_header_value(str(filename))
        disposition = msg.get_content_disposition()
        out.append(
            Part(
                path=path,
                content_type=msg.get_content_type(),
                charset=msg.get_content_charset(),
                filename=filename,
                disposition=disposition,
                payload=data,
                transfer_encoding=str(msg.get("Content-Transfer-Encoding", "7bit")).lower(),
                raw=msg,
            )
        )

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

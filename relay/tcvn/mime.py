"""Header words and MIME parts, read for the detector and rewritten in UTF-8 NFC.

Reading works on raw bytes (Python's `email` cannot even decode `charset=viscii`).
Rewriting is surgical: only the fields and leaf parts that change are replaced in
the raw message; every other byte stays as it came (no re-folding of other headers,
which is where CVE-2024-6923-style header injection comes from). Every header line
written here is built from ASCII encoded words and checked for CR/LF before use.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.quoprimime
import email.utils
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from relay.message import split_header

# --- reading header words -------------------------------------------------------------

_EW = re.compile(r"=\?([!->@-~]+)\?([bBqQ])\?([!->@-~]*)\?=")


def as_bytes(text: str) -> bytes:
    """A header string back to the bytes it was read from (8-bit bytes as surrogate escapes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def header_chunks(value: str) -> list[tuple[bytes, str | None]]:
    """A header value as (bytes, charset) runs: RFC 2047 words decoded, 8-bit text as sent.

    `value` is the unfolded field as `relay.message` keeps it (8-bit bytes as
    surrogate escapes). Adjacent words in the same charset are joined, since a
    sender may split one character across two words.
    """
    out: list[tuple[bytes, str | None]] = []
    pos = 0
    after_word = False

    def add(data: bytes, charset: str | None) -> None:
        if out and out[-1][1] == charset:
            out[-1] = (out[-1][0] + data, charset)
        else:
            out.append((data, charset))

    for m in _EW.finditer(value):
        between = value[pos:m.start()]
        if between and not (after_word and between.isspace()):
            add(as_bytes(between), None)
        charset = m.group(1).split("*")[0].lower()
        data = _decode_word(m.group(2), m.group(3))
        if data is None:
            add(m.group().encode("ascii"), None)
            after_word = False
        else:
            add(data, charset)
            after_word = True
        pos = m.end()
    if pos < len(value):
        add(as_bytes(value[pos:]), None)
    return out


def _decode_word(encoding: str, text: str) -> bytes | None:
    try:
        if encoding in "bB":
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        return email.quoprimime.header_decode(text).encode("latin-1")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")


def clean(text: str) -> str:
    """Decoded header text made safe to re-encode: no CR, LF or other controls."""
    return _CONTROL.sub(" ", text)


# --- writing header words -------------------------------------------------------------

_MAX_WORD_BYTES = 45  # 45 bytes -> 60 base64 characters -> a 72-character encoded word


def encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 words (UTF-8), never splitting a character, each under 76 chars."""
    words, chunk, size = [], [], 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if chunk and size + n > _MAX_WORD_BYTES:
            words.append(_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    if chunk:
        words.append(_word("".join(chunk)))
    return words


def _word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*$")


def unstructured_atoms(text: str) -> list[str]:
    """Atoms for an unstructured field (Subject): plain words when ASCII, else encoded words."""
    text = clean(text).strip()
    if text.isascii() and "=?" not in text:
        return text.split()
    return encoded_words(text)


def phrase_atoms(name: str) -> list[str]:
    """Atoms for a display name: plain, quoted, or encoded words."""
    name = clean(name).strip()
    if not name:
        return []
    if name.isascii() and "=?" not in name:
        if _ATEXT.match(name) and not name.startswith(".") and ".." not in name:
            return name.split()
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return encoded_words(name)


def fold(name: str, atoms: Iterable[str], eol: bytes) -> bytes:
    """`Name: atom atom ...` folded before 78 columns; only whitespace between atoms breaks."""
    lines: list[str] = []
    line = name + ":"
    for atom in atoms:
        if len(line) + 1 + len(atom) > 76 and line != name + ":":
            lines.append(line)
            line = " " + atom
        else:
            line += " " + atom
    lines.append(line)
    if not all(part.isascii() for part in lines):
        raise ValueError(f"refusing to write non-ASCII header field {name}")
    out = eol.join(part.encode("ascii") for part in lines) + eol
    _check_field(out, eol)
    return out


def _check_field(field: bytes, eol: bytes) -> None:
    """One field: continuation lines start with whitespace, no stray CR/LF/NUL."""
    lines = field[: -len(eol)].split(eol)
    for i, line in enumerate(lines):
        if b"\r" in line or b"\n" in line or b"\0" in line or (i and line[:1] not in b" \t"):
            raise ValueError(f"refusing to write header field {field[:60]!r}")
        if not line.isascii() or len(line) > 998:
            raise ValueError(f"refusing to write header field {field[:60]!r}")


# --- addresses ------------------------------------------------------------------------

_ADDR = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.\[\]:-]+$")


def parse_addresses(value: str) -> list[tuple[str, str]] | None:
    """(display name, address) pairs, or None when the field is not a plain address list
    (groups, comments, anything the rewrite could get wrong): then it is left alone."""
    if ";" in value or "(" in value:
        return None
    pairs = email.utils.getaddresses([value])
    if not pairs or any(not _ADDR.match(addr) for _, addr in pairs):
        return None
    if len(pairs) != value.count("@"):
        return None
    return pairs


def address_atoms(pairs: list[tuple[str, str]]) -> list[str]:
    atoms: list[str] = []
    for i, (name, addr) in enumerate(pairs):
        comma = "," if i < len(pairs) - 1 else ""
        words = phrase_atoms(name)
        atoms.extend(words)
        atoms.append(f"<{addr}>{comma}" if words else f"{addr}{comma}")
    return atoms


# --- MIME leaves ----------------------------------------------------------------------

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
MAX_DEPTH = 25


@dataclass(frozen=True)
class Span:
    start: int  # the leaf's first header byte in the raw message
    end: int  # one past its last body byte
    content_type: str
    signed: bool = False  # inside multipart/signed: changing it would break the signature


def leaf_spans(raw: bytes) -> dict[str, Span]:
    """Where each leaf part lies in the raw message, numbered as `relay.message` numbers them."""
    out: dict[str, Span] = {}
    _walk(raw, 0, len(raw), "1", 0, out, False)
    return out


def _walk(raw: bytes, start: int, end: int, path: str, depth: int, out: dict[str, Span],
          signed: bool) -> None:
    if depth > MAX_DEPTH:
        return
    head, body = split_header(raw[start:end])
    body_start = end - len(body)
    msg = _HEADER_PARSER.parsebytes(head)
    ctype = msg.get_content_type()
    boundary = msg.get_boundary() if msg.get_content_maintype() == "multipart" else None
    signed = signed or ctype == "multipart/signed"
    if boundary:
        parts = _split_multipart(raw, body_start, end, boundary)
        if parts is not None:
            for i, (s, e) in enumerate(parts, 1):
                _walk(raw, s, e, f"{path}.{i}" if depth else str(i), depth + 1, out, signed)
            return
    if ctype == "message/rfc822":
        _walk(raw, body_start, end, f"{path}.1" if depth else "1", depth + 1, out, signed)
        return
    out[path] = Span(start, end, ctype, signed)


def _split_multipart(raw: bytes, start: int, end: int,
                     boundary: str) -> list[tuple[int, int]] | None:
    """Body spans between boundary lines, as the standard library's parser splits them."""
    delim = re.compile(
        rb"(?:\r\n|\n|\r|^)--" + re.escape(as_bytes(boundary))
        + rb"(--)?[ \t]*(?:\r\n|\n|\r|$)", re.M)
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        m = delim.search(raw, pos, end)
        if m is None:
            if part_start is not None:
                parts.append((part_start, end))  # no closing line: runs to the end
            break
        if part_start is not None:
            parts.append((part_start, max(part_start, m.start())))
        if m.group(1):
            break
        part_start = m.end()
        pos = m.end() - 1 if m.group().endswith((b"\n", b"\r")) else m.end()
    return parts or None


# --- editing header fields ------------------------------------------------------------

_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)


def line_ending(head: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in head else b"\n"


def edit_fields(head: bytes, replace: dict[str, bytes | None], eol: bytes = b"\r\n") -> bytes:
    """Header section with fields replaced: the first occurrence takes the new bytes (None
    drops it), later ones are dropped, absent ones are appended. Other bytes are untouched,
    except that a last line without its line ending gets one (else a field appended
    after it would join it)."""
    fields = _fields(head)
    if fields and not fields[-1][1].endswith((b"\n", b"\r")):
        fields[-1] = (fields[-1][0], fields[-1][1] + eol)
    out: list[bytes] = []
    done: set[str] = set()
    for name, data in fields:
        key = name.lower() if name else ""
        if key in replace:
            if key not in done and replace[key] is not None:
                out.append(replace[key])  # type: ignore[arg-type]
            done.add(key)
            continue
        out.append(data)
    for key, value in replace.items():
        if key not in done and value is not None:
            out.append(value)
    return b"".join(out)


def _fields(head: bytes) -> list[tuple[str | None, bytes]]:
    """(name, raw bytes incl. continuation lines) for each field; junk kept as it is.

    Lines end at LF only, as `relay.message` splits them: a bare CR stays inside its
    field, so replacing the field replaces all of it."""
    lines = head.split(b"\n")
    lines = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    fields: list[tuple[str | None, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            name, data = fields[-1]
            fields[-1] = (name, data + line)
            continue
        m = _FIELD_START.match(line)
        fields.append((m.group(1).decode("ascii") if m else None, line))
    return fields


def quote_param(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filename_params(name: str) -> str:
    """`filename*=` (RFC 2231) for modern readers and an RFC 2047 `filename=` for Outlook."""
    name = clean(name).strip()
    pct = urllib.parse.quote(name.encode("utf-8"), safe="")
    return f"filename*=utf-8''{pct}; filename=\"{' '.join(encoded_words(name))}\""

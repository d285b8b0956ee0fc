"""Decoders for the legacy Vietnamese encodings, built from the mapping tables.

The tables in `tables/` are copied from the project's shared research data
(each file's header names its source: UniKey/VnConv, GNU libiconv, Mozilla,
CPython). Decoders work on "byte strings": a `str` whose code points are all
below 256, one per byte (`bytes.decode("latin-1")`). That lets the same decoder
undo both raw legacy bytes and mojibake (legacy bytes that were read as
Windows-1252 and saved as UTF-8), which only differ in how we get the bytes back.
"""

from __future__ import annotations

import codecs as pycodecs
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE_DIR = Path(__file__).parent / "tables"


def _rows(name: str) -> list[tuple[bytes, str, str]]:
    """(bytes, text, note) for each row of a table; column 3 (code points) is authoritative."""
    rows = []
    with (TABLE_DIR / name).open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            data = bytes(int(h, 16) for h in cols[1].split())
            text = "".join(chr(int(cp[2:], 16)) for cp in cols[2].split())
            rows.append((data, text, cols[3] if len(cols) > 3 else ""))
    return rows


def _windows_1252() -> dict[int, str]:
    """Byte -> character as mail clients read 8-bit text: Windows-1252, Latin-1 where undefined."""
    table = {}
    for b in range(0x80, 0x100):
        try:
            table[b] = bytes([b]).decode("cp1252")
        except UnicodeDecodeError:
            table[b] = chr(b)
    return table


CP1252 = _windows_1252()
READ_1252 = {b: ch for b, ch in CP1252.items() if ord(ch) != b}


def _latin1_fallback(err: UnicodeError) -> tuple[str | bytes, int]:
    """Windows-1252 with Latin-1 for its five undefined bytes, both ways (C speed)."""
    if isinstance(err, UnicodeDecodeError):
        return err.object[err.start:err.end].decode("latin-1"), err.end
    if isinstance(err, UnicodeEncodeError):
        chunk = err.object[err.start:err.end]
        if max(chunk) <= "\xff":
            return chunk.encode("latin-1"), err.end
    raise err


pycodecs.register_error("relay-tcvn-latin1", _latin1_fallback)


def read_1252(data: bytes) -> str:
    """8-bit bytes as a mail client shows them: Windows-1252 (Latin-1 where undefined)."""
    return data.decode("cp1252", "relay-tcvn-latin1")


def unread_1252(text: str) -> str | None:
    """Undo a Windows-1252 (or Latin-1) reading: the byte string, or None if impossible."""
    try:
        return text.encode("cp1252", "relay-tcvn-latin1").decode("latin-1")
    except UnicodeEncodeError:
        return None


@dataclass(frozen=True)
class Codec:
    name: str
    label: str  # how findings name it
    decode: Callable[[str], str]  # byte string -> text (NFC)
    letter_bytes: frozenset[int]  # bytes >= 0x80 or C0 that carry letters
    # bytes that are a letter on their own (VNI's mark bytes are letters only after a vowel)
    lone_letters: frozenset[int] = frozenset()


def _single_byte(name: str, label: str, table: str, compose: bool = False) -> Codec:
    mapping: dict[int, str] = {}
    for data, text, note in _rows(table):
        if len(data) != 1:
            continue
        if "NO UPPERCASE" in note and data[0] in mapping:
            continue  # TCVN3: capitals share the lowercase byte; decode to the lowercase
        if "NO UPPERCASE" in note:
            text = text.lower()
        mapping[data[0]] = text
    letters = frozenset(mapping)
    # bytes the table does not use keep their Windows-1252 reading
    full = {b: READ_1252.get(b, chr(b)) for b in range(0x80, 0x100)}
    full.update(mapping)
    trans = str.maketrans({b: ch for b, ch in full.items() if ch != chr(b)})

    def decode(s: str) -> str:
        out = s.translate(trans)
        return unicodedata.normalize("NFC", out) if compose else out

    return Codec(name, label, decode, letters, letters)


def _multi_byte(name: str, label: str, table: str) -> Codec:
    mapping: dict[str, str] = {}
    for data, text, _ in _rows(table):
        mapping[data.decode("latin-1")] = text
    # VNI: a mark byte of the other case after a base letter still means that mark
    # (typed with Caps Lock or a mixed-case font); the base letter decides the case.
    for key, text in list(mapping.items()):
        if len(key) == 2 and ord(key[1]) >= 0xC0:
            other = chr(ord(key[1]) ^ 0x20)
            variant = key[0] + other
            if variant not in mapping and ord(other) >= 0xC0:
                mapping[variant] = text
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    letters = frozenset(ord(k[-1]) for k in keys if ord(k[-1]) >= 0x80)
    lone = frozenset(ord(k) for k in keys if len(k) == 1 and ord(k) >= 0x80)
    fallback = str.maketrans(READ_1252)

    def decode(s: str) -> str:
        return pattern.sub(lambda m: mapping[m.group()], s).translate(fallback)

    return Codec(name, label, decode, letters, lone)


def _viqr() -> tuple[re.Pattern[str], dict[str, str]]:
    mapping = {data.decode("ascii"): text for data, text, _ in _rows("viqr.tsv")}
    mapping["Dd"] = "Đ"
    keys = sorted(mapping, key=len, reverse=True)
    return re.compile("|".join(re.escape(k) for k in keys)), mapping


_CHUNK = re.compile(r"\S+")


def _utf8() -> Codec:
    """UTF-8 bytes read as Windows-1252: Unicode Vietnamese mislabelled, or encoded twice."""

    def whole(s: str) -> str:
        try:
            return s.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return s

    def decode(s: str) -> str:
        out = whole(s)
        return _CHUNK.sub(lambda m: whole(m.group()), s) if out is s else out

    return Codec("utf8", "UTF-8", decode, frozenset(range(0x80, 0x100)))


@cache
def codecs() -> dict[str, Codec]:
    """Every legacy codec by name; built once, on first use."""
    found = [
        _single_byte("tcvn3", "TCVN3 (ABC, .VnTime)", "tcvn3_abc.tsv"),
        _multi_byte("vni", "VNI-Windows", "vni_windows.tsv"),
        _single_byte("viscii", "VISCII", "viscii.tsv"),
        _single_byte("vps", "VPS", "vps.tsv"),
        _single_byte("cp1258", "Windows-1258", "cp1258.tsv", compose=True),
        _single_byte("tcvn5712", "TCVN 5712:1993 (VN1)", "tcvn5712_vn1_libiconv.tsv",
                     compose=True),
        _utf8(),
    ]
    return {c.name: c for c in found}


@cache
def viqr() -> tuple[re.Pattern[str], dict[str, str]]:
    return _viqr()


@cache
def _encode_map(name: str) -> dict[str, bytes]:
    table = {"tcvn3": "tcvn3_abc.tsv", "vni": "vni_windows.tsv", "viscii": "viscii.tsv",
             "vps": "vps.tsv", "tcvn5712": "tcvn5712_vn1_libiconv.tsv", "viqr": "viqr.tsv"}[name]
    out: dict[str, bytes] = {}
    for data, text, _ in _rows(table):
        if len(text) == 1:
            out.setdefault(text, data)
    if name == "viqr":
        out["đ"], out["Đ"] = b"dd", b"DD"
    return out


def encode_legacy(text: str, name: str) -> bytes:
    """Text in a legacy encoding, as the old tools wrote it (for tests and benchmarks).

    TCVN3 writes toned capitals with the lowercase byte, like UniKey; Windows-1258 writes
    precomposed letters where it has them and a combining tone byte otherwise.
    """
    text = unicodedata.normalize("NFC", text)
    if name == "cp1258":
        out = bytearray()
        for ch in text:
            try:
                out += ch.encode("cp1258")
            except UnicodeEncodeError:
                nfd = unicodedata.normalize("NFD", ch)
                tone = [c for c in nfd if c in "\u0300\u0301\u0303\u0309\u0323"]
                base = unicodedata.normalize("NFC", "".join(c for c in nfd if c not in tone))
                out += (base + "".join(tone)).encode("cp1258", "replace")
        return bytes(out)
    mapping = _encode_map(name)
    return b"".join(mapping.get(ch) or _other(ch) for ch in text)


def _other(ch: str) -> bytes:
    """A character the table has no letter for, as a Windows program would write it."""
    try:
        return ch.encode("cp1252")
    except UnicodeEncodeError:
        return ch.encode("latin-1") if ord(ch) < 256 else b"?"

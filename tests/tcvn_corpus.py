"""The labelled test set for the TCVN 6909 detector, generated from two text files.

`data/tcvn/vietnamese.txt` is Vietnamese administrative text in NFC (capitals and every
tone); `data/tcvn/western.txt` is French, German, Spanish, Portuguese, English and a
few other Western European lines. Each Vietnamese line and each five-line document is
encoded with every legacy table (and mojibake, VIQR, NFD forms are made from them).
`subjects()` is the short-text set (2-6-word subjects). Used by the tests and by
`bench/tcvn_detection.py`.
"""

from __future__ import annotations

import base64
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relay.tcvn.tables import encode_legacy

DATA = Path(__file__).parent / "data" / "tcvn"
DISGUISED = ("tcvn3", "vni", "viscii", "vps", "cp1258")
MOJIBAKE = ("tcvn3", "vni")
DECLARED = {"viscii": "VISCII", "vps": "x-viet-vps", "cp1258": "windows-1258",
            "tcvn5712": "TCVN5712-1"}


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # what is being measured: "tcvn3 disguised", "western" ...
    data: bytes
    charset: str | None
    expect: str | None  # expected encoding name (None: must not be flagged)
    text: str  # the correct Unicode NFC text
    kind: str = "line"  # line | doc


def vietnamese() -> list[str]:
    return [line for line in (DATA / "vietnamese.txt").read_text("utf-8").split("\n") if line]


def western() -> list[str]:
    return [line for line in (DATA / "western.txt").read_text("utf-8").split("\n") if line]


def _units(lines: list[str], size: int = 5) -> Iterator[tuple[str, str]]:
    for line in lines:
        yield "line", line
    for i in range(0, len(lines), size):
        yield "doc", "\n".join(lines[i:i + size])


def mojibake(data: bytes) -> bytes:
    """Legacy bytes read as Windows-1252 (Latin-1 where undefined) and saved as UTF-8."""
    return "".join(
        bytes([b]).decode("cp1252", "ignore") or chr(b) for b in data
    ).encode("utf-8")


def cases() -> Iterator[Case]:
    vi, we = vietnamese(), western()
    for n, (kind, text) in enumerate(_units(vi)):
        for enc in DISGUISED:
            charset = (None, "windows-1252", "iso-8859-1", "us-ascii")[n % 4]
            yield Case(f"{enc}-{kind}{n}", f"{enc} disguised", encode_legacy(text, enc),
                       charset, enc, text, kind)
        for enc in MOJIBAKE:
            yield Case(f"{enc}-moji-{kind}{n}", f"{enc} mojibake",
                       mojibake(encode_legacy(text, enc)), "utf-8", enc, text, kind)
        for enc, label in DECLARED.items():
            yield Case(f"{enc}-decl-{kind}{n}", f"{enc} declared", encode_legacy(text, enc),
                       label, enc, text, kind)
        yield Case(f"utf8-label-{kind}{n}", "utf-8 labelled western", text.encode(),
                   ("windows-1252", "iso-8859-1")[n % 2], "utf8", text, kind)
        yield Case(f"utf8-twice-{kind}{n}", "utf-8 encoded twice", mojibake(text.encode()),
                   "utf-8", "utf8", text, kind)
        yield Case(f"viqr-{kind}{n}", "viqr", encode_legacy(text, "viqr"), "us-ascii", "viqr",
                   text, kind)
        yield Case(f"nfd-{kind}{n}", "nfd", unicodedata.normalize("NFD", text).encode(),
                   "utf-8", "nfd", text, kind)
        yield Case(f"vi-{kind}{n}", "vietnamese utf-8", text.encode(), "utf-8", None, text, kind)
    for n, (kind, text) in enumerate(_units(we)):
        charset = ("windows-1252", "iso-8859-1", None)[n % 3]
        yield Case(f"we-{kind}{n}", "western 8-bit", text.encode("cp1252"), charset, None,
                   text, kind)
        yield Case(f"weu-{kind}{n}", "western utf-8", text.encode(), "utf-8", None, text, kind)
        yield Case(f"wed-{kind}{n}", "western utf-8 NFD",
                   unicodedata.normalize("NFD", text).encode(), "utf-8", None, text, kind)


# --- short texts: subjects, display names -------------------------------------------------


def _lines(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text("utf-8").split("\n") if line]


def _windows(lines: list[str], n: int, seed: int) -> list[str]:
    """n runs of 2-6 words cut from the lines (a fixed seed: the same set every run)."""
    rnd = random.Random(seed)
    words = [line.split() for line in lines if len(line.split()) >= 2]
    out = []
    while len(out) < n:
        ws = rnd.choice(words)
        k = rnd.randint(2, 6)
        i = rnd.randint(0, max(0, len(ws) - k))
        out.append(" ".join(ws[i:i + k]))
    return out


def q_word(data: bytes, charset: str = "windows-1252") -> str:
    """An RFC 2047 Q-encoded word, as Outlook writes an 8-bit subject."""
    return f"=?{charset}?Q?" + "".join(
        f"={c:02X}" if c > 127 or c in b" =?_" else chr(c) for c in data) + "?="


def b_word(data: bytes, charset: str = "utf-8") -> str:
    return f"=?{charset}?B?" + base64.b64encode(data).decode("ascii") + "?="


@dataclass(frozen=True)
class Header:
    """A Subject field value as it arrives (8-bit bytes as surrogate escapes)."""

    name: str
    group: str
    value: str
    expect: str | None
    text: str


def subjects(windows: int = 600) -> Iterator[Header]:
    """2-6-word subjects in TCVN3 and VNI (raw 8-bit, Q-encoded Windows-1252, UTF-8
    mojibake), and Western European and correct Vietnamese ones that must stay clean.

    `data/tcvn/subjects.txt` holds administrative subjects written for this set;
    `subjects_western.txt` Western ones chosen to be hard (på, så, aún, n°, Nº, déjà);
    runs of words cut from the longer test texts add variety.
    """
    vi = [s for s in _lines("subjects.txt") if 2 <= len(s.split()) <= 6]
    vi += _windows(vietnamese(), windows, 1)
    for n, text in enumerate(vi):
        for enc in ("tcvn3", "vni"):
            data = encode_legacy(text, enc)
            if data.isascii():
                continue
            raw = data.decode("utf-8", "surrogateescape")
            for form, value in (("8-bit", raw), ("encoded word", q_word(data)),
                                ("mojibake", b_word(mojibake(data)))):
                yield Header(f"{enc}-{form}-{n}", f"{enc} {form}", value, enc, text)
        yield Header(f"vi-{n}", "vietnamese utf-8", b_word(text.encode()), None, text)
    we = _lines("subjects_western.txt") + _windows(western(), windows, 2)
    for n, text in enumerate(we):
        data = text.encode("cp1252", "replace")
        yield Header(f"we8-{n}", "western 8-bit", data.decode("utf-8", "surrogateescape"),
                     None, text)
        yield Header(f"weq-{n}", "western encoded word", q_word(data, "iso-8859-1"), None,
                     text)
        yield Header(f"weu-{n}", "western utf-8", b_word(text.encode()), None, text)

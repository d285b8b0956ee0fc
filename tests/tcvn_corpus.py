"""The labelled test set for the TCVN 6909 detector, generated from two text files.

`data/tcvn/vietnamese.txt` is Vietnamese administrative text in NFC (capitals and every
tone); `data/tcvn/western.txt` is French, German, Spanish, Portuguese, English and a
few other Western European lines. Each Vietnamese line and each five-line document is
encoded with every legacy table (and mojibake, VIQR, NFD forms are made from them).
Used by the tests and by `bench/tcvn_detection.py`.
"""

from __future__ import annotations

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

"""The text of a document as nodes with fonts, found legacy and converted in place.

Every format (OOXML, ODF, RTF) is read into `TextNode`s: a piece of text, the font it
is set in, the block (paragraph, cell, shared string) it belongs to, and a way to write
it back. Then one procedure decides for all of them:

1. A node set in a legacy font (.VnTime, VNI-Times ...) is legacy text by construction:
   the font's table converts it exactly (what the reader saw is what comes out).
2. The other nodes are read block by block with the detector (`inspect_text`): text
   typed in TCVN3 whose font was later changed still shows as 'Céng hßa' and is found
   like mojibake in a mail body. A block is converted only if the detector says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from relay.tcvn.detect import block_capitals, decode_as, inspect_text
from relay.tcvn.fonts import LegacyFont

# tables a document can hold as text: Word and LibreOffice store what a legacy font
# shows as its Windows-1252 reading; Windows-1258 or VISCII input was made Unicode
DOCUMENT_ENCODINGS = ("tcvn3", "vni")
MAX_BLOCK_CHARS = 200_000  # the detector reads at most this much of one block
MAX_DETECT_CHARS = 2_000_000  # and this much of one document's text not in legacy fonts


@dataclass
class TextNode:
    text: str
    font: LegacyFont | None
    block: int
    write: Callable[[str], None]
    part: str = ""  # the member (or section) it came from
    changed: bool = False


@dataclass
class Conversion:
    """What was (or would be) converted in one document."""

    fonts: list[str] = field(default_factory=list)  # legacy fonts that carry text
    encodings: list[str] = field(default_factory=list)  # tables the text came from
    nodes: int = 0  # text nodes whose text changes
    sample: str = ""  # a little of the converted text, for the finding

    @property
    def found(self) -> bool:
        return bool(self.fonts or self.encodings)


def _add(items: list[str], value: str) -> None:
    if value not in items:
        items.append(value)


def convert_nodes(nodes: list[TextNode], apply: bool) -> Conversion:
    """Decide which nodes are legacy and (if `apply`) write their Unicode text back."""
    out = Conversion()
    plain: dict[int, list[TextNode]] = {}
    legacy: dict[int, list[TextNode]] = {}
    for node in nodes:
        if node.font is None:
            plain.setdefault(node.block, []).append(node)
        else:
            legacy.setdefault(node.block, []).append(node)
    for ns in legacy.values():
        new = [decode_as(n.text, n.font.encoding, n.font.capitals) for n in ns if n.font]
        tcvn3 = [i for i, n in enumerate(ns) if n.font and n.font.encoding == "tcvn3"
                 and not n.font.capitals]
        if tcvn3:
            fixed = block_capitals([new[i] for i in tcvn3], [ns[i].text for i in tcvn3])
            for i, text in zip(tcvn3, fixed, strict=True):
                new[i] = text
        for node, text in zip(ns, new, strict=True):
            assert node.font is not None
            _add(out.fonts, node.font.name)
            if text != node.text:
                _add(out.encodings, node.font.encoding)
                _change(out, node, text, apply)
    blocks = {b: "".join(n.text for n in ns)[:MAX_BLOCK_CHARS] for b, ns in plain.items()}
    whole = "\n".join(t for t in blocks.values() if not t.isascii())[:MAX_DETECT_CHARS]
    if not whole:
        return out
    budget = MAX_DETECT_CHARS  # the detector's cost grows with the text: bounded per document
    doc = inspect_text(whole)
    hint = doc.encoding if doc.legacy and doc.encoding in DOCUMENT_ENCODINGS else None
    if hint is None:
        return out
    for block, ns in plain.items():
        text = blocks[block]
        if text.isascii():
            continue
        budget -= len(text)
        if budget < 0:
            break
        det = inspect_text(text, hint=hint)
        if not det.legacy or det.encoding != hint:
            continue
        _add(out.encodings, hint)
        new = [decode_as(node.text, hint) for node in ns]
        if hint == "tcvn3":
            new = block_capitals(new, [node.text for node in ns])
        for node, text in zip(ns, new, strict=True):
            if text != node.text:
                _change(out, node, text, apply)
    return out


def _change(out: Conversion, node: TextNode, new: str, apply: bool) -> None:
    out.nodes += 1
    if len(out.sample) < 120:
        out.sample = (out.sample + " " + new).strip()[:120]
    if apply:
        node.write(new)
        node.text = new
        node.changed = True

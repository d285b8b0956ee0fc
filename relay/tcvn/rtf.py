"""RTF: a small tokenizer that knows fonts, and a rewrite that touches only legacy text.

Why our own: `striprtf` and friends return plain text and forget which font each piece
was in, and nothing on PyPI rewrites RTF. RTF is a flat token stream with groups, so a
tokenizer that follows `\\fN` (the font), `\\ucN` and `\\uN` (Unicode with fallback) and
skips destinations that hold no text is short. Legacy text is replaced in place by
`\\uN?` escapes and the font table names a Unicode font; every other byte is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from relay.tcvn.container import DocumentError, OverLimits
from relay.tcvn.fonts import LegacyFont, legacy_font, unicode_font
from relay.tcvn.tables import read_1252
from relay.tcvn.textnodes import Conversion, TextNode, convert_nodes

MAX_DEPTH = 512  # group nesting; Word writes a few dozen
_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?"  # 1, 2: control word and parameter
    rb"|\\'([0-9a-fA-F]{2})"  # 3: a byte in hex
    rb"|\\([^a-zA-Z'])"  # 4: control symbol (\\ \{ \} \~ \- \* ...)
    rb"|([{}])"  # 5: group
    rb"|[\r\n]+"  # line breaks mean nothing in RTF
    rb"|([^\\{}\r\n]+)"  # 6: text
    rb"|\\",  # a lone backslash at the end
    re.S)
# destinations whose text is not document text (font table handled on its own)
_SKIP = frozenset(b"""colortbl stylesheet info pict object themedata datastore latentstyles
    listtable listoverridetable rsidtbl generator xmlnstbl mmathPr fldinst bkmkstart bkmkend
    filetbl revtbl pgdsctbl""".split())
_BREAKS = frozenset({b"par", b"line", b"sect", b"page", b"cell", b"row", b"tab"})


@dataclass
class _State:
    font: int | None = None
    uc: int = 1
    skip: bool = False
    fonttbl: bool = False


@dataclass
class _Node:
    start: int
    end: int
    # bytes as written (raw or \\'hh: their Windows-1252 reading is what Word shows in a
    # Unicode font) and str for characters that are Unicode already (\\uN, \\{)
    pieces: list[bytearray | str] = field(default_factory=list)
    font: int | None = None
    uc: int = 1

    def add(self, piece: bytes | str) -> None:
        last = self.pieces[-1] if self.pieces else None
        if isinstance(piece, bytes) and isinstance(last, bytearray):
            last += piece  # amortised: a node of many \\'hh tokens stays linear
        else:
            self.pieces.append(bytearray(piece) if isinstance(piece, bytes) else piece)


def _scan(data: bytes) -> tuple[dict[int, tuple[str, int, int]], list[_Node], list[int]]:
    """Font table (number -> (name, start, end of the name)), text nodes, paragraph starts."""
    if not data.lstrip().startswith(b"{\\rtf"):
        raise DocumentError("not RTF")
    fonts: dict[int, tuple[str, int, int]] = {}
    nodes: list[_Node] = []
    paras = [0]
    stack: list[_State] = []
    state = _State()
    node: _Node | None = None
    skip_chars = 0
    font_entry: int | None = None
    font_name_start = -1

    def close() -> None:
        nonlocal node
        if node is not None and node.end > node.start:
            nodes.append(node)
        node = None

    def text_node(pos: int) -> _Node:
        nonlocal node
        if node is None or node.font != state.font:
            close()
            node = _Node(pos, pos, font=state.font, uc=state.uc)
        return node

    for m in _TOKEN.finditer(data):
        word, param, hexbyte, symbol, brace, text = m.groups()
        if brace == b"{":
            close()
            if len(stack) >= MAX_DEPTH:
                raise OverLimits(f"RTF groups nested deeper than {MAX_DEPTH}")
            stack.append(state)
            state = _State(state.font, state.uc, state.skip, state.fonttbl)
            continue
        if brace == b"}":
            close()
            if state.fonttbl and font_entry is not None and font_name_start >= 0:
                _font_name(data, fonts, font_entry, font_name_start, m.start())
            if not stack:
                break  # the document's last group closed
            state = stack.pop()
            continue
        if state.fonttbl:
            if symbol == b"*":
                state.skip = True  # {\*\panose ...}, {\*\falt ...}: not the name
            elif state.skip:
                pass
            elif word == b"f" and param is not None:
                font_entry, font_name_start = int(param), -1
            elif text is not None and font_entry is not None:
                if font_name_start < 0:
                    font_name_start = m.start()
                if b";" in text:
                    _font_name(data, fonts, font_entry, font_name_start,
                               m.start() + text.index(b";"))
                    font_entry = None
            continue
        if word is not None:
            if word == b"fonttbl":
                close()
                state.fonttbl = True
                continue
            if word in _SKIP:
                close()
                state.skip = True
                continue
            if state.skip:
                continue
            if word == b"u" and param is not None:
                n = text_node(m.start())
                n.add(_unicode(int(param)))
                n.end = m.end()
                skip_chars = state.uc
                continue
            if word == b"uc" and param is not None:
                close()
                state.uc = max(0, min(int(param), 10))
                continue
            if word == b"f" and param is not None:
                close()
                state.font = int(param)
                continue
            close()
            if word in _BREAKS:
                paras.append(len(nodes))
            continue
        if state.skip:
            continue
        if symbol is not None:
            if symbol == b"*":
                state.skip = True
                close()
            elif symbol in (b"\\", b"{", b"}"):
                n = text_node(m.start())
                n.add(symbol.decode())
                n.end = m.end()
            else:
                close()
            continue
        if hexbyte is not None:
            if skip_chars:
                skip_chars -= 1
                if node is not None:
                    node.end = m.end()
                continue
            n = text_node(m.start())
            n.add(bytes([int(hexbyte, 16)]))
            n.end = m.end()
            continue
        if text is not None:
            if skip_chars:
                k = min(skip_chars, len(text))
                skip_chars -= k
                if node is not None:
                    node.end = m.start() + k
                text = text[k:]
                if not text:
                    continue
                start = m.end() - len(text)
            else:
                start = m.start()
            n = text_node(start)
            n.add(bytes(text))
            n.end = m.end()
    close()
    return fonts, nodes, paras


def _font_name(data: bytes, fonts: dict[int, tuple[str, int, int]], entry: int, start: int,
               end: int) -> None:
    name = data[start:end].split(b";")[0]
    fonts.setdefault(entry, (name.decode("latin-1").strip(), start, start + len(name)))


def _unicode(value: int) -> str:
    value = value + 65536 if value < 0 else value
    return chr(value) if 0 < value < 0xD800 or 0xE000 <= value < 0x110000 else "\ufffd"


def _node_text(node: _Node) -> str:
    """The node as Windows-1252 reading of its bytes, \\u characters as themselves."""
    return "".join(read_1252(p) if isinstance(p, bytearray) else p for p in node.pieces)


def _escape(text: str) -> bytes:
    out = bytearray()
    for ch in text:
        if ch in "\\{}":
            out += b"\\" + ch.encode()
        elif " " <= ch <= "~":
            out += ch.encode()
        else:
            code = ord(ch)
            if code > 0xFFFF:  # RTF \u is 16-bit: write the surrogate pair
                code -= 0x10000
                for unit in (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)):
                    out += b"\\u%d?" % (unit - 65536 if unit > 32767 else unit)
                continue
            out += b"\\u%d?" % (code - 65536 if code > 32767 else code)
    return bytes(out)


def process(data: bytes, convert: bool,
            font_map: dict[str, str] | None = None) -> tuple[Conversion, bytes | None]:
    fonts, nodes, paras = _scan(data)
    legacy: dict[int, LegacyFont] = {}
    for number, (name, _, _) in fonts.items():
        lf = legacy_font(name)
        if lf is not None:
            legacy[number] = lf
    replaced: dict[int, str] = {}
    text_nodes = []
    block = 0
    starts = set(paras)
    for i, node in enumerate(nodes):
        if i in starts:
            block += 1
        lf = legacy.get(node.font) if node.font is not None else None

        def write(text: str, i: int = i) -> None:
            replaced[i] = text

        text_nodes.append(TextNode(_node_text(node), lf, block, write))
    found = convert_nodes(text_nodes, apply=convert)
    if not convert or not (replaced or legacy):
        return found, None
    edits: list[tuple[int, int, bytes]] = []
    for i, text in replaced.items():
        node = nodes[i]
        body = _escape(text)
        if node.uc != 1:  # our \uN? escapes carry one fallback character
            body = b"{\\uc1 " + body + b"}"
        edits.append((node.start, node.end, body))
    for _, (name, start, end) in fonts.items():
        if legacy_font(name) is not None:
            edits.append((start, end, unicode_font(name, font_map).encode("ascii")))
    out = bytearray(data)
    for start, end, body in sorted(edits, reverse=True):
        out[start:end] = body
    return found, bytes(out)


def text_blocks(data: bytes) -> list[str]:
    """The text of each paragraph, legacy bytes read as Windows-1252 (as Word shows them
    in a Unicode font)."""
    _, nodes, paras = _scan(data)
    starts = set(paras)
    out: list[str] = []
    for i, node in enumerate(nodes):
        if i in starts or not out:
            out.append("")
        out[-1] += _node_text(node)
    return out

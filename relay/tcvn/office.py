"""OOXML (.docx, .xlsx, .pptx) and ODF (.odt, .ods, .odp): text nodes with their fonts.

Plain `zipfile` + `lxml` rather than python-docx/openpyxl/odfpy: those read a document
into their own model and write a new one (losing what they do not model, and parsing
XML without our bounds), while here only the members whose text or font names change
are re-serialised and every other member is copied as it was. Fonts are resolved the
way the applications do, in short: the run's own font, else its character style, else
its paragraph style, else the document default (Word); the cell's font (Excel); the
span's, paragraph's or cell's style with its parents (ODF).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lxml import etree

from relay.tcvn.container import DocumentError, Limits, ZipDocument, parse_xml, serialise
from relay.tcvn.fonts import legacy_font, unicode_font
from relay.tcvn.textnodes import Conversion, TextNode, convert_nodes

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
S = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
A = "http://schemas.openxmlformats.org/drawingml/2006/main"
TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
STYLE = "urn:oasis:names:tc:opendocument:xmlns:style:1.0"
OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
FO = "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"
SVG = "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


@dataclass
class Parts:
    """The XML members read from one document, the text nodes and the font attributes."""

    doc: ZipDocument
    limits: Limits
    trees: dict[str, tuple[etree._Element, bytes]] = field(default_factory=dict)
    nodes: list[TextNode] = field(default_factory=list)
    fonts: list[tuple[etree._Element, str, str]] = field(default_factory=list)  # el, attr, part
    blocks: int = 0

    def add(self, text: str, font: str | None, block: int, writer: Callable[[str], None],
            part: str) -> None:
        self.nodes.append(TextNode(text, legacy_font(font), block, writer, part))

    def tree(self, name: str) -> etree._Element | None:
        if name in self.trees:
            return self.trees[name][0]
        if name not in self.doc:
            return None
        data = self.doc.read(name)
        root = parse_xml(data, name, self.limits)
        self.trees[name] = (root, data)
        return root

    def block(self) -> int:
        self.blocks += 1
        return self.blocks

    def font_attr(self, el: etree._Element, attr: str, part: str) -> None:
        if legacy_font(el.get(attr)) is not None:
            self.fonts.append((el, attr, part))

    def members(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return sorted(n for n in self.doc.names if rx.fullmatch(n))


def _text_writer(el: etree._Element) -> Callable[[str], None]:
    def write(text: str) -> None:
        el.text = text
    return write


def _tail_writer(el: etree._Element) -> Callable[[str], None]:
    def write(text: str) -> None:
        el.tail = text
    return write


# --- Word ------------------------------------------------------------------------------

_RFONT_ATTRS = [q(W, a) for a in ("hAnsi", "ascii", "cs", "eastAsia")]


def _rfonts(rpr: etree._Element | None) -> str | None:
    """The font an rPr gives Latin text (hAnsi covers the bytes 0x80-0xFF legacy text uses)."""
    if rpr is None:
        return None
    fonts = rpr.find(q(W, "rFonts"))
    if fonts is None:
        return None
    return fonts.get(q(W, "hAnsi")) or fonts.get(q(W, "ascii"))


def _word_styles(parts: Parts) -> tuple[dict[str, str | None], str | None, str | None]:
    """Font of each style (basedOn followed), the default paragraph style, the doc default."""
    root = parts.tree("word/styles.xml")
    if root is None:
        return {}, None, None
    own: dict[str, tuple[str | None, str | None]] = {}
    default_para = None
    for style in root.iter(q(W, "style")):
        sid = style.get(q(W, "styleId"))
        if not sid:
            continue
        based = style.find(q(W, "basedOn"))
        own[sid] = (_rfonts(style.find(q(W, "rPr"))),
                    based.get(q(W, "val")) if based is not None else None)
        if style.get(q(W, "type")) == "paragraph" and style.get(q(W, "default")) in ("1", "true"):
            default_para = sid
    resolved: dict[str, str | None] = {}
    for sid in own:
        seen: set[str] = set()
        cur: str | None = sid
        font = None
        while cur and cur in own and cur not in seen:  # basedOn loops are possible
            seen.add(cur)
            font, cur = own[cur][0] or None, own[cur][1]
            if font:
                break
        resolved[sid] = font
    defaults = root.find(f"{q(W, 'docDefaults')}/{q(W, 'rPrDefault')}/{q(W, 'rPr')}")
    doc_default = _rfonts(defaults)
    for el in root.iter(q(W, "rFonts")):
        for attr in _RFONT_ATTRS:
            parts.font_attr(el, attr, "word/styles.xml")
    return resolved, default_para, doc_default


def read_docx(parts: Parts) -> None:
    styles, default_para, doc_default = _word_styles(parts)
    names = ["word/document.xml"] + parts.members(
        r"word/(header|footer)\d*\.xml|word/(footnotes|endnotes|comments)\.xml")
    for name in names:
        root = parts.tree(name)
        if root is None:
            continue
        for el in root.iter(q(W, "rFonts")):
            for attr in _RFONT_ATTRS:
                parts.font_attr(el, attr, name)
        for p in root.iter(q(W, "p")):
            block = parts.block()
            ppr = p.find(q(W, "pPr"))
            pstyle = ppr.find(q(W, "pStyle")) if ppr is not None else None
            para_font = styles.get(pstyle.get(q(W, "val"), "")) if pstyle is not None \
                else styles.get(default_para or "")
            for r in p.iter(q(W, "r")):
                if _parent_p(r) is not p:
                    continue  # a run of a nested paragraph (text box): read with that one
                rpr = r.find(q(W, "rPr"))
                font = _rfonts(rpr)
                if font is None and rpr is not None:
                    rstyle = rpr.find(q(W, "rStyle"))
                    if rstyle is not None:
                        font = styles.get(rstyle.get(q(W, "val"), ""))
                font = font or para_font or doc_default
                for t in r.iter(q(W, "t")):
                    if t.text:
                        parts.add(t.text, font, block, _text_writer(t), name)
    table = parts.tree("word/fontTable.xml")
    if table is not None:
        for el in table.iter(q(W, "font")):
            parts.font_attr(el, q(W, "name"), "word/fontTable.xml")


def _parent_p(el: etree._Element) -> etree._Element | None:
    cur = el.getparent()
    while cur is not None and cur.tag != q(W, "p"):
        cur = cur.getparent()
    return cur


# --- Excel -----------------------------------------------------------------------------


def read_xlsx(parts: Parts) -> None:
    styles = parts.tree("xl/styles.xml")
    font_names: list[str | None] = []
    xf_fonts: list[str | None] = []
    if styles is not None:
        fonts = styles.find(q(S, "fonts"))
        for font in (fonts if fonts is not None else []):
            name = font.find(q(S, "name"))
            font_names.append(name.get("val") if name is not None else None)
            if name is not None:
                parts.font_attr(name, "val", "xl/styles.xml")
        xfs = styles.find(q(S, "cellXfs"))
        for xf in (xfs if xfs is not None else []):
            try:
                xf_fonts.append(font_names[int(xf.get("fontId", "0"))])
            except (ValueError, IndexError):
                xf_fonts.append(None)

    def cell_font(c: etree._Element) -> str | None:
        try:
            return xf_fonts[int(c.get("s", "0"))]
        except (ValueError, IndexError):
            return xf_fonts[0] if xf_fonts else None

    shared_fonts: dict[int, str | None] = {}
    for name in parts.members(r"xl/worksheets/sheet\d+\.xml"):
        root = parts.tree(name)
        assert root is not None
        for c in root.iter(q(S, "c")):
            kind = c.get("t")
            if kind == "s":
                v = c.find(q(S, "v"))
                try:
                    index = int(v.text or "") if v is not None else -1
                except ValueError:
                    continue
                font = cell_font(c)
                if legacy_font(font) is not None or index not in shared_fonts:
                    shared_fonts[index] = font
            elif kind == "inlineStr":
                is_ = c.find(q(S, "is"))
                if is_ is not None:
                    _xlsx_string(parts, is_, cell_font(c), name)
    sst = parts.tree("xl/sharedStrings.xml")
    if sst is not None:
        for i, si in enumerate(sst.iterchildren(q(S, "si"))):
            _xlsx_string(parts, si, shared_fonts.get(i, xf_fonts[0] if xf_fonts else None),
                         "xl/sharedStrings.xml")


def _xlsx_string(parts: Parts, si: etree._Element, cell_font: str | None, part: str) -> None:
    block = parts.block()
    t = si.find(q(S, "t"))
    if t is not None and t.text:
        parts.add(t.text, cell_font, block, _text_writer(t), part)
    for r in si.iterchildren(q(S, "r")):
        rpr = r.find(q(S, "rPr"))
        rfont = rpr.find(q(S, "rFont")) if rpr is not None else None
        font = rfont.get("val") if rfont is not None else cell_font
        if rfont is not None:
            parts.font_attr(rfont, "val", part)
        t = r.find(q(S, "t"))
        if t is not None and t.text:
            parts.add(t.text, font, block, _text_writer(t), part)


# --- PowerPoint ------------------------------------------------------------------------

_TYPEFACE_TAGS = [q(A, t) for t in ("latin", "ea", "cs", "sym")]


def read_pptx(parts: Parts) -> None:
    theme_font = None
    for name in parts.members(r"ppt/theme/theme\d+\.xml"):
        root = parts.tree(name)
        assert root is not None
        minor = root.find(f".//{q(A, 'minorFont')}/{q(A, 'latin')}")
        if minor is not None and theme_font is None:
            theme_font = minor.get("typeface")
        for tag in _TYPEFACE_TAGS:
            for el in root.iter(tag):
                parts.font_attr(el, "typeface", name)
    names = parts.members(r"ppt/(slides|slideLayouts|slideMasters|notesSlides)/\w+\.xml")
    for name in names:
        root = parts.tree(name)
        assert root is not None
        for tag in _TYPEFACE_TAGS:
            for el in root.iter(tag):
                parts.font_attr(el, "typeface", name)
        for p in root.iter(q(A, "p")):
            block = parts.block()
            ppr = p.find(q(A, "pPr"))
            default = ppr.find(f"{q(A, 'defRPr')}/{q(A, 'latin')}") if ppr is not None else None
            para_font = default.get("typeface") if default is not None else None
            for r in p:
                if r.tag not in (q(A, "r"), q(A, "fld")):
                    continue
                latin = r.find(f"{q(A, 'rPr')}/{q(A, 'latin')}")
                font = latin.get("typeface") if latin is not None else para_font
                if font is None or font.startswith("+"):  # +mn-lt: the theme's font
                    font = theme_font
                t = r.find(q(A, "t"))
                if t is not None and t.text:
                    parts.add(t.text, font, block, _text_writer(t), name)


# --- ODF -------------------------------------------------------------------------------

_ODF_BLOCKS = {q(TEXT, "p"), q(TEXT, "h")}
_ODF_STYLED = {q(TEXT, "p"), q(TEXT, "h"), q(TEXT, "span"), q(TABLE, "table-cell")}


def _odf_styles(parts: Parts) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Font of every named style (parents followed) and the default per family."""
    faces: dict[str, str] = {}
    own: dict[str, tuple[str | None, str | None]] = {}
    defaults: dict[str, str | None] = {}
    for name in ("styles.xml", "content.xml"):
        root = parts.tree(name)
        if root is None:
            continue
        for face in root.iter(q(STYLE, "font-face")):
            family = face.get(q(SVG, "font-family")) or face.get(q(STYLE, "name")) or ""
            faces[face.get(q(STYLE, "name")) or ""] = family
            parts.font_attr(face, q(SVG, "font-family"), name)
        for el in root.iter(q(STYLE, "text-properties")):
            for attr in (q(FO, "font-family"), q(STYLE, "font-family-asian"),
                         q(STYLE, "font-family-complex")):
                parts.font_attr(el, attr, name)
        for st in root.iter(q(STYLE, "style"), q(STYLE, "default-style")):
            props = st.find(q(STYLE, "text-properties"))
            font = None
            if props is not None:
                font = props.get(q(FO, "font-family"))
                ref = props.get(q(STYLE, "font-name"))
                if font is None and ref is not None:
                    font = faces.get(ref, ref)
            if st.tag == q(STYLE, "default-style"):
                defaults[st.get(q(STYLE, "family")) or ""] = font
            else:
                own[st.get(q(STYLE, "name")) or ""] = (font, st.get(q(STYLE, "parent-style-name")))
    resolved: dict[str, str | None] = {}
    for sid in own:
        seen: set[str] = set()
        cur: str | None = sid
        font = None
        while cur and cur in own and cur not in seen:
            seen.add(cur)
            font, cur = own[cur]
            if font:
                break
        resolved[sid] = font
    return resolved, defaults


def read_odf(parts: Parts) -> None:
    styles, defaults = _odf_styles(parts)
    root = parts.tree("content.xml")
    if root is None:
        raise DocumentError("content.xml is missing")
    default = defaults.get("paragraph")
    for block_el in root.iter(*_ODF_BLOCKS):
        block = parts.block()
        base = _odf_inherited(block_el.getparent(), styles) or default
        for el, attr, font in _odf_texts(block_el, styles, base):
            text = getattr(el, attr)
            writer = _text_writer(el) if attr == "text" else _tail_writer(el)
            parts.add(text, font, block, writer, "content.xml")


def _odf_inherited(el: etree._Element | None, styles: dict[str, str | None]) -> str | None:
    """The font a block inherits from the table cell around it."""
    while el is not None:
        if el.tag in _ODF_STYLED:
            font = styles.get(el.get(q(TABLE, "style-name")) or el.get(q(TEXT, "style-name"))
                              or "")
            if font:
                return font
        el = el.getparent()
    return None


def _odf_texts(el: etree._Element, styles: dict[str, str | None],
               inherited: str | None) -> Iterator[tuple[etree._Element, str, str | None]]:
    """(element, 'text' or 'tail', font) for every text node inside a paragraph."""
    # iterative, in document order: the nesting depth is the parser's to bound, not ours
    stack: list[tuple[str, etree._Element, str | None]] = [("open", el, inherited)]
    while stack:
        step, cur, font = stack.pop()
        if step == "tail":
            if cur.tail:
                yield cur, "tail", font
            continue
        own = styles.get(cur.get(q(TEXT, "style-name")) or "") if cur.tag in _ODF_STYLED \
            else None
        inner = own or font
        if cur.text:
            yield cur, "text", inner
        for child in reversed(list(cur)):
            stack.append(("tail", child, inner))  # after the child: its tail, parent's font
            if child.tag not in _ODF_BLOCKS:  # a nested paragraph is a block of its own
                stack.append(("open", child, inner))


# --- the entry point ---------------------------------------------------------------------

READERS: dict[str, Callable[[Parts], None]] = {
    "docx": read_docx, "xlsx": read_xlsx, "pptx": read_pptx,
    "odt": read_odf, "ods": read_odf, "odp": read_odf,
}


def process(kind: str, data: bytes, limits: Limits, convert: bool,
            font_map: dict[str, str] | None = None) -> tuple[Conversion, bytes | None]:
    """Find legacy text in a zip-based document; with `convert`, the converted document
    (None when nothing changes). Raises DocumentError / OverLimits."""
    parts = Parts(ZipDocument(data, limits), limits)
    READERS[kind](parts)
    found = convert_nodes(parts.nodes, apply=convert)
    if not convert or not (found.nodes or parts.fonts):
        return found, None
    touched = {n.part for n in parts.nodes if n.changed}
    for el, attr, part in parts.fonts:
        el.set(attr, _renamed(el.get(attr) or "", attr.startswith("{urn:oasis"), font_map))
        touched.add(part)
    changed = {name: serialise(root, original) for name, (root, original) in parts.trees.items()
               if name in touched}
    return found, parts.doc.rewrite(changed)


def _renamed(value: str, odf: bool, font_map: dict[str, str] | None) -> str:
    """A legacy font name replaced; ODF quotes a family name that has spaces."""
    new = unicode_font(value, font_map)
    return f"'{new}'" if odf and " " in new else new


def text_blocks(kind: str, data: bytes, limits: Limits | None = None) -> list[str]:
    """The document's text, one string per paragraph, cell or shared string (for
    `relay text check` and the tests)."""
    limits = limits or Limits()
    parts = Parts(ZipDocument(data, limits), limits)
    READERS[kind](parts)
    blocks: dict[int, str] = {}
    for node in parts.nodes:
        blocks[node.block] = blocks.get(node.block, "") + node.text
    return list(blocks.values())

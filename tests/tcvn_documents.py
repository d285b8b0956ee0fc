"""Generated office documents for the TCVN 6909 attachment tests and bench.

Each document holds a few paragraphs of `data/tcvn/vietnamese.txt` (or western.txt) the
way a provincial office would send them: typed in TCVN3 under .VnTime (a heading in
.VnTimeH, typed in lower case), or in VNI under VNI-Times; TCVN3 text whose font was
later changed to Times New Roman; and clean ones (Unicode Vietnamese, Western text).
The files are built by hand from the smallest XML each format needs, so a test knows
exactly which bytes carry which font; LibreOffice opens them.
"""

from __future__ import annotations

import html
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from relay.tcvn import office, rtf
from relay.tcvn.markup import Html
from relay.tcvn.tables import encode_legacy, read_1252
from tests.tcvn_corpus import vietnamese, western

FORMATS = ("docx", "xlsx", "pptx", "odt", "ods", "rtf", "html", "txt", "csv")
# variant -> (text source, encoding of the bytes, font of the body, font of the heading)
VARIANTS = {
    "tcvn3 font": ("vi", "tcvn3", ".VnTime", ".VnTimeH"),
    "vni font": ("vi", "vni", "VNI-Times", "VNI-Times"),
    "tcvn3 no font": ("vi", "tcvn3", "Times New Roman", "Times New Roman"),
    "unicode vietnamese": ("vi", None, "Times New Roman", "Times New Roman"),
    "western": ("we", None, "Arial", "Arial"),
}
NO_FONTS = ("txt", "csv")  # plain text has no fonts: only the bytes tell


@dataclass(frozen=True)
class Doc:
    name: str
    format: str
    variant: str
    data: bytes
    expect: str | None  # the encoding to be found (None: must stay clean)
    paragraphs: list[str]  # the correct text, heading first


def documents(per_variant: int = 6, lines: int = 5) -> Iterator[Doc]:
    vi, we = vietnamese(), western()
    for fmt in FORMATS:
        for variant, (source, enc, body_font, head_font) in VARIANTS.items():
            if fmt in NO_FONTS and variant.endswith("no font"):
                continue
            text = vi if source == "vi" else we
            for n in range(per_variant):
                start = (n * lines) % max(1, len(text) - lines)
                paras = text[start:start + lines]
                if source == "vi":
                    paras = [paras[0].upper()] + paras[1:]  # a heading in capitals
                data = build(fmt, paras, enc, body_font, head_font)
                yield Doc(f"{fmt}-{variant.replace(' ', '-')}-{n}", fmt, variant, data, enc,
                          paras)


def _legacy(text: str, enc: str | None, heading: bool, head_font: str) -> str:
    """The text as the application stores it: the Windows-1252 reading of legacy bytes."""
    if enc is None:
        return text
    if heading and head_font.endswith("H"):
        text = text.lower()  # a .VnTimeH font draws the lower-case bytes as capitals
    return read_1252(encode_legacy(text, enc))


def _runs(text: str) -> list[str]:
    """Split a paragraph in up to three runs at spaces, as Word does at edits."""
    words = text.split(" ")
    if len(words) < 3:
        return [text]
    a, b = len(words) // 3, 2 * len(words) // 3
    return [" ".join(words[:a]) + " ", " ".join(words[a:b]) + " ", " ".join(words[b:])]


def build(fmt: str, paras: list[str], enc: str | None, body_font: str, head_font: str) -> bytes:
    if fmt in NO_FONTS:
        head_font = body_font  # no .VnTimeH to draw capitals: the heading is typed in them
    stored = [(_legacy(p, enc, i == 0, head_font), head_font if i == 0 else body_font)
              for i, p in enumerate(paras)]
    if fmt in NO_FONTS:  # legacy bytes, Western as Windows-1252, Unicode Vietnamese as UTF-8
        codec = "utf-8" if enc is None and body_font == "Times New Roman" else "cp1252"
        return (plain if fmt == "txt" else csv)(stored, codec)
    return {"docx": docx, "xlsx": xlsx, "pptx": pptx, "odt": odt, "ods": ods, "rtf": rtf_doc,
            "html": word_html}[fmt](stored)


def _zip(members: list[tuple[str, str | bytes]], stored_first: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (name, data) in enumerate(members):
            kind = zipfile.ZIP_STORED if stored_first and i == 0 else zipfile.ZIP_DEFLATED
            zf.writestr(zipfile.ZipInfo(name, (2024, 12, 1, 10, 0, 0)),
                        data.encode() if isinstance(data, str) else data, compress_type=kind)
    return out.getvalue()


XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
W_NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFDOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def docx(stored: list[tuple[str, str]]) -> bytes:
    # the body font comes from the Normal style (as in most real documents); the heading's
    # run names its own font
    body_font = stored[-1][1]
    paras = []
    for i, (text, font) in enumerate(stored):
        runs = []
        for piece in _runs(text):
            rpr = f'<w:rPr><w:rFonts w:ascii={quoteattr(font)} w:hAnsi={quoteattr(font)}/>' \
                  f'{"<w:b/>" if i == 0 else ""}</w:rPr>' if i == 0 else ""
            runs.append(f'<w:r>{rpr}<w:t xml:space="preserve">{escape(piece)}</w:t></w:r>')
        paras.append(f"<w:p>{''.join(runs)}</w:p>")
    document = (XML + f"<w:document {W_NS}><w:body>{''.join(paras)}"
                "<w:sectPr/></w:body></w:document>")
    styles = (XML + f"<w:styles {W_NS}><w:docDefaults><w:rPrDefault><w:rPr>"
              '<w:rFonts w:ascii="Calibri" w:hAnsi="Calibri"/></w:rPr></w:rPrDefault>'
              '</w:docDefaults><w:style w:type="paragraph" w:default="1" w:styleId="Normal">'
              f'<w:name w:val="Normal"/><w:rPr><w:rFonts w:ascii={quoteattr(body_font)} '
              f"w:hAnsi={quoteattr(body_font)}/></w:rPr></w:style></w:styles>")
    fonts = {f for _, f in stored}
    table = (XML + f"<w:fonts {W_NS}>"
             + "".join(f"<w:font w:name={quoteattr(f)}/>" for f in sorted(fonts)) + "</w:fonts>")
    types = (XML + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
             'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
             '<Override PartName="/word/document.xml" ContentType="application/vnd.openxml'
             'formats-officedocument.wordprocessingml.document.main+xml"/>'
             '<Override PartName="/word/styles.xml" ContentType="application/vnd.openxml'
             'formats-officedocument.wordprocessingml.styles+xml"/>'
             '<Override PartName="/word/fontTable.xml" ContentType="application/vnd.openxml'
             'formats-officedocument.wordprocessingml.fontTable+xml"/></Types>')
    rels = (XML + f'<Relationships xmlns="{RELS_NS}"><Relationship Id="rId1" '
            f'Type="{OFFDOC}/officeDocument" Target="word/document.xml"/></Relationships>')
    doc_rels = (XML + f'<Relationships xmlns="{RELS_NS}">'
                f'<Relationship Id="rId1" Type="{OFFDOC}/styles" Target="styles.xml"/>'
                f'<Relationship Id="rId2" Type="{OFFDOC}/fontTable" Target="fontTable.xml"/>'
                "</Relationships>")
    return _zip([("[Content_Types].xml", types), ("_rels/.rels", rels),
                 ("word/document.xml", document), ("word/_rels/document.xml.rels", doc_rels),
                 ("word/styles.xml", styles), ("word/fontTable.xml", table),
                 ("word/vbaData.bin", b"\x00opaque bytes kept as they are\xff")])


S_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'


def xlsx(stored: list[tuple[str, str]]) -> bytes:
    fonts = list(dict.fromkeys(["Calibri"] + [f for _, f in stored]))
    cells = []
    for i, (_, font) in enumerate(stored):
        cells.append(f'<row r="{i + 1}"><c r="A{i + 1}" t="s" s="{fonts.index(font)}">'
                     f"<v>{i}</v></c><c r=\"B{i + 1}\"><v>{i * 10}</v></c></row>")
    sheet = (XML + f"<worksheet {S_NS}><sheetData>{''.join(cells)}</sheetData></worksheet>")
    sst = (XML + f'<sst {S_NS} count="{len(stored)}" uniqueCount="{len(stored)}">'
           + "".join(f'<si><t xml:space="preserve">{escape(t)}</t></si>' for t, _ in stored)
           + "</sst>")
    styles = (XML + f'<styleSheet {S_NS}><fonts count="{len(fonts)}">'
              + "".join(f'<font><sz val="11"/><name val={quoteattr(f)}/></font>' for f in fonts)
              + '</fonts><fills count="1"><fill><patternFill patternType="none"/></fill></fills>'
              '<borders count="1"><border/></borders><cellStyleXfs count="1"><xf/></cellStyleXfs>'
              f'<cellXfs count="{len(fonts)}">'
              + "".join(f'<xf fontId="{i}" applyFont="1"/>' for i in range(len(fonts)))
              + "</cellXfs></styleSheet>")
    workbook = (XML + f'<workbook {S_NS} xmlns:r="{OFFDOC}"><sheets><sheet name="Sheet1" '
                'sheetId="1" r:id="rId1"/></sheets></workbook>')
    wb_rels = (XML + f'<Relationships xmlns="{RELS_NS}">'
               f'<Relationship Id="rId1" Type="{OFFDOC}/worksheet" Target="worksheets/sheet1.xml"/>'
               f'<Relationship Id="rId2" Type="{OFFDOC}/sharedStrings" Target="sharedStrings.xml"/>'
               f'<Relationship Id="rId3" Type="{OFFDOC}/styles" Target="styles.xml"/>'
               "</Relationships>")
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    types = (XML + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
             'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
             f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
             f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
             f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/>'
             f'<Override PartName="/xl/styles.xml" ContentType="{ct}.styles+xml"/></Types>')
    rels = (XML + f'<Relationships xmlns="{RELS_NS}"><Relationship Id="rId1" '
            f'Type="{OFFDOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>')
    return _zip([("[Content_Types].xml", types), ("_rels/.rels", rels),
                 ("xl/workbook.xml", workbook), ("xl/_rels/workbook.xml.rels", wb_rels),
                 ("xl/worksheets/sheet1.xml", sheet), ("xl/sharedStrings.xml", sst),
                 ("xl/styles.xml", styles)])


A_NS = ('xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"')


def pptx(stored: list[tuple[str, str]]) -> bytes:
    paras = "".join(
        f'<a:p><a:r><a:rPr lang="vi-VN"><a:latin typeface={quoteattr(font)}/></a:rPr>'
        f"<a:t>{escape(text)}</a:t></a:r></a:p>" for text, font in stored)
    slide = (XML + f"<p:sld {A_NS}><p:cSld><p:spTree><p:sp><p:txBody><a:bodyPr/>"
             f"{paras}</p:txBody></p:sp></p:spTree></p:cSld></p:sld>")
    types = (XML + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             '<Default Extension="xml" ContentType="application/xml"/>'
             '<Override PartName="/ppt/presentation.xml" ContentType="application/vnd.openxml'
             'formats-officedocument.presentationml.presentation.main+xml"/></Types>')
    return _zip([("[Content_Types].xml", types), ("ppt/presentation.xml",
                 XML + f"<p:presentation {A_NS}/>"), ("ppt/slides/slide1.xml", slide)])


ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
          'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
          'office:version="1.3"')


def _odf(kind: str, stored: list[tuple[str, str]]) -> bytes:
    fonts = list(dict.fromkeys(f for _, f in stored))
    faces = "".join(f'<style:font-face style:name={quoteattr(f)} '
                    f'svg:font-family={quoteattr(repr(f) if " " in f else f)}/>' for f in fonts)
    autos = "".join(
        f'<style:style style:name="T{i}" style:family="text"><style:text-properties '
        f'style:font-name={quoteattr(f)}/></style:style>' for i, f in enumerate(fonts))
    if kind == "odt":
        # the heading is one span; in the other paragraphs the second half inherits the
        # font of the paragraph (the default style)
        body = "".join(
            f'<text:p><text:span text:style-name="T{fonts.index(f)}">{escape(a)}</text:span>'
            f'{escape(b)}</text:p>'
            for a, b, f in ((*(_split2(t) if i else (t, "")), f)
                            for i, (t, f) in enumerate(stored)))
        # the second half of each paragraph inherits the paragraph's font (default style)
        body_xml = f"<office:text>{body}</office:text>"
        default = (f'<style:default-style style:family="paragraph"><style:text-properties '
                   f'style:font-name={quoteattr(stored[-1][1])}/></style:default-style>')
    else:
        rows = "".join(
            f'<table:table-row><table:table-cell office:value-type="string">'
            f'<text:p><text:span text:style-name="T{fonts.index(f)}">{escape(t)}</text:span>'
            f"</text:p></table:table-cell></table:table-row>" for t, f in stored)
        body_xml = (f'<office:spreadsheet><table:table table:name="Sheet1">{rows}'
                    "</table:table></office:spreadsheet>")
        default = ""
    content = (XML + f"<office:document-content {ODF_NS}><office:font-face-decls>{faces}"
               f"</office:font-face-decls><office:automatic-styles>{autos}"
               f"</office:automatic-styles><office:body>{body_xml}</office:body>"
               "</office:document-content>")
    styles = (XML + f"<office:document-styles {ODF_NS}><office:font-face-decls>{faces}"
              f"</office:font-face-decls><office:styles>{default}</office:styles>"
              "</office:document-styles>")
    mime = {"odt": "application/vnd.oasis.opendocument.text",
            "ods": "application/vnd.oasis.opendocument.spreadsheet"}[kind]
    manifest = (XML + '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:'
                'xmlns:manifest:1.0" manifest:version="1.3">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>'
                '<manifest:file-entry manifest:full-path="content.xml" '
                'manifest:media-type="text/xml"/><manifest:file-entry manifest:full-path='
                '"styles.xml" manifest:media-type="text/xml"/></manifest:manifest>')
    return _zip([("mimetype", mime), ("META-INF/manifest.xml", manifest),
                 ("content.xml", content), ("styles.xml", styles)], stored_first=True)


def _split2(text: str) -> tuple[str, str]:
    words = text.split(" ")
    half = max(1, len(words) // 2)
    return " ".join(words[:half]), " " + " ".join(words[half:]) if words[half:] else ""


def odt(stored: list[tuple[str, str]]) -> bytes:
    return _odf("odt", stored)


def ods(stored: list[tuple[str, str]]) -> bytes:
    return _odf("ods", stored)


def _rtf_text(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ord(ch) < 0x80:
            out.append(ch)
        else:
            try:
                out.append(f"\\'{ch.encode('cp1252')[0]:02x}")
            except UnicodeEncodeError:
                code = ord(ch)
                out.append(f"\\u{code - 65536 if code > 32767 else code}?")
    return "".join(out)


def rtf_doc(stored: list[tuple[str, str]]) -> bytes:
    fonts = list(dict.fromkeys(["Times New Roman"] + [f for _, f in stored]))
    table = "".join(f"{{\\f{i}\\froman\\fcharset0{{\\*\\panose 02020603050405020304}}{f};}}"
                    for i, f in enumerate(fonts))
    body = "".join(f"\\pard\\plain\\f{fonts.index(f)}\\fs26 {_rtf_text(t)}\\par\n"
                   for t, f in stored)
    return (f"{{\\rtf1\\ansi\\ansicpg1252\\deff0{{\\fonttbl{table}}}\n"
            f"{{\\info{{\\title Bao cao}}}}\n{body}}}").encode("ascii")


def word_html(stored: list[tuple[str, str]]) -> bytes:
    """Word's "Save as Web Page": Windows-1252, fonts in inline styles."""
    paras = "".join(
        f"<p class=MsoNormal><span style='font-family:\"{f}\"'>{html.escape(t, quote=False)}"
        "</span></p>\n" for t, f in stored)
    page = ("<html><head><meta http-equiv=Content-Type content=\"text/html; "
            "charset=windows-1252\"><meta name=Generator content=\"Microsoft Word 11\">"
            "</head><body lang=EN-US>\n" + paras + "</body></html>")
    return page.encode("cp1252", "xmlcharrefreplace")


def plain(stored: list[tuple[str, str]], codec: str) -> bytes:
    return "\r\n".join(t for t, _ in stored).encode(codec)


def csv(stored: list[tuple[str, str]], codec: str) -> bytes:
    return "\r\n".join(f'{i},"{t.replace(chr(34), chr(34) * 2)}"'
                       for i, (t, _) in enumerate(stored)).encode(codec)


# --- reading back ---------------------------------------------------------------------

ZIPPED = ("docx", "xlsx", "pptx", "odt", "ods")


def blocks(fmt: str, data: bytes) -> list[str]:
    """The paragraphs (cells) of a document, read back."""
    if fmt in ZIPPED:
        return [b for b in office.text_blocks(fmt, data) if b.strip()]
    if fmt == "rtf":
        return [b for b in rtf.text_blocks(data) if b.strip()]
    text = data.decode("utf-8-sig")
    if fmt == "html":
        return [line.strip() for line in Html(text).lines() if line.strip()]
    if fmt == "csv":
        return [line.split(",", 1)[1].strip('"') for line in text.split("\r\n")]
    return text.split("\r\n")


def same(got: list[str], doc_paras: list[str], encoding: str | None) -> bool:
    """Exact, except that TCVN3 has no toned capitals: 'Ủy ban' inside a sentence was
    typed and shown as 'ủy ban' (the heading, in .VnTimeH, must come back in capitals)."""
    if encoding != "tcvn3":
        return got == doc_paras
    return got[:1] == doc_paras[:1] and [g.lower() for g in got] == [p.lower() for p in doc_paras]

"""Attached documents: which format, what legacy text is in it, and the document converted.

Text attachments (.txt, .csv, .html, Word's HTML) go through the same detector as mail
bodies; .rtf through `relay.tcvn.rtf`; .docx/.xlsx/.pptx and .odt/.ods/.odp through
`relay.tcvn.office`. Binary .doc/.xls/.ppt are OLE files no well-kept Python library
rewrites: the legacy font names in their font tables are found (Word and Excel keep
them as UTF-16 or 8-bit strings), the text is neither read nor converted.

The format comes from the bytes first (a zip with `word/`, an OLE header, `{\\rtf`),
then the file name, then the declared type: senders rename files.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
import zlib
from dataclasses import dataclass, field

from relay.tcvn import office, rtf
from relay.tcvn.container import DocumentError, Limits, OverLimits
from relay.tcvn.detect import Detection, inspect
from relay.tcvn.fonts import legacy_font
from relay.tcvn.textnodes import Conversion

TEXT_EXTENSIONS = {"txt": "text", "csv": "text", "tsv": "text", "htm": "html", "html": "html",
                   "rtf": "rtf", "docx": "docx", "docm": "docx", "dotx": "docx",
                   "xlsx": "xlsx", "xlsm": "xlsx", "pptx": "pptx", "odt": "odt", "ods": "ods",
                   "odp": "odp", "doc": "ole", "xls": "ole", "ppt": "ole", "dot": "ole"}
TYPES = {"text/plain": "text", "text/csv": "text", "text/html": "html", "text/rtf": "rtf",
         "application/rtf": "rtf", "application/msword": "ole",
         "application/vnd.ms-excel": "ole", "application/vnd.ms-powerpoint": "ole"}
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
KIND_NAMES = {"text": "text", "html": "HTML", "rtf": "RTF", "docx": "Word (.docx)",
              "xlsx": "Excel (.xlsx)", "pptx": "PowerPoint (.pptx)", "odt": "ODF text (.odt)",
              "ods": "ODF spreadsheet (.ods)", "odp": "ODF presentation (.odp)",
              "ole": "legacy Office (.doc/.xls)"}


@dataclass
class DocumentOptions:
    """How attachments are inspected and converted (the policy's options)."""

    limits: Limits = field(default_factory=Limits)
    max_bytes: int = 25 * 1024 * 1024  # larger attachments are not opened
    font_map: dict[str, str] = field(default_factory=dict)  # legacy font -> Unicode font
    max_seconds: float = 8.0  # per message; the rest of its attachments are left alone


@dataclass
class DocumentReport:
    """What was found in one attachment."""

    kind: str
    fonts: list[str] = field(default_factory=list)  # legacy fonts that carry text
    encodings: list[str] = field(default_factory=list)
    nodes: int = 0  # text runs / cells / pieces that change
    sample: str = ""
    detection: Detection | None = None  # text and HTML attachments
    error: str | None = None  # not inspected: over the limits, corrupt, encrypted
    over_limits: bool = False
    convertible: bool = True
    converted: bytes | None = None
    seconds: float = 0.0

    @property
    def found(self) -> bool:
        if self.detection is not None:
            return self.detection.found
        return bool(self.fonts or self.encodings)

    @property
    def label(self) -> str:
        """Short ASCII name of what was found: tcvn3, vni, legacy-font ..."""
        if self.detection is not None:
            return self.detection.label
        return "+".join(self.encodings) or "legacy-font"

    def describe(self) -> tuple[str, str]:
        """(Vietnamese, English): what the document holds."""
        if self.detection is not None:
            return self.detection.describe()
        names = {"tcvn3": "TCVN3 (ABC)", "vni": "VNI-Windows", "vps": "VPS"}
        fonts = ", ".join(self.fonts[:3])
        encs = ", ".join(names.get(e, e) for e in self.encodings)
        vi, en = [], []
        if fonts:
            vi.append(f"phông chữ cũ {fonts}")
            en.append(f"legacy fonts {fonts}")
        if encs:
            vi.append(f"văn bản mã {encs}")
            en.append(f"text in {encs}")
        return "; ".join(vi), "; ".join(en)


def kind_of(data: bytes, filename: str | None, content_type: str | None) -> str | None:
    """The format of an attachment, or None when it holds no text we read."""
    name = (filename or "").rstrip(". ")
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if data.startswith(_OLE):
        return "ole"
    if data.lstrip()[:5] == b"{\\rtf":
        return "rtf"
    if data.startswith(b"PK\x03\x04"):
        return _zip_kind(data) or None
    if ext in TEXT_EXTENSIONS and TEXT_EXTENSIONS[ext] in ("text", "html"):
        return TEXT_EXTENSIONS[ext]
    kind = TYPES.get((content_type or "").lower())
    return kind if kind in ("text", "html") else None


def _zip_kind(data: bytes) -> str | None:
    """OOXML or ODF by what the container says it is (the zip directory only, bounded)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()[:5000]
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size > 200:
                    return None
                mime = zf.read("mimetype").decode("ascii", "replace").strip()
                return {"application/vnd.oasis.opendocument.text": "odt",
                        "application/vnd.oasis.opendocument.spreadsheet": "ods",
                        "application/vnd.oasis.opendocument.presentation": "odp"}.get(mime)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, ValueError,
            EOFError, KeyError, NotImplementedError, RuntimeError):
        return "docx"  # looks like a zip and is not readable: let the reader say so
    if "[Content_Types].xml" in names:
        for prefix, kind in (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx")):
            if any(n.startswith(prefix) for n in names):
                return kind
    return None


def inspect_document(data: bytes, filename: str | None = None, content_type: str | None = None,
                     charset: str | None = None, *, limits: Limits | None = None,
                     convert: bool = False, font_map: dict[str, str] | None = None,
                     kind: str | None = None) -> DocumentReport | None:
    """Inspect (and with `convert`, rewrite) one attachment; None if it holds no text."""
    kind = kind or kind_of(data, filename, content_type)
    if kind is None:
        return None
    limits = limits or Limits()
    report = DocumentReport(kind)
    start = time.perf_counter()
    try:
        if kind in ("text", "html"):
            det = inspect(data, charset, html=kind == "html")
            report.detection, report.fonts = det, det.fonts
            if det.found and convert:
                out = det.text.encode("utf-8")
                if (filename or "").lower().endswith((".csv", ".tsv")):
                    out = b"\xef\xbb\xbf" + out  # Excel reads a BOM-less CSV as the ANSI page
                report.converted = out
        elif kind == "rtf":
            found, out = rtf.process(data, convert, font_map)
            _fill(report, found, out)
        elif kind == "ole":
            report.fonts = ole_fonts(data)
            report.convertible = False
        else:
            found, out = office.process(kind, data, limits, convert, font_map)
            _fill(report, found, out)
    except OverLimits as exc:
        report.error, report.over_limits = str(exc), True
    except DocumentError as exc:
        report.error = str(exc)
    report.seconds = time.perf_counter() - start
    return report


def _fill(report: DocumentReport, found: Conversion, out: bytes | None) -> None:
    report.fonts, report.encodings = found.fonts, found.encodings
    report.nodes, report.sample = found.nodes, found.sample
    report.converted = out


# font names in a binary Office file: UTF-16LE (Word's font table, Excel's BIFF8 FONT
# records) or 8-bit (older BIFF)
_OLE_FONT16 = re.compile(
    rb"(?:\.\x00V\x00n\x00|V\x00N\x00I\x00[- ]\x00|V\x00P\x00S\x00 \x00)(?:[ -~]\x00){1,40}")
_OLE_FONT8 = re.compile(rb"(?:\.Vn|VNI[- ]|VPS )[ -~]{1,40}")
MAX_OLE_FONTS = 20


def ole_fonts(data: bytes) -> list[str]:
    found: dict[str, None] = {}
    for m in _OLE_FONT16.finditer(data):
        name = m.group().decode("utf-16-le", "replace")
        if legacy_font(name) is not None:
            found[name.strip()] = None
        if len(found) >= MAX_OLE_FONTS:
            break
    for m in _OLE_FONT8.finditer(data):
        name = re.split(r"[^A-Za-z0-9 .-]", m.group().decode("ascii"))[0]
        if legacy_font(name) is not None:
            found[name.strip()] = None
        if len(found) >= MAX_OLE_FONTS:
            break
    return list(found)

"""Legacy Vietnamese fonts: which encoding a font name implies, and its Unicode successor.

Before Unicode, Vietnamese was typed in fonts whose glyphs sat on the bytes of an 8-bit
table: the `.Vn*` fonts of TCVN3 (ABC), `VNI-*` for VNI-Windows, `VPS *` for VPS. Word and
LibreOffice store what was typed as the Windows-1252 reading of those bytes ('Céng hßa'
for 'Cộng hòa'), so a run in such a font is legacy text by construction, and its table
converts it exactly. `.VnTimeH`-style fonts (a trailing H) draw every letter as a capital.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# A name as it appears in a font attribute or font table (optionally quoted)
_TCVN3 = re.compile(r"^(?:\.vn|vn3?[ -]?(?:time|arial|avant|univers|courier|helv)|abc[ -])",
                    re.I)
_VNI = re.compile(r"^vni[- ]", re.I)
_VPS = re.compile(r"^vps[ -]", re.I)


@dataclass(frozen=True)
class LegacyFont:
    name: str  # as written in the document
    encoding: str  # codec name in relay.tcvn.tables: tcvn3, vni, vps
    capitals: bool  # a .VnTimeH-style font: lower-case bytes are drawn as capitals


@lru_cache(maxsize=1024)
def legacy_font(name: str | None) -> LegacyFont | None:
    """The legacy font a font name denotes, or None for a Unicode (or unknown) font."""
    if not name:
        return None
    clean = name.strip().strip("'\"").strip()
    if not clean or len(clean) > 64:
        return None
    if _TCVN3.match(clean):
        return LegacyFont(clean, "tcvn3", clean.endswith("H"))
    if _VNI.match(clean):
        return LegacyFont(clean, "vni", False)
    if _VPS.match(clean):
        return LegacyFont(clean, "vps", False)
    return None


DEFAULT_FONT_MAP = {
    ".VnTime": "Times New Roman",
    ".VnArial": "Arial",
    ".VnCourier": "Courier New",
    "VNI-Times": "Times New Roman",
    "VNI-Arial": "Arial",
    "VNI-Helve": "Arial",
    "VNI-Couri": "Courier New",
}


def unicode_font(name: str, mapping: dict[str, str] | None = None) -> str:
    """The Unicode font that replaces a legacy one: the longest prefix in `mapping`
    (case-insensitive), else by the kind of face (sans -> Arial, mono -> Courier New,
    anything else -> Times New Roman)."""
    clean = name.strip().strip("'\"").strip()
    low = clean.lower()
    table = DEFAULT_FONT_MAP if mapping is None else {**DEFAULT_FONT_MAP, **mapping}
    best = ""
    for prefix in table:
        if low.startswith(prefix.lower()) and len(prefix) > len(best):
            best = prefix
    if best:
        return table[best]
    if any(k in low for k in ("arial", "helv", "univer", "avant", "sans", "swiss")):
        return "Arial"
    if "cour" in low or "mono" in low:
        return "Courier New"
    return "Times New Roman"

"""HTML for the converter: text nodes out and back in, legacy font names found and replaced.

Only text between tags is converted; tags, comments, scripts and style sheets are
kept byte for byte, except that legacy font names become Unicode fonts and a
<meta charset> becomes utf-8.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable

_TAG = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)
_FONT = re.compile(
    r"\.Vn[A-Z][A-Za-z]*(?:[ -](?:Narrow|Schoolbook|New|Antiqua|H)\b)*H?"
    r"|\bVNI[- ][A-Z][A-Za-z]*(?:-[A-Z][A-Za-z]*)*|\bVPS [A-Z][A-Za-z]+"
)
_TAG_NAME = re.compile(r"<(/?)([A-Za-z][\w:-]*)")
_CAPS_FONT = re.compile(r"\.Vn[A-Za-z -]*H")
_FONT_CONTEXT = re.compile(
    r"""\bface\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)|\bfont(?:-family)?\s*:(?:&quot;|[^;}>])*""",
    re.I)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})
_META_CHARSET = re.compile(r"(<meta\b[^>]*?charset\s*=\s*[\"']?)([\w.:-]+)", re.I)


class Html:
    """Text nodes of an HTML document, to convert them without touching the markup."""

    def __init__(self, markup: str) -> None:
        self.markup = markup
        self.nodes: list[tuple[int, int]] = []
        pos = 0
        for m in _TAG.finditer(markup):
            if m.start() > pos:
                self.nodes.append((pos, m.start()))
            pos = m.end()
        if pos < len(markup):
            self.nodes.append((pos, len(markup)))
        self.counts: list[int] = []

    def lines(self) -> list[str]:
        out = []
        self.counts = []
        for start, end in self.nodes:
            node = self.markup[start:end].replace("&nbsp;", "\ue000")
            parts = htmllib.unescape(node).split("\n")
            self.counts.append(len(parts))
            out.extend(parts)
        return out

    def capitals(self) -> list[bool]:
        """Which text nodes sit inside an element set in a .VnTimeH-style font.

        Those fonts draw every letter as a capital, so TCVN3 text in them was typed in
        lower case; once the font is replaced, the text itself must be in capitals.
        Only inline fonts (face=, style=) are seen, not style-sheet classes.
        """
        flags = []
        stack: list[tuple[str, bool]] = []
        pos = 0
        for m in _TAG.finditer(self.markup):
            if m.start() > pos:
                flags.append(any(caps for _, caps in stack))
            pos = m.end()
            tag = _TAG_NAME.match(m.group())
            if tag is None:
                continue
            name = tag.group(2).lower()
            if tag.group(1):  # an end tag closes up to its element
                for k in range(len(stack) - 1, -1, -1):
                    if stack[k][0] == name:
                        del stack[k:]
                        break
            elif name not in _VOID and not m.group().endswith("/>"):
                caps = any(_CAPS_FONT.fullmatch(f) for f in _fonts_in(m.group()))
                stack.append((name, caps))
        if pos < len(self.markup):
            flags.append(any(caps for _, caps in stack))
        return flags

    def rebuild(self, lines: list[str],
                decode_markup: Callable[[str], str] | None = None) -> str:
        original = self.lines()
        capitals = self.capitals() if _CAPS_FONT.search(self.markup) else []
        pieces = []
        pos = i = 0
        for n, ((start, end), count) in enumerate(zip(self.nodes, self.counts, strict=True)):
            markup = self.markup[pos:start]
            pieces.append(decode_markup(markup) if decode_markup else markup)
            new, old = lines[i:i + count], original[i:i + count]
            if capitals and capitals[n]:
                new = [line.upper() for line in new]
            i += count
            if new == old:
                pieces.append(self.markup[start:end])
            else:
                text = htmllib.escape("\n".join(new), quote=False)
                pieces.append(text.replace("\ue000", "&nbsp;"))
            pos = end
        tail = self.markup[pos:]
        pieces.append(decode_markup(tail) if decode_markup else tail)
        return _META_CHARSET.sub(lambda m: m.group(1) + "utf-8", "".join(pieces))


def _fonts_in(tag: str) -> list[str]:
    """Legacy font names in one tag or style sheet, in font contexts only (face=, font:,
    font-family:), so a class such as .VnExpress is not taken for a font."""
    return [f.group() for c in _FONT_CONTEXT.finditer(tag) for f in _FONT.finditer(c.group())]


def legacy_fonts(markup: str) -> list[str]:
    """Legacy Vietnamese font names used in the markup (tags and style sheets), in order."""
    found: dict[str, None] = {}
    for m in _TAG.finditer(markup):
        for name in _fonts_in(m.group()):
            found[name] = None
    return list(found)


def unicode_font(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ("arial", "helv", "univer", "avant", "sans")):
        return "Arial"
    if "cour" in low:
        return "Courier New"
    return "Times New Roman"


def replace_fonts(markup: str) -> str:
    """Legacy font names in the markup replaced by Unicode fonts (Times New Roman, Arial)."""
    if not _FONT.search(markup):
        return markup

    def font(f: re.Match[str]) -> str:
        name = unicode_font(f.group())
        before = f.string[max(0, f.start() - 6):f.start()]
        if before.endswith(("'", '"', "&quot;")):
            return name  # already quoted
        return f'"{name}"' if before.endswith("=") else name  # unquoted attribute / CSS

    def in_contexts(m: re.Match[str]) -> str:
        return _FONT_CONTEXT.sub(lambda c: _FONT.sub(font, c.group()), m.group())

    return _TAG.sub(in_contexts, markup)

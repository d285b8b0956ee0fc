"""HTML for the converter: text nodes out and back in, legacy font names found and replaced.

Only text between tags is converted; tags, comments, scripts and style sheets are
kept byte for byte, except that legacy font names become Unicode fonts and a
<meta charset> becomes utf-8.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable

_RAW_START = re.compile(r"<(script|style)\b", re.I)
_RAW_END = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I)}
_FONT = re.compile(
    r"\.Vn[A-Z][A-Za-z]*(?:[ -](?:Narrow|Schoolbook|New|Antiqua|H)\b)*H?"
    r"|\bVNI[- ][A-Z][A-Za-z]*(?:-[A-Z][A-Za-z]*)*|\bVPS [A-Z][A-Za-z]+"
)
_TAG_NAME = re.compile(r"<(/?)([A-Za-z][\w:-]*)")
_CAPS_FONT = re.compile(r"\.Vn[A-Za-z -]*H")
_FONT_CONTEXT = re.compile(
    r"""\bface\s*=\s*(?:"[^"]{0,200}"|'[^']{0,200}'|[^\s>]{1,200})"""
    r"""|\bfont(?:-family)?\s*:(?:&quot;|[^;}>]){0,200}""",
    re.I)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})
_META_CHARSET = re.compile(r"(<meta\b[^<>]{0,500}?charset\s*=\s*[\"']?)([\w.:-]+)", re.I)


def tag_spans(markup: str) -> list[tuple[int, int]]:
    """(start, end) of every tag, comment, script and style element, in one pass.

    Written out rather than as one regular expression because `<[^>]*>` and `<!--.*?-->`
    take quadratic time on hostile input (thousands of unclosed '<' or '<!--'), and
    this runs on every HTML part the relay sees.
    """
    spans: list[tuple[int, int]] = []
    n = len(markup)
    pos = 0
    next_gt = -2  # the next '>' after the current position (-1: there is none)
    while True:
        i = markup.find("<", pos)
        if i < 0:
            break
        if markup.startswith("<!--", i):
            j = markup.find("-->", i + 4)
            end = n if j < 0 else j + 3
        elif (raw := _RAW_START.match(markup, i)) is not None:
            close = _RAW_END[raw.group(1).lower()].search(markup, raw.end())
            end = n if close is None else close.end()
        else:
            if next_gt != -1 and next_gt <= i:
                next_gt = markup.find(">", i + 1)
            if next_gt == -1:
                break  # no '>' left: the rest is text
            k = markup.find("<", i + 1, next_gt)
            if k >= 0:  # '<' again before '>': this one was text
                pos = k
                continue
            end = next_gt + 1
        spans.append((i, end))
        pos = end
    return spans


class Html:
    """Text nodes of an HTML document, to convert them without touching the markup."""

    def __init__(self, markup: str) -> None:
        self.markup = markup
        self.tags = tag_spans(markup)
        self.nodes: list[tuple[int, int]] = []
        pos = 0
        for start, end in self.tags:
            if start > pos:
                self.nodes.append((pos, start))
            pos = end
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
        for start, end in self.tags:
            if start > pos:
                flags.append(any(caps for _, caps in stack))
            pos = end
            text = self.markup[start:end]
            tag = _TAG_NAME.match(text)
            if tag is None:
                continue
            name = tag.group(2).lower()
            if tag.group(1):  # an end tag closes up to its element
                for k in range(len(stack) - 1, -1, -1):
                    if stack[k][0] == name:
                        del stack[k:]
                        break
            elif name not in _VOID and name not in _RAW_END and not text.endswith("/>"):
                caps = any(_CAPS_FONT.fullmatch(f) for f in _fonts_in(text))
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
            pieces.append(_markup(self.markup[pos:start], decode_markup))
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
        pieces.append(_markup(self.markup[pos:], decode_markup))
        return "".join(pieces)


def _fonts_in(tag: str) -> list[str]:
    """Legacy font names in one tag or style sheet, in font contexts only (face=, font:,
    font-family:), so a class such as .VnExpress is not taken for a font."""
    return [f.group() for c in _FONT_CONTEXT.finditer(tag) for f in _FONT.finditer(c.group())]


def _markup(tags: str, decode: Callable[[str], str] | None) -> str:
    """Tags between two text nodes: decoded if asked, <meta charset> now says utf-8."""
    tags = decode(tags) if decode else tags
    return _META_CHARSET.sub(lambda m: m.group(1) + "utf-8", tags)


def legacy_fonts(markup: str) -> list[str]:
    """Legacy Vietnamese font names used in the markup (tags and style sheets), in order."""
    found: dict[str, None] = {}
    for start, end in tag_spans(markup):
        for name in _fonts_in(markup[start:end]):
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

    pieces = []
    pos = 0
    for start, end in tag_spans(markup):
        tag = markup[start:end]
        pieces += [markup[pos:start], _FONT_CONTEXT.sub(lambda c: _FONT.sub(font, c.group()), tag)]
        pos = end
    pieces.append(markup[pos:])
    return "".join(pieces)

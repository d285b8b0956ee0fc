"""Find legacy Vietnamese text and turn it into Unicode (UTF-8, NFC) per TCVN 6909:2001.

Method: read the text's bytes back (raw 8-bit bytes, or the bytes a Windows-1252
reading turned into mojibake), decode each word with every legacy table, and count
the words that come out as well-formed Vietnamese syllables against how many were
well-formed before. Western European text decodes to nonsense under every table, so
it is never converted; correct Unicode Vietnamese is already well-formed, so it wins.
Pure functions: no I/O besides loading the tables once.
"""

from __future__ import annotations

import codecs as pycodecs
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from relay.tcvn.markup import Html, legacy_fonts, replace_fonts
from relay.tcvn.syllable import VIETNAMESE_ONLY, is_syllable
from relay.tcvn.tables import READ_1252, Codec, codecs, read_1252, unread_1252, viqr

# Candidates tried on undeclared text, most common first (ties go to the first).
# ("utf8": Unicode Vietnamese whose UTF-8 bytes were labelled Western, or encoded twice.)
CANDIDATES = ("tcvn3", "vni", "viscii", "vps", "cp1258", "utf8")
# Mojibake comes from Windows, where TCVN3, VNI and Windows-1258 were the encodings in use;
# VISCII and VPS put letters on the curly quotes, so “N” inside UTF-8 would read as NỢ.
MOJIBAKE_CANDIDATES = ("tcvn3", "vni", "cp1258", "utf8")

LEGACY_LABELS = {
    "viscii": "viscii", "csviscii": "viscii", "x-viet-viscii": "viscii",
    "viscii1.1-1": "viscii",
    "tcvn": "tcvn5712", "tcvn-5712": "tcvn5712", "tcvn5712": "tcvn5712",
    "tcvn5712-1": "tcvn5712", "tcvn5712-1:1993": "tcvn5712", "tcvn-5712:1993": "tcvn5712",
    "x-viet-tcvn": "tcvn5712", "x-viet-tcvn5712": "tcvn5712", "x-viet-tcvn3": "tcvn5712",
    "tcvn3": "tcvn5712", "abc": "tcvn5712", "vn3": "tcvn5712",
    "windows-1258": "cp1258", "cp1258": "cp1258", "x-cp1258": "cp1258", "ms1258": "cp1258",
    "vps": "vps", "x-viet-vps": "vps",
    "vni": "vni", "x-viet-vni": "vni", "vni-windows": "vni",
}
UNICODE_LABELS = {"utf-8", "utf8", "x-unicode20utf8", "unicode-1-1-utf-8"}
# labels under which legacy Vietnamese bytes hide: ASCII, Western, or nothing useful
WESTERN_LABELS = {
    "us-ascii", "ascii", "iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso_8859-1",
    "windows-1252", "cp1252", "x-cp1252", "iso-8859-15", "latin9", "iso8859-15",
    "windows-1254", "iso-8859-9", "x-user-defined", "unknown-8bit", "unknown", "default",
    "8bit", "x-unknown", "",
}
MIN_WORDS = 2  # converted words needed before a text counts as legacy
MIN_RATIO = 0.6  # share of changed words that must come out as Vietnamese syllables
# choosing between tables that both fit: each word a table turns into nonsense costs this
# (measured on the gettext catalogues, see bench/tcvn_detection.py; also tried and dropped:
# a cost for turning a good word into another good one, a bonus for TCVN3/VNI)
SPOIL_COST = 0.5

_WORD = re.compile(r"(?<!%)[A-Za-z\x01-\x08\x0e-\x1f\x80-\U0010ffff]+")
_NOT_BYTE = re.compile(r"[^\x00-\xff]")
_HIGH = re.compile(r"[\x01-\x08\x0e-\x1f\x80-\U0010ffff]")
# the ASCII characters _HIGH does not match
_PLAIN_ASCII = b"\x00" + bytes(range(0x09, 0x0E)) + bytes(range(0x20, 0x80))


def _high(text: str) -> bool:
    """Does TEXT hold what _HIGH matches? For ASCII text (most mail) a deletion in C,
    about 18 times faster than the regular expression on a 10 KB body."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _PLAIN_ASCII))
    return _HIGH.search(text) is not None
_UNPRINTABLE = re.compile(r"[^!-~]")
_CAP_LOSSY = ("tcvn3", "tcvn5712")  # tables where toned capitals share the lowercase byte


@dataclass
class Detection:
    """What one piece of text was found to be, and its UTF-8 NFC form."""

    kind: str  # clean | declared | disguised | mojibake | viqr
    encoding: str | None  # codec name (tcvn3, vni, viscii, vps, cp1258, tcvn5712, viqr)
    text: str  # the text (or HTML markup) in Unicode NFC; unchanged when clean
    declared: str | None = None  # the charset label as given
    words: int = 0  # words converted
    valid: int = 0  # of them, well-formed Vietnamese syllables
    not_nfc: bool = False  # Unicode, but decomposed (NFD / "Unicode tổ hợp")
    fonts: list[str] = field(default_factory=list)  # legacy fonts named in HTML

    @property
    def legacy(self) -> bool:
        return self.kind != "clean"

    @property
    def found(self) -> bool:
        return self.legacy or self.not_nfc or bool(self.fonts)

    @property
    def label(self) -> str:
        """Short, ASCII name of what was found: tcvn3, vni, viqr, nfd, font ..."""
        if self.encoding == "utf8":
            return "utf-8-twice" if self.kind == "mojibake" else "utf-8-mislabelled"
        if self.legacy:
            return self.encoding or self.kind
        if self.not_nfc:
            return "nfd"
        return "legacy-font" if self.fonts else "utf-8"

    def describe(self) -> tuple[str, str]:
        """(Vietnamese, English) description."""
        name = _NAMES.get(self.encoding or "", self.encoding or "")
        # the label comes from the sender: printable ASCII only, it may reach an SMTP reply
        declared = _UNPRINTABLE.sub("?", self.declared or "")[:40]
        parts: list[tuple[str, str]] = []
        if self.kind == "declared":
            parts.append((f"bảng mã cũ {name} (khai báo charset={declared})",
                          f"legacy encoding {name} (declared charset={declared})"))
        elif self.kind == "disguised" and self.encoding == "utf8":
            parts.append((f"văn bản UTF-8 bị khai báo sai là {declared or 'không khai báo'}",
                          f"UTF-8 text labelled {declared or 'without a charset'}"))
        elif self.kind == "mojibake" and self.encoding == "utf8":
            parts.append(("chữ Unicode bị chuyển sang UTF-8 hai lần (lỗi phông)",
                          "Unicode text converted to UTF-8 twice (mojibake)"))
        elif self.kind == "disguised":
            parts.append((f"bảng mã cũ {name} gửi dưới nhãn {declared or 'không khai báo'}",
                          f"legacy encoding {name} sent as {declared or 'no charset'}"))
        elif self.kind == "mojibake":
            parts.append((f"chữ {name} bị chuyển sai sang UTF-8 (lỗi phông)",
                          f"{name} text wrongly converted to UTF-8 (mojibake)"))
        elif self.kind == "viqr":
            parts.append(("chữ Việt kiểu VIQR (gõ dấu bằng ký tự ASCII)",
                          "VIQR (Vietnamese written with ASCII mnemonics)"))
        if self.fonts:
            fonts = ", ".join(self.fonts[:3])
            parts.append((f"HTML dùng phông cũ {fonts}", f"HTML names legacy fonts {fonts}"))
        if self.not_nfc and not self.legacy:
            parts.append(("Unicode tổ hợp (dấu tách rời, không phải dựng sẵn NFC)",
                          "decomposed Unicode (combining marks, not precomposed NFC)"))
        return "; ".join(p[0] for p in parts), "; ".join(p[1] for p in parts)


_NAMES = {
    "tcvn3": "TCVN3 (ABC, .VnTime)", "vni": "VNI-Windows", "viscii": "VISCII", "vps": "VPS",
    "cp1258": "Windows-1258", "tcvn5712": "TCVN 5712:1993", "viqr": "VIQR", "utf8": "UTF-8",
}


def normalise_label(charset: str | None) -> str:
    return (charset or "").strip().strip("\"'").lower()


# --- entry points ---------------------------------------------------------------------


def inspect(data: bytes, charset: str | None = None, *, html: bool = False,
            hint: str | None = None) -> Detection:
    """Examine the raw bytes of a text part (or header word) and its declared charset.

    `hint` names a codec already found elsewhere in the same message (or named by a
    legacy font); one well-formed word is then enough.
    """
    label = normalise_label(charset)
    legacy = LEGACY_LABELS.get(label)
    if legacy is not None:
        text = data.decode("latin-1")
        codec = codecs()[legacy]
        if not any(ord(c) in codec.letter_bytes for c in set(text)):
            return _finish(Detection("clean", None, data.decode("ascii", "replace"),
                                     declared=charset), html, hint, unicode_source=True)
        if not _fits(codec, read_1252(data)):
            # e.g. TCVN3 typed on a Vietnamese Windows that labels everything windows-1258
            other = _text(read_1252(data), charset, html, hint, False)
            if other.legacy:
                return other
        return _declared(text, codec, charset, html)
    if label in UNICODE_LABELS or (label in WESTERN_LABELS and label not in _WESTERN_8BIT):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return _text(read_1252(data), charset, html, hint, False)
        return _text(text, charset, html, hint, True)
    if label in WESTERN_LABELS:
        return _text(read_1252(data), charset, html, hint, False)
    try:  # another real charset (UTF-16, ISO-2022-JP, KOI8-R ...): only the NFC check
        text = data.decode(pycodecs.lookup(label).name, "replace")
    except (LookupError, ValueError, UnicodeError):  # a label nobody knows: undeclared 8-bit
        return _text(read_1252(data), charset, html, hint, False)
    unicode_like = label.startswith(("utf-", "ucs-", "unicode"))
    return _finish(Detection("clean", None, text, declared=charset), html, hint,
                   unicode_source=unicode_like)


def inspect_text(text: str, *, html: bool = False, hint: str | None = None) -> Detection:
    """Examine text that is already Unicode (e.g. a decoded header): mojibake, VIQR, NFD."""
    return _text(text, "utf-8", html, hint, True)


# labels that really say 8-bit Western (as opposed to "us-ascii"/none, which are often UTF-8)
_WESTERN_8BIT = WESTERN_LABELS - {"us-ascii", "ascii", "", "unknown-8bit", "unknown",
                                  "default", "8bit", "x-unknown"}


# --- the work -------------------------------------------------------------------------


def _declared(text: str, codec: Codec, charset: str | None, html: bool) -> Detection:
    if html:
        segments = Html(text)
        lines = segments.lines()
        out = [codec.decode(line) for line in lines]
        if codec.name in _CAP_LOSSY:
            out = [_fix_caps(o, o) for o in out]
        result = segments.rebuild(out, decode_markup=codec.decode)
    else:
        result = codec.decode(text)
        if codec.name in _CAP_LOSSY:
            result = "\n".join(_fix_caps(line, line) for line in result.split("\n"))
    det = Detection("declared", codec.name, unicodedata.normalize("NFC", result),
                    declared=charset)
    if html:
        det.fonts = legacy_fonts(text)
        det.text = replace_fonts(det.text)
    return det


def _fits(codec: Codec, text: str) -> bool:
    """Do most words the codec changes come out as Vietnamese syllables?"""
    valid = affected = 0
    for word in _words(text.split("\n")):
        raw = _raw(word)
        if raw is None:
            continue
        dec = _decode_word(codec, raw)
        if dec != word and len(dec) > 1:
            affected += 1
            valid += is_syllable(unicodedata.normalize("NFC", dec))
    return valid >= MIN_RATIO * affected


def _text(text: str, charset: str | None, html: bool, hint: str | None,
          unicode_source: bool) -> Detection:
    det = Detection("clean", None, text, declared=charset)
    return _finish(det, html, hint, unicode_source)


def _finish(det: Detection, html: bool, hint: str | None, unicode_source: bool) -> Detection:
    text = det.text
    fonts = legacy_fonts(text) if html else []
    if fonts and hint is None:
        hint = "vni" if any(f.upper().startswith("VNI") for f in fonts) else "tcvn3"
    if unicode_source and not unicodedata.is_normalized("NFC", text):
        nfc = unicodedata.normalize("NFC", text)
        det.not_nfc = _decomposed_vietnamese(text, nfc)
        text = nfc
    segments = Html(text) if html else None
    lines = segments.lines() if segments else text.split("\n")
    if _high("\n".join(lines) if segments else text):  # HTML: entities decoded
        found = _best(lines, hint, whole=not unicode_source)
        if found is not None:
            codec, converted, words, valid = found
            det.kind = "mojibake" if unicode_source else "disguised"
            det.encoding, det.words, det.valid = codec, words, valid
            lines = converted
    if det.kind == "clean":
        found_viqr = _viqr(lines)
        if found_viqr is not None:
            lines, det.words, det.valid = found_viqr
            det.kind, det.encoding = "viqr", "viqr"
    det.fonts = fonts
    if det.legacy or det.not_nfc or fonts:
        out = segments.rebuild(lines) if segments else "\n".join(lines)
        out = unicodedata.normalize("NFC", out)
        det.text = replace_fonts(out) if html else out
    return det


def _decomposed_vietnamese(text: str, nfc: str) -> bool:
    """Did composing make letters only Vietnamese uses (not French é, German ü)?"""
    before, after = Counter(text), Counter(nfc)
    return any(after[c] > before[c] for c in VIETNAMESE_ONLY if c in after)


@dataclass
class _Token:
    start: int
    end: int
    text: str
    raw: str  # the byte string it came from
    valid: bool  # well-formed as it stands


@dataclass
class _Line:
    text: str
    raw: str | None  # the byte string the line came from; None if it holds real Unicode
    tokens: list[_Token]


def _raw(token: str) -> str | None:
    """The byte string a token was read from (None if it cannot have been 8-bit bytes)."""
    return token if not _NOT_BYTE.search(token) else unread_1252(token)


def _decode_word(codec: Codec, raw: str) -> str:
    return _fix_word_caps(codec.decode(raw), codec.name)


def _words(lines: list[str]) -> Counter[str]:
    """Words that hold something other than ASCII letters, with their counts."""
    words = Counter(_WORD.findall("\n".join(lines)))
    for w in [w for w in words if w.isascii() and w.isalpha()]:
        del words[w]
    return words


def _possible(words: Counter[str], names: tuple[str, ...]) -> list[str]:
    """Codecs under which some ill-formed word becomes a well-formed one.

    Converting gains nothing unless such a word exists, so this pass over the distinct
    words spares the full count on clean text (the common case).
    """
    suspects = [raw for w in words if not is_syllable(w) and (raw := _raw(w)) is not None]
    found = []
    for name in names:
        codec = codecs()[name]
        for raw in suspects:
            dec = _decode_word(codec, raw)
            if len(dec) > 1 and is_syllable(dec):
                found.append(name)
                break
    return found


_WESTERN_LETTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœšž"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŸŒŠŽ"
)


def _weight(word: str, codec: str, short: bool = False) -> float:
    """What a word that becomes Vietnamese is worth as evidence.

    Under a one-byte table, a word that already reads as a Western one (Swedish 'på',
    'gång' read as TCVN3 'pồ', 'gồng') counts half; legacy text is full of words no
    language spells ('nh©n', 'tÊt'), and those count fully. VNI needs a vowel followed
    by a mark letter ('Bieân'), which Western spelling does not make: no discount,
    except in a short text, where one Spanish 'aún' (VNI 'ẳn') is all there is; there
    the ordinal signs of 'n°', 'Nº' count as Western too.
    """
    western = _WESTERN_SHORT if short else _WESTERN_LETTERS
    if (codec != "vni" or (short and len(word) <= 3)) and _case_ok(word) \
            and western.issuperset(word):
        if short and len(word) <= 2 and not _SHORT_WESTERN_MARKS.isdisjoint(word.lower()):
            return 0.25
        return 0.5
    if word.strip(_QUOTES).isascii():  # German »-l«, Finnish ”.L”: quotes around ASCII
        return 0.5
    return 1.0


_QUOTES = "«»“”„‘’‹›"
_WESTERN_SHORT = _WESTERN_LETTERS | frozenset("°ºª")
# letters of the two-letter Western words that read as Vietnamese syllables (Swedish and
# Norwegian på, så, då, nå, gå, må, rå, German/Swedish tä, nä, French dû, ça: all the
# collisions found in fourteen languages' gettext catalogues, see bench/tcvn_detection.py)
_SHORT_WESTERN_MARKS = frozenset("åäöüûç")


def _case_ok(word: str) -> bool:
    return word.islower() or word.isupper() or word.istitle()


def _accept(name: str, gain: float, valid: int, affected: int, hint: str | None) -> bool:
    """`gain` counts distinct words, so one artefact repeated (»%s« -> »sô«) is one word."""
    needed = 1 if name == hint else MIN_WORDS
    return gain >= needed and valid >= MIN_RATIO * max(affected, 1)


SHORT_WORDS = 12  # a text of at most this many words is judged by the short rule as well


def _short(lines: list[str]) -> bool:
    """A subject, a display name, a file name, a two-line note: few words to count, and
    every plain ASCII word among them reads as Vietnamese (an unaccented syllable such
    as 'anh', 'cho', 'sinh'), an abbreviation ('UBND', 'V/v') or a reply prefix."""
    text = "\n".join(lines)
    if len(text) > 40 * SHORT_WORDS or len(text.split()) > SHORT_WORDS:
        return False
    for word in _TOKEN.findall(text):
        if word.isascii() and word.isalpha() and len(word) > 1 and not word.isupper() \
                and not is_syllable(word) and word.lower() not in _PREFIXES:
            return False
    return True


_TOKEN = re.compile(r"[^\s\"'()\[\]/:,;.!?–-]+")
_PREFIXES = frozenset({"re", "fw", "fwd", "tr", "aw", "sv", "vs", "wg", "rv", "ref"})


def _accept_short(gain: float, unfit: int, changed: int) -> bool:
    """A short text is legacy when every word with letters beyond ASCII comes out a
    Vietnamese syllable under the table (none unfit) and at least one word gains.

    `gain` is weighted as in `_weight`: one 'göi' or 'Néi' (0.5) is enough; one 'på'
    (0.25) is not. Measured on 2-6-word subjects, see bench/tcvn_detection.py.
    """
    return not unfit and changed > 0 and gain >= 0.5


def _best(lines: list[str], hint: str | None,
          whole: bool) -> tuple[str, list[str], int, int] | None:
    words = _words(lines)
    candidates = _possible(words, CANDIDATES if whole else MOJIBAKE_CANDIDATES)
    if not candidates:
        return None
    raws = [_raw(line) for line in lines]
    short = _short(lines)
    if whole or all(r is not None for r in raws):
        return _best_whole(lines, raws, words, candidates, hint, short)
    return _best_mixed(lines, raws, candidates, hint, short)


def _stray(codec: Codec, raw: str) -> bool:
    """Does a word the table leaves as it is hold a byte that is no letter of the table on
    its own? ('sé' read as VNI: é is a VNI tone only after a vowel, so 'Aún no lo sé' is
    Spanish, not VNI.)"""
    if codec.name == "utf8":
        return False
    return any(ord(c) >= 0x80 and ord(c) not in codec.lone_letters for c in raw)




def _best_whole(lines: list[str], raws: list[str | None], words: Counter[str],
                candidates: list[str], hint: str | None,
                short: bool) -> tuple[str, list[str], int, int] | None:
    """The whole text is 8-bit: score every distinct word once, convert every line."""
    best: tuple[float, str, int, int] | None = None
    for name in candidates:
        codec = codecs()[name]
        gain = spoiled = short_gain = 0.0
        valid = affected = changed = unfit = 0
        for word, n in words.items():
            raw = _raw(word)
            if raw is None:
                continue
            dec = _decode_word(codec, raw)
            if dec == word:  # stays as it is: fine if it is Vietnamese the table can hold
                unfit += (len(word) > 1 and not is_syllable(word)) or _stray(codec, raw)
                continue
            changed += n
            if len(dec) > 1:  # a lone character (« » € read as a letter) is no evidence
                ok = is_syllable(dec)
                affected += n
                valid += n * ok
                if ok and not is_syllable(word):
                    gain += _weight(word, name)
                    short_gain += _weight(word, name, short=True)
                elif not ok:
                    spoiled += 1
        # short texts: the same weights decide between tables as decide whether to convert
        score = (short_gain if short else gain) - SPOIL_COST * spoiled
        accepted = _accept(name, gain, valid, affected, hint) or (
            short and _accept_short(short_gain, unfit + affected - valid, affected))
        if accepted and (best is None or score > best[0]):
            best = (score, name, changed, valid)
    if best is None:
        return None
    _, name, changed, valid = best
    codec = codecs()[name]
    out = [_convert_line(codec, raw) if raw is not None else line
           for line, raw in zip(lines, raws, strict=True)]
    return name, out, changed, valid


def _convert_line(codec: Codec, raw: str) -> str:
    out = codec.decode(raw)
    if codec.name in _CAP_LOSSY:
        out = _WORD.sub(lambda m: _fix_word_caps(m.group(), codec.name), out)
        out = _SENTENCE_WORD.sub(_capitalise, out)
        out = _fix_caps(out, raw)
    return out


# the first letter after the start of the line or a full stop (one unambiguous run of
# spaces and quotes in between: overlapping repeats here would be quadratic)
_SENTENCE_WORD = re.compile(r"((?:^|[.!?:])[\s\"'(\-–•*]*)(\w)")
_OPENERS = " \t\"'(-–•*"


def _starts_sentence(line: str, at: int) -> bool:
    """Is the word at `at` the first of its line or sentence? (Looks back a little only.)"""
    window = line[max(0, at - 32):at].rstrip(_OPENERS)
    if window:
        return window[-1] in ".!?:"
    return at <= 32


def _capitalise(m: re.Match[str]) -> str:
    first = m.group(2)
    return m.group(1) + (first.upper() if first in _TONED_LOWER else first)


def _prepare(lines: list[str], raws: list[str | None]) -> list[_Line]:
    out = []
    for line, raw in zip(lines, raws, strict=True):
        tokens = []
        if _high(line):
            for m in _WORD.finditer(line):
                tok = m.group()
                if tok.isascii() and tok.isalpha():
                    continue
                valid = is_syllable(tok)
                if raw is None and valid:
                    continue  # in a line of real Unicode only ill-formed words may be legacy
                tok_raw = _raw(tok)
                if tok_raw is not None:
                    tokens.append(_Token(m.start(), m.end(), tok, tok_raw, valid))
        out.append(_Line(line, raw, tokens))
    return out


def _best_mixed(lines: list[str], raws: list[str | None], candidates: list[str],
                hint: str | None, short: bool) -> tuple[str, list[str], int, int] | None:
    """Unicode text with legacy pieces: convert 8-bit-only lines that gain, and single
    ill-formed words that become well-formed inside lines of real Unicode."""
    prepared = _prepare(lines, raws)
    best: tuple[float, str, list[dict[int, str]], int, int] | None = None
    for name in candidates:
        codec = codecs()[name]
        cache: dict[str, str] = {}
        valid = affected = converted_words = unfit = 0
        gained: set[str] = set()
        spoiled: set[str] = set()
        plan: list[dict[int, str]] = []
        for line in prepared:
            changes: dict[int, str] = {}
            line_valid = line_before = 0
            line_gained: set[str] = set()
            line_spoiled: set[str] = set()
            for i, tok in enumerate(line.tokens):
                dec = cache.get(tok.raw)
                if dec is None:
                    dec = cache[tok.raw] = _decode_word(codec, tok.raw)
                ok = is_syllable(dec)
                counts = len(dec) > 1
                unfit += (counts and not ok) or (dec == tok.text and _stray(codec, tok.raw))
                if dec == tok.text:
                    continue
                if ok and counts and not tok.valid:
                    line_gained.add(tok.text)
                elif counts and not ok:
                    line_spoiled.add(tok.text)
                if line.raw is not None:
                    affected += counts
                    changes[i] = dec
                    line_valid += ok and counts
                    line_before += tok.valid and counts
                elif ok and counts and not tok.valid:
                    changes[i] = dec
                    line_valid += 1
            if line.raw is not None and line_valid <= line_before:
                changes = {}
            elif changes:
                gained |= line_gained
                spoiled |= line_spoiled & {line.tokens[i].text for i in changes}
                valid += line_valid
            converted_words += len(changes)
            plan.append(changes)
        gain = sum(_weight(w, name) for w in gained)
        short_gain = sum(_weight(w, name, short=True) for w in gained)
        score = (short_gain if short else gain) - SPOIL_COST * len(spoiled)
        accepted = _accept(name, gain, valid, affected, hint) or (
            short and _accept_short(short_gain, unfit, converted_words))
        if accepted and (best is None or score > best[0]):
            best = (score, name, plan, converted_words, valid)
    if best is None:
        return None
    _, name, plan, words, valid = best
    out = []
    for line, changes in zip(prepared, plan, strict=True):
        out.append(_apply(line, changes, name) if changes else line.text)
    return name, out, words, valid


def _apply(line: _Line, changes: dict[int, str], codec: str) -> str:
    pieces = []
    pos = 0
    for i, tok in enumerate(line.tokens):
        if i not in changes:
            continue
        word = changes[i]
        if codec in _CAP_LOSSY and word[:1] in _TONED_LOWER \
                and _starts_sentence(line.text, tok.start):
            word = word[0].upper() + word[1:]
        pieces.append(line.text[pos:tok.start])
        pieces.append(word)
        pos = tok.end
    pieces.append(line.text[pos:])
    out = "".join(pieces)
    return _fix_caps(out, line.text) if codec in _CAP_LOSSY else out


_TONED_LOWER = frozenset(c for c in VIETNAMESE_ONLY | frozenset("àáãèéìíòóõùúýâêô")
                         if c.islower())


def _fix_word_caps(word: str, codec: str) -> str:
    """TCVN3 has no toned capitals: 'CộNG' was CỘNG (two or more capitals, no ASCII lowercase)."""
    if codec not in _CAP_LOSSY or word.islower() or word.isupper() or word.istitle():
        return word
    # a capital after the first letter and no ASCII lower case: 'CộNG', 'ủY' (ỦY)
    if any(map(str.isupper, word[1:])) and not any(c.islower() and c.isascii() for c in word):
        return word.upper()
    return word


def _fix_caps(line: str, original: str) -> str:
    """A line whose ASCII letters are all capitals was written in capitals (.VnTimeH)."""
    return line.upper() if _all_capitals(original) else line


_ASCII_LOWER = re.compile(r"[a-z]")
_ASCII_UPPER = re.compile(r"[A-Z]")


def _all_capitals(text: str) -> bool:
    """At least four ASCII letters, all capitals (regular expressions: this runs on every
    paragraph of a document, and a lower-case letter usually comes within a few)."""
    if _ASCII_LOWER.search(text):
        return False
    count = 0
    for _ in _ASCII_UPPER.finditer(text):
        count += 1
        if count >= 4:
            return True
    return False


# --- VIQR -----------------------------------------------------------------------------

# a word with a VIQR mark (after a vowel) or dd in it
_VIQR_TOKEN = re.compile(r"\b[A-Za-z]*(?:[AEIOUYaeiouy][(^+'`?~.]|[Dd][Dd])[A-Za-z'`?~.(^+]*")
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_VIQR_MARK = re.compile(r"[AEIOUYaeiouy][(^+'`~]|[AEIOUYaeiouy][?.][A-Za-z]|^[Dd][Dd]")
_VIQR_MARK_ANY = re.compile(r"[AEIOUYaeiouy][(^+'`~?.]|\b[Dd][Dd]")


def _viqr(lines: list[str]) -> tuple[list[str], int, int] | None:
    text = "\n".join(lines)
    if len(text.encode()) - len(text) > 0.01 * len(text):
        return None  # VIQR is ASCII; this text is not
    # a VIQR text has marks other than the dot (which ends most sentences): counted in C,
    # this skips the regex scan of ordinary ASCII text (most of a message's cost here)
    if not any(mark in text for mark in "(^+'`~?") and "dd" not in text.lower():
        return None
    if len(_VIQR_MARK_ANY.findall(text)) < 3:
        return None
    pattern, mapping = viqr()
    evidence = 0
    words = len(_ASCII_WORD.findall(text))
    plans: list[list[tuple[int, int, str]]] = []
    for line in lines:
        plan = []
        for m in _VIQR_TOKEN.finditer(line):
            tok = m.group()
            core = tok
            # a final . or ? ending the line is punctuation (VIQR doubles it after a mark)
            if core[-1] in ".?" and not line[m.end():].strip():
                core = core[:-1]
            dec = pattern.sub(lambda mm: mapping[mm.group()], core)
            if dec != core and is_syllable(dec):
                plan.append((m.start(), m.start() + len(core), dec))
                if _VIQR_MARK.search(core):
                    evidence += 1
        plans.append(plan)
    if evidence < MIN_WORDS or evidence < 0.25 * words:
        return None
    out = []
    for line, plan in zip(lines, plans, strict=True):
        pieces, pos = [], 0
        for start, end, dec in plan:
            pieces += [line[pos:start], dec]
            pos = end
        out.append("".join(pieces) + line[pos:])
    return out, sum(len(p) for p in plans), evidence


def decode_as(text: str, encoding: str, capitals: bool = False) -> str:
    """Text known to be in a legacy table (a run set in a .VnTime or VNI-Times font),
    stored as its Windows-1252 reading, in Unicode NFC. Characters that cannot have
    been a byte of that reading (real Unicode typed later) are kept as they are.

    `capitals`: the font drew every letter as a capital (.VnTimeH), so the text becomes
    capitals; otherwise a TCVN3 word such as 'CéNG' (no toned capitals) becomes 'CỘNG'.
    """
    codec = codecs()[encoding]

    def piece(m: re.Match[str]) -> str:
        raw = unread_1252(m.group())
        return m.group() if raw is None else codec.decode(raw)

    out = _ENCODABLE.sub(piece, text)
    if capitals:
        out = out.upper()
    elif encoding in _CAP_LOSSY and _INNER_CAPITAL.search(out):
        out = _WORD.sub(lambda m: _fix_word_caps(m.group(), encoding), out)
    return unicodedata.normalize("NFC", out)


# a capital after a letter: the only words `_fix_word_caps` may change ('CộNG', 'ủY')
_CAPITALS = "".join(c for c in map(chr, [*range(0x41, 0x5B), *range(0xC0, 0x250),
                                         *range(0x1EA0, 0x1F00)]) if c.isupper())
_INNER_CAPITAL = re.compile(r"(?<=[^\W\d_])[" + _CAPITALS + "]")


_ENCODABLE = re.compile(
    "[\x00-\xff" + "".join(re.escape(c) for c in sorted(set(READ_1252.values()))) + "]+")


def block_capitals(new: list[str], original: list[str]) -> list[str]:
    """TCVN3 pieces of one paragraph (a document's runs) with the capitals the table lost:
    all capitals if the paragraph was typed in capitals, else a capital at the start and
    after a full stop (as `_convert_line` does for a mail body)."""
    if _all_capitals("".join(original)):
        return [t.upper() for t in new]
    out = []
    start = True  # the paragraph's start begins a sentence
    for text in new:
        text = _SENTENCE_WORD.sub(_capitalise, text) if start else _MID_SENTENCE.sub(
            _capitalise, text)
        out.append(text)
        if text.strip():
            start = text.rstrip(_OPENERS)[-1:] in (".", "!", "?", ":")
    return out


_MID_SENTENCE = re.compile(r"([.!?:][\s\"'(\-–•*]*)(\w)")

"""Is this word a well-formed Vietnamese syllable?

Vietnamese is written one syllable per word: an optional initial consonant, a
rhyme (vowel nucleus, glides, optional final) and at most one tone mark. Words
whose rhyme ends in a stop (c, ch, p, t) only take the sắc or nặng tone. Text
decoded with the wrong table almost never satisfies all of this, which is what
makes the detector work (chardet guesses from byte statistics and gets it wrong).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

INITIALS = (
    "ngh", "ng", "nh", "ch", "gh", "gi", "kh", "ph", "qu", "th", "tr",
    "b", "c", "d", "đ", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "x", "",
)

RHYMES = frozenset("""
a ac ach ai am an ang anh ao ap at au ay
ăc ăm ăn ăng ăp ăt
âc âm ân âng âp ât âu ây
e ec em en eng eo ep et
ê êch êm ên ênh êp êt êu
i ia ich im in inh ip it iu iêc iêm iên iêng iêp iêt iêu
o oc oi om on ong op ot oong ooc
ô ôc ôi ôm ôn ông ôp ôt
ơ ơi ơm ơn ơp ơt
u uc ui um un ung up ut ua uôc uôi uôm uôn uông uôt
ư ưc ưi ưm ưn ưng ưt ưu ưa ươc ươi ươm ươn ương ươp ươt ươu
y yêm yên yêng yêt yêu
oa oac oach oai oam oan oang oanh oap oat oay
oăc oăm oăn oăng oăt
oe oen oeo oet oeng
uân uâng uât uây
uê uêch uênh
uy uya uych uyên uyêt uynh uyp uyt uyu uơ
""".split())

STOP_FINALS = ("c", "ch", "p", "t")
SAC, NANG = "\u0301", "\u0323"
TONE_MARKS = frozenset("\u0300\u0301\u0303\u0309\u0323")
VOWELS = frozenset("aăâeêioôơuưy")
LETTERS = frozenset("abcdđeghiklmnopqrstuvxyăâêôơư")


def _split_tone(ch: str) -> tuple[str, str] | None:
    """'ế' -> ('ê', acute); 'a' -> ('a', ''); None for a letter Vietnamese does not use."""
    decomposed = unicodedata.normalize("NFD", ch)
    tones = [c for c in decomposed if c in TONE_MARKS]
    if len(tones) > 1:
        return None
    base = unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in TONE_MARKS))
    if base not in LETTERS or (tones and base not in VOWELS):
        return None
    return base, tones[0] if tones else ""


def _letter_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for code in list(range(0x61, 0x7B)) + list(range(0xC0, 0x250)) + list(range(0x1EA0, 0x1EFA)):
        ch = chr(code)
        if ch != ch.lower():
            continue
        split = _split_tone(ch)
        if split is not None:
            table[ch] = split
    return table


LETTER = _letter_table()  # every lowercase Vietnamese letter -> (untoned letter, tone mark)
VIETNAMESE_ONLY = frozenset(  # letters outside Latin-1: their presence means Vietnamese
    ch for ch in LETTER if ord(ch) > 0xFF
) | frozenset(ch.upper() for ch in LETTER if ord(ch) > 0xFF)


def _case_ok(word: str) -> bool:
    return word.islower() or word.isupper() or (word[0].isupper() and word[1:].islower())


@lru_cache(maxsize=65536)
def is_syllable(word: str) -> bool:
    """True for one well-formed Vietnamese syllable in NFC, in lower, upper or title case."""
    if not word or len(word) > 8 or not _case_ok(word):
        return False
    tone = ""
    bare = []
    for ch in word.lower():
        split = LETTER.get(ch)
        if split is None:
            return False
        base, mark = split
        if mark:
            if tone:
                return False
            tone = mark
        bare.append(base)
    s = "".join(bare)
    for initial in INITIALS:
        if not s.startswith(initial):
            continue
        rhyme = s[len(initial):]
        if initial == "gi" and rhyme == "":
            return True  # gì, gỉ: the i of gi carries the tone
        if rhyme in RHYMES:
            if rhyme.endswith(STOP_FINALS) and tone not in (SAC, NANG):
                continue
            return True
    return False


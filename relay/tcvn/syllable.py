"""Is this word a well-formed Vietnamese syllable?

Vietnamese is written one syllable per word: an optional initial consonant, a
rhyme (vowel nucleus, glides, optional final) and at most one tone mark. Words
whose rhyme ends in a stop (c, ch, p, t) only take the sắc or nặng tone. Text
decoded with the wrong table almost never satisfies all of this, which is what
makes the detector work (chardet guesses from byte statistics and gets it wrong).
The tone must also sit where Vietnamese puts it (on the vowel with a hat or horn,
else by the rhyme's shape; both the old "hoà" and the new "hòa" placements count):
VNI text read as Windows-1252 gives words such as "xaõ" (xã) whose letters alone
would pass, and on a two-word subject every such word matters.
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
    tone_at = -1
    bare = []
    for i, ch in enumerate(word.lower()):
        split = LETTER.get(ch)
        if split is None:
            return False
        base, mark = split
        if mark:
            if tone:
                return False
            tone, tone_at = mark, i
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
            if initial in PAIRED and (rhyme[0] in FRONT) != (initial in FRONT_INITIALS):
                continue  # k, gh, ngh before i, e, ê (and y); c, g, ng elsewhere
            if initial == "g" and rhyme[0] in "eê":
                continue
            if tone and tone_at - len(initial) not in tone_places(rhyme):
                continue
            return True
    return False


HATS = frozenset("ăâêôơư")
FRONT = frozenset("ieêy")
FRONT_INITIALS = frozenset({"k", "gh", "ngh"})
# the spelling pairs: the same sound written k/c, gh/g, ngh/ng by the vowel that follows
# (g before i is allowed: gìn is gi + in, written with one i)
PAIRED = frozenset({"k", "c", "gh", "ngh", "ng"})


@lru_cache(maxsize=512)
def tone_places(rhyme: str) -> frozenset[int]:
    """Where in the (untoned) rhyme the tone mark may sit.

    On the (last) vowel with a hat or horn: tiếng, người, muốn. Else, before a final
    consonant, on the last vowel: toán, huýt. Else on the only vowel, on the first of
    two (tài, mùa, kìa), on the middle one of three (ngoài, khuỷu); for oa, oe, uy
    both places, since the old style (hoà, thuý) and the new (hòa, thúy) are both in use.
    """
    vowels = [i for i, ch in enumerate(rhyme) if ch in VOWELS]
    hats = [i for i in vowels if rhyme[i] in HATS]
    if hats:
        return frozenset({hats[-1]})
    if vowels[-1] < len(rhyme) - 1:  # a final consonant follows
        return frozenset({vowels[-1]})
    if len(vowels) == 1:
        return frozenset({vowels[0]})
    if len(vowels) == 2:
        return frozenset({0, 1}) if rhyme in ("oa", "oe", "uy") else frozenset({0})
    return frozenset({1})


"""The detector's fast paths answer exactly as the rules they stand for."""

from __future__ import annotations

import random

from relay.tcvn import detect


def test_the_ascii_shortcut_finds_what_the_pattern_finds():
    """`_high` skips the regular expression for ASCII text: every character, alone and
    inside ordinary text, gets the pattern's answer (TCVN3 capitals are C0 controls)."""
    for code in range(0x300):
        char = chr(code)
        expected = detect._HIGH.search(char) is not None
        assert detect._high(char) == expected, hex(code)
        assert detect._high(f"Kinh gui {char} Uy ban\r\n" * 3) == expected, hex(code)
    rng = random.Random(6909)
    for _ in range(500):
        text = "".join(chr(rng.choice((rng.randrange(0x80), rng.randrange(0x110))))
                       for _ in range(rng.randrange(1, 40)))
        assert detect._high(text) == (detect._HIGH.search(text) is not None), repr(text)

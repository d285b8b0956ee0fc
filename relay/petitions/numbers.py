"""Case numbers: `number_format` (`TD-{year}-{seq:06d}`) both ways.

Formatting is `str.format`; finding a number in a Subject is a regular expression
made from the same format, so what a citizen or an officer typed back
(`Re: [TD-2026-000001]`, `td-2026-1`) is read as the canonical number. Numbers are
taken from `schema.counter` by `store`, one scope per year (or one for all time when
the format has no year).
"""

from __future__ import annotations

import re
import string

MAX_FOUND = 5  # numbers taken from one Subject
MAX_SEQ_DIGITS = 12


class NumberFormat:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        parts = []
        self.has_year = False
        for literal, field, _, _ in string.Formatter().parse(fmt):
            parts.append(re.escape(literal))
            if field == "year":
                self.has_year = True
                parts.append(r"(?P<year>\d{4})")
            elif field == "seq":
                parts.append(rf"(?P<seq>\d{{1,{MAX_SEQ_DIGITS}}})")
        self.pattern = re.compile(r"(?<![A-Za-z0-9])" + "".join(parts) + r"(?![0-9])",
                                  re.IGNORECASE | re.ASCII)

    def format(self, year: int, seq: int) -> str:
        return self.fmt.format(year=year, seq=seq)

    def scope(self, year: int) -> int:
        """The counter a number is taken from: per year, or one (0) without {year}."""
        return year if self.has_year else 0

    def find(self, text: str) -> list[str]:
        """The canonical numbers in `text`, first seen first, at most MAX_FOUND."""
        out: list[str] = []
        for match in self.pattern.finditer(text[:2000]):
            year = int(match.group("year")) if self.has_year else 0
            number = self.format(year, int(match.group("seq")))
            if number not in out:
                out.append(number)
            if len(out) >= MAX_FOUND:
                break
        return out

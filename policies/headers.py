"""`headers`: header sanity (Điều 5.1; RFC 5322 3.6).

A message must have exactly one From: and one Date:, at most one of each
singleton field, header lines the parser could split, and bounded sizes.
Malformed input is reported as a finding, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, StrictInt

from policies.base import Policy, PolicyOptions
from relay.model import Finding, Stage, Transaction

SINGLETONS = ("From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
              "In-Reply-To", "References")


class Options(PolicyOptions):
    require: list[str] = ["From", "Date"]
    max_line_length: StrictInt = Field(998, ge=78, le=100_000)


class HeadersPolicy(Policy):
    name = "headers"
    articles = ('Điều 5.1',)
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = {
        "headers.malformed": "header section could not be parsed cleanly",
        "headers.missing": "a required header field is missing",
        "headers.duplicate": "a field that may appear once appears more often",
        "headers.line_too_long": "a header line longer than max_line_length",
    }

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        assert tx.message is not None and isinstance(self.options, Options)
        msg = tx.message
        out: list[Finding] = []
        for problem in msg.problems:
            out.append(self._finding("headers.malformed", f"Tiêu đề thư sai: {problem}",
                                     f"Malformed message: {problem}", problem=problem))
        for name in self.options.require:
            if not msg.get_all(name):
                out.append(self._finding("headers.missing", f"Thiếu trường tiêu đề {name}:",
                                         f"Missing header field {name}:", field=name))
        for name in SINGLETONS:
            if len(msg.get_all(name)) > 1:
                out.append(self._finding("headers.duplicate", f"Trường {name}: xuất hiện nhiều lần",
                                         f"Header field {name}: appears more than once",
                                         field=name))
        limit = self.options.max_line_length
        if any(len(line) > limit + 2 for line in msg.head.split(b"\n")):
            out.append(self._finding("headers.line_too_long",
                                     f"Dòng tiêu đề dài quá {limit} ký tự",
                                     f"Header line longer than {limit} characters"))
        return out

    def _finding(self, code: str, vi: str, en: str, **details: object) -> Finding:
        return self.finding(code, "Điều 5.1", vi, en, status="5.6.0", details=details)

"""`tcvn6909`: text is Unicode, Vietnamese per TCVN 6909:2001 (Điều 9).

Checks every text part (plain and HTML) and the encoded headers (Subject, display
names, attachment file names) for legacy Vietnamese: declared (VISCII, TCVN, CP1258,
VPS) or disguised as Western/ASCII (TCVN3, VNI ...), mojibake (legacy text wrongly
turned into UTF-8), VIQR, HTML naming legacy fonts, and decomposed Unicode. Attached
documents too (`attachments`): text, HTML, RTF, .docx/.xlsx/.pptx, .odt/.ods/.odp
and the font tables of binary .doc/.xls, where TCVN3 typed in .VnTime really lives.
With action `convert` the offending parts and headers are rewritten in UTF-8 NFC and
an `X-TCVN-Converted` header says what was converted from what; documents are
rewritten only with `convert_attachments = true` (text in Unicode, fonts mapped).

This module is the policy only (options, codes, findings); finding and rewriting
live in `relay.tcvn.message`, which `relay text` uses too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from pydantic import Field, StrictBool, StrictInt, field_validator

from policies.base import Policy, PolicyOptions
from relay.message import Message
from relay.model import Action, Finding, Stage, Transaction
from relay.tcvn import Detection
from relay.tcvn.attachment import KIND_NAMES, DocumentOptions
from relay.tcvn.container import Limits
from relay.tcvn.message import Item, inspect_message, rewrite_message

log = logging.getLogger(__name__)

ARTICLE = "Điều 9"
CODES = {
    "tcvn6909.legacy_declared": "a part declares a legacy Vietnamese charset (VISCII, TCVN, "
                                "Windows-1258, VPS)",
    "tcvn6909.legacy_disguised": "legacy Vietnamese bytes (TCVN3, VNI ...) sent as ASCII, "
                                 "Latin-1, Windows-1252 or without a charset (or UTF-8 "
                                 "labelled so)",
    "tcvn6909.mojibake": "legacy Vietnamese text wrongly converted to UTF-8 (or UTF-8 "
                         "converted twice)",
    "tcvn6909.viqr": "Vietnamese written in VIQR (ASCII mnemonics)",
    "tcvn6909.legacy_font": "HTML names legacy Vietnamese fonts (.VnTime, VNI-Times ...)",
    "tcvn6909.not_nfc": "Vietnamese in decomposed Unicode (NFD, 'Unicode tổ hợp'), not NFC",
    "tcvn6909.attachment": "an attached document (text, HTML, RTF, Word, Excel, PowerPoint, "
                           "ODF) set in legacy fonts (.VnTime, VNI-Times ...) or holding "
                           "legacy Vietnamese text",
    "tcvn6909.attachment_uninspected": "an attached document that could not be inspected: "
                                       "over the limits (a zip bomb), corrupt or encrypted",
}
_FONT_NAME = re.compile(r"^[A-Za-z0-9 ._-]{1,64}$")


class Options(PolicyOptions):
    action: Action = Action.CONVERT
    headers: list[str] = ["Subject", "From", "To", "Cc"]
    filenames: StrictBool = True
    # text parts larger than this are not examined (the cost grows with the size)
    max_part_bytes: StrictInt = Field(5_000_000, ge=1024, le=2**31)
    # attached documents: inspected; rewritten only when convert_attachments is on (and the
    # finding's action is convert), since a changed document breaks any signature on it
    attachments: StrictBool = True
    convert_attachments: StrictBool = False
    # legacy font (a prefix, case-insensitive) -> the Unicode font that replaces it
    font_map: dict[str, str] = {}
    max_attachment_bytes: StrictInt = Field(25 * 1024 * 1024, ge=1024, le=2**31)
    max_document_entries: StrictInt = Field(2000, ge=10, le=1_000_000)
    max_document_bytes: StrictInt = Field(64 * 1024 * 1024, ge=1024 * 1024, le=2**32)
    # seconds spent on one message's attachments; keep it under [inspection] timeout
    max_attachment_seconds: float = Field(8.0, gt=0, le=3600)

    @field_validator("font_map")
    @classmethod
    def _fonts(cls, value: dict[str, str]) -> dict[str, str]:
        for key, font in value.items():
            if not _FONT_NAME.match(key) or not _FONT_NAME.match(font):
                raise ValueError(f"font names are letters, digits, spaces, '.', '_', '-' "
                                 f"(1-64): {key!r} = {font!r}")
        return value

    def documents(self) -> DocumentOptions | None:
        if not self.attachments:
            return None
        limits = Limits(max_entries=self.max_document_entries,
                        max_member_bytes=min(Limits.max_member_bytes, self.max_document_bytes),
                        max_total_bytes=self.max_document_bytes)
        return DocumentOptions(limits, self.max_attachment_bytes, dict(self.font_map),
                               self.max_attachment_seconds)


class Tcvn6909Policy(Policy):
    name = "tcvn6909"
    articles = ('Điều 9',)
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = CODES

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        assert tx.message is not None and isinstance(self.options, Options)
        # CPU work, done here: the DATA stage runs in an inspection worker, one message at
        # a time, whose budget bounds it (a thread would only add a hand-off per message)
        items = self.inspect(tx.message)
        tx.cache[self.name] = items
        return [self._finding(code, item) for item in items for code in item.codes]

    def inspect(self, msg: Message) -> list[Item]:
        assert isinstance(self.options, Options)
        return inspect_message(msg, self.options.headers, self.options.filenames,
                               self.options.max_part_bytes, self.options.documents())

    def convert(self, tx: Transaction, findings: Sequence[Finding]) -> bytes | None:
        if tx.message is None:
            return None
        items: list[Item] = tx.cache.get(self.name) or self.inspect(tx.message)
        wanted = {(f.details.get("where"), f.code) for f in findings}
        chosen = [i for i in items if any((i.where, c) in wanted for c in i.codes)]
        if not chosen:
            return None
        assert isinstance(self.options, Options)
        documents = self.options.documents() if self.options.convert_attachments else None
        try:
            data, notes = rewrite_message(tx.message.raw, tx.message, chosen, documents)
        except Exception:  # never lose the message over a repair: deliver it as it came
            log.exception("tcvn6909: conversion failed for %s", tx.queue_id)
            return None
        return data if notes else None

    def _finding(self, code: str, item: Item) -> Finding:
        if item.document is not None:
            return self._document_finding(code, item)
        det = item.detection
        vi_what, en_what = det.describe()
        vi_where = _where_vi(item.where)
        if code == "tcvn6909.legacy_font":
            vi_what, en_what = _font_text(det)
        elif code == "tcvn6909.not_nfc":
            vi_what = "Unicode tổ hợp (dấu tách rời), cần dựng sẵn NFC"
            en_what = "decomposed Unicode (combining marks), precomposed NFC expected"
        vi = f"{vi_where}: {vi_what}; văn bản phải dùng Unicode theo TCVN 6909:2001"
        en = f"{item.where[0].upper() + item.where[1:]}: {en_what}; text must be Unicode " \
             "per TCVN 6909:2001"
        return self.finding(
            code, ARTICLE, vi, en, status="5.6.0",
            tag=("X-TCVN6909", f"{code}; {det.label}; {item.where}"),
            details={"where": item.where, "encoding": det.label, "declared": det.declared,
                     "words": det.words, "fonts": det.fonts},
        )


    def _document_finding(self, code: str, item: Item) -> Finding:
        doc = item.document
        assert doc is not None
        name = _printable(item.name) or item.where
        kind = KIND_NAMES.get(doc.kind, doc.kind)
        if doc.error:
            vi_why, en_why = ("vượt giới hạn kiểm tra", "over the inspection limits") \
                if doc.over_limits else ("tệp hỏng hoặc mã hoá", "corrupt or encrypted")
            vi = f"Tệp đính kèm {name} ({kind}) không kiểm tra được bảng mã tiếng Việt ({vi_why})"
            en = f"Attachment {name} ({kind}) could not be checked for Vietnamese encodings " \
                 f"({en_why})"
        else:
            vi_what, en_what = doc.describe()
            vi = f"Tệp đính kèm {name} ({kind}): {vi_what}; văn bản phải dùng Unicode theo " \
                 "TCVN 6909:2001"
            en = f"Attachment {name} ({kind}): {en_what}; text must be Unicode per TCVN 6909:2001"
            if not doc.convertible:
                vi += " (cần lưu lại bằng phông Unicode)"
                en += " (save it again in a Unicode font)"
        return self.finding(
            code, ARTICLE, vi, en, status="5.6.0",
            tag=("X-TCVN6909", f"{code}; {doc.label}; {item.where}"),
            details={"where": item.where, "name": name, "format": doc.kind,
                     "encoding": doc.label, "fonts": doc.fonts[:10], "runs": doc.nodes,
                     "error": doc.error, "seconds": round(doc.seconds, 4)},
        )


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _printable(name: str | None) -> str:
    """A sender's file name fit for a reply and a log line: no controls, no bidi tricks."""
    return _UNPRINTABLE.sub("?", name or "")[:80]


def _where_vi(where: str) -> str:
    if where.startswith("part "):
        rest = where[5:]
        if rest.endswith(" filename"):
            return f"Tên tệp đính kèm ở phần {rest[:-9]}"
        return f"Phần {rest}"
    return f"Trường tiêu đề {where}"


def _font_text(det: Detection) -> tuple[str, str]:
    fonts = ", ".join(det.fonts[:3])
    return f"HTML dùng phông chữ cũ {fonts}", f"HTML names legacy fonts {fonts}"

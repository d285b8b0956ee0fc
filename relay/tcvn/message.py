"""A message's text per TCVN 6909:2001: what is not Unicode NFC, and the message rewritten.

`inspect_message` lists every place (text part, header field, attachment file name)
whose text is legacy Vietnamese, mojibake, VIQR, names legacy fonts or is decomposed
Unicode; `rewrite_message` replaces just those places in the raw message with UTF-8
NFC (see `relay.tcvn.mime` for why the rewrite is surgical). The `tcvn6909` policy
reports and converts with these; `relay text` runs them on a file.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import logging
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.message import Message, Part, split_header
from relay.tcvn.attachment import DocumentOptions, DocumentReport, inspect_document
from relay.tcvn.detect import Detection, inspect
from relay.tcvn.mime import (
    Span,
    address_atoms,
    as_bytes,
    edit_fields,
    encoded_words,
    filename_params,
    fold,
    header_chunks,
    leaf_spans,
    line_ending,
    parse_addresses,
    quote_param,
    unstructured_atoms,
)

log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

ADDRESS_FIELDS = frozenset({"from", "to", "cc", "reply-to", "sender", "bcc"})
CONVERTED_HEADER = "X-TCVN-Converted"

# the finding codes of the `tcvn6909` policy, by what was found (it declares them all)
KIND_CODE = {
    "declared": "tcvn6909.legacy_declared",
    "disguised": "tcvn6909.legacy_disguised",
    "mojibake": "tcvn6909.mojibake",
    "viqr": "tcvn6909.viqr",
}
FONT_CODE = "tcvn6909.legacy_font"
NFC_CODE = "tcvn6909.not_nfc"
ATTACHMENT_CODE = "tcvn6909.attachment"
UNINSPECTED_CODE = "tcvn6909.attachment_uninspected"


@dataclass
class Item:
    """One place where something was found."""

    where: str  # ASCII: "part 1", "Subject", "part 2 filename"
    detection: Detection
    path: str | None = None  # MIME part path (part bodies and file names)
    header: str | None = None  # header field name
    filename: bool = False
    document: DocumentReport | None = None  # an attached document
    name: str | None = None  # the attachment's file name, as the sender gave it

    @property
    def codes(self) -> list[str]:
        if self.document is not None:
            return [UNINSPECTED_CODE if self.document.error else ATTACHMENT_CODE]
        det = self.detection
        codes = []
        if det.legacy:
            codes.append(KIND_CODE[det.kind])
        if det.fonts:
            codes.append(FONT_CODE)
        if det.not_nfc and not det.legacy:
            codes.append(NFC_CODE)
        return codes

    @property
    def note(self) -> str:
        if self.document is not None:
            return f"{self.where} {self.document.kind} {self.document.label}->unicode"
        det = self.detection
        if det.legacy:
            return f"{self.where} {det.label}->utf-8"
        if det.not_nfc:
            return f"{self.where} nfd->nfc"
        return f"{self.where} legacy-font->unicode-font"


# --- finding -------------------------------------------------------------------------


def inspect_message(msg: Message, headers: Sequence[str] = ("Subject", "From", "To", "Cc"),
                    filenames: bool = True, max_part_bytes: int = 5_000_000,
                    documents: DocumentOptions | None = None) -> list[Item]:
    """Everything in the message that is not Unicode NFC per TCVN 6909:2001.

    `documents`: also open attachments (text, HTML, RTF, OOXML, ODF, legacy Office)
    with these bounds; None leaves attachments alone.
    """
    items: list[Item] = []
    hint: str | None = None
    for part in msg.parts:
        if not _is_body(part):
            continue
        if len(part.payload) > max_part_bytes:
            continue
        try:
            det = inspect(part.payload, part.charset, html=part.content_type == "text/html",
                          hint=hint)
        except Exception:  # bad input is never a crash: leave the part as it is
            log.exception("tcvn6909: could not examine part %s", part.path)
            continue
        if det.found:
            items.append(Item(f"part {part.path}", det, path=part.path))
            if det.legacy and hint is None and det.encoding != "viqr":
                hint = det.encoding  # short headers from the same sender: one word is enough
    for name in headers:
        value = msg.get(name)
        if not value:
            continue
        try:
            det = inspect_chunks(header_chunks(value), hint)
        except Exception:
            log.exception("tcvn6909: could not examine header %s", name)
            continue
        if det.found:
            items.append(Item(name, det, header=name))
    if filenames:
        for part in msg.parts:
            try:
                chunks = filename_chunks(part.raw)
                if chunks is None:
                    continue
                det = inspect_chunks(chunks, hint)
            except Exception:
                log.exception("tcvn6909: could not examine the file name of part %s", part.path)
                continue
            if det.found:
                items.append(Item(f"part {part.path} filename", det, path=part.path,
                                  filename=True))
    if documents is not None:
        items.extend(inspect_attachments(msg, documents))
    return items


def _is_body(part: Part) -> bool:
    """A text part a mail client shows as the message (not an attached file)."""
    return part.is_text and part.content_type in ("text/plain", "text/html")


def inspect_attachments(msg: Message, options: DocumentOptions) -> list[Item]:
    """The attached documents with legacy text or fonts (or that could not be opened).

    Bounded per message as well as per document: past `options.max_seconds` the
    remaining attachments are left alone (logged), so that a message with many large
    documents stays inside the inspection worker's wall-time budget.
    """
    items = []
    start = time.monotonic()
    for part in msg.parts:
        if _is_body(part) or part.encoded_size > options.max_bytes * 4 // 3 + 4096:
            continue  # base64 is 4/3 of the bytes: a part this large is not decoded at all
        if time.monotonic() - start > options.max_seconds:
            log.info("tcvn6909: attachments after part %s not inspected (%.1f s spent)",
                     part.path, time.monotonic() - start)
            break
        payload = part.payload
        if not payload or len(payload) > options.max_bytes:
            continue
        try:
            report = inspect_document(payload, part.filename, part.content_type,
                                      part.charset, limits=options.limits)
        except Exception:  # bad input is never a crash: the part goes on as it came
            log.exception("tcvn6909: could not examine attachment %s", part.path)
            continue
        if report is not None and (report.found or report.error):
            items.append(Item(f"part {part.path} attachment", report.detection
                              or Detection("clean", None, ""), path=part.path,
                              document=report, name=part.filename))
    return items


def inspect_chunks(chunks: list[tuple[bytes, str | None]], hint: str | None) -> Detection:
    """One detection for a header made of several encoded words and plain runs."""
    texts: list[str] = []
    found: Detection | None = None
    not_nfc = False
    for data, charset in chunks:
        if data.isascii() and len(data) < 3:
            texts.append(data.decode("ascii"))
            continue
        det = inspect(data, charset, hint=hint)
        texts.append(det.text)
        not_nfc = not_nfc or det.not_nfc
        if det.legacy and found is None:
            found = det
    text = "".join(texts)
    if found is not None:
        return Detection(found.kind, found.encoding, text, declared=found.declared,
                         words=found.words, valid=found.valid, not_nfc=not_nfc)
    return Detection("clean", None, text, not_nfc=not_nfc)


def filename_chunks(msg: email.message.Message) -> list[tuple[bytes, str | None]] | None:
    """The raw bytes (and charset) of a part's file name, however it was written."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        try:
            value = msg.get_param(param, header=header)
        except Exception:  # a malformed parameter is not ours to report
            continue
        if value is None:
            continue
        if isinstance(value, tuple):  # RFC 2231: (charset, language, text read as Latin-1)
            charset, _, text = value
            return [(str(text).encode("latin-1", "replace"), charset or None)]
        text = str(value)
        if text.isascii() and "=?" not in text:
            return None
        return header_chunks(text)
    return None


# --- converting ----------------------------------------------------------------------


@dataclass
class _Entity:
    """A header section (and maybe a body) to rewrite in place."""

    start: int
    end: int | None  # None: to the end of the message
    replace: dict[str, bytes | None] = field(default_factory=dict)
    body: bytes | None = None


def rewrite_message(raw: bytes, msg: Message, items: Sequence[Item],
                    documents: DocumentOptions | None = None) -> tuple[bytes, list[str]]:
    """The message with the items converted to UTF-8 NFC, and notes on what was converted.

    Only the changed fields and parts are replaced; a part whose place in the raw
    message cannot be confirmed is left alone (and not noted). Attached documents are
    converted only when `documents` is given (the policy's `convert_attachments`).
    """
    head, _ = split_header(raw)
    eol = line_ending(head)
    spans = leaf_spans(raw)
    entities: dict[int, _Entity] = {0: _Entity(0, None)}
    notes: list[str] = []
    for item in items:
        if item.document is not None and (documents is None or not item.document.found
                                          or not item.document.convertible):
            continue
        try:
            done = _convert_item(item, raw, msg, spans, entities, eol, documents)
        except ValueError as exc:  # a field we cannot write safely stays as it came
            log.info("tcvn6909: not converting %s: %s", item.where, exc)
            continue
        if done:
            notes.append(item.note)
    if not notes:
        return raw, []
    for ent in sorted(entities.values(), key=lambda e: e.start, reverse=True):
        raw = _apply(raw, ent, eol)
    atoms = [n + ";" for n in notes[:-1]] + [notes[-1]]
    return fold(CONVERTED_HEADER, atoms, eol) + raw, notes


def _convert_item(item: Item, raw: bytes, msg: Message, spans: dict[str, Span],
                  entities: dict[int, _Entity], eol: bytes,
                  documents: DocumentOptions | None = None) -> bool:
    """Add the edits for one item; raises ValueError (changing nothing) if one is unsafe."""
    if item.header is not None:
        new = _header_field(item, msg, eol)
        if new is None:
            return False
        entities[0].replace[item.header.lower()] = new
        return True
    part = next((p for p in msg.parts if p.path == item.path), None)
    span = spans.get(item.path or "")
    if part is None or span is None or span.signed or not _same_part(raw, span, part):
        return False  # not found for sure, or signed (S/MIME, PGP): reported, left as it is
    edits = _Entity(span.start, span.end)
    leaf_eol = line_ending(split_header(raw[span.start:span.end])[0])
    if item.document is not None:
        assert documents is not None
        report = inspect_document(part.payload, part.filename, part.content_type, part.charset,
                                  limits=documents.limits, convert=True,
                                  font_map=documents.font_map, kind=item.document.kind)
        if report is None or report.converted is None:
            return False
        _redocument(edits, part, report, leaf_eol)
    elif item.filename:
        _rename(edits, part, item.detection.text, leaf_eol)
    else:
        _rebody(edits, part, item.detection.text, leaf_eol, top=span.start == 0)
    ent = entities.setdefault(span.start, _Entity(span.start, span.end))
    ent.replace.update(edits.replace)
    if edits.body is not None:
        ent.body = edits.body
    return True


def _same_part(raw: bytes, span: Span, part: Part) -> bool:
    """The span found by our splitter holds the part the parser saw (type and payload)."""
    if span.content_type != part.content_type:
        return False
    leaf = email.message_from_bytes(raw[span.start:span.end], policy=email.policy.compat32)
    try:
        payload = leaf.get_payload(decode=True)
    except Exception:
        return False
    return payload == part.payload


def _header_field(item: Item, msg: Message, eol: bytes) -> bytes | None:
    assert item.header is not None
    name = item.header
    if _CONTROL.search(msg.get(name) or ""):
        # a bare CR or NUL: other software may split this field differently; leave it
        raise ValueError(f"control characters in {name}")
    if name.lower() not in ADDRESS_FIELDS:
        return fold(name, unstructured_atoms(item.detection.text), eol)
    value = msg.get(name) or ""
    if len(value) > 16384:  # the address parser is not built for hostile sizes
        raise ValueError(f"{name} is {len(value)} characters long")
    pairs = parse_addresses(value)
    if pairs is None:
        return None
    hint = item.detection.encoding if item.detection.legacy else None
    converted = [(inspect_chunks(header_chunks(n), hint).text if n else "", a) for n, a in pairs]
    return fold(name, address_atoms(converted), eol)


def _params(part: Part, header: str, drop: set[str]) -> list[str]:
    """A structured field's parameters, rewritten as ASCII, without those in `drop`."""
    out = []
    for key, value in (part.raw.get_params(header=header) or [])[1:]:
        key = key.lower()
        if key in drop or key.rstrip("*") in drop or not _TOKEN.match(key):
            continue
        if isinstance(value, tuple):
            charset, lang, text = value
            data = str(text).encode("latin-1", "replace")
            charset = charset if charset and _TOKEN.match(charset) else ""
            lang = lang if lang and _TOKEN.match(lang) else ""
            out.append(f"{key}*={charset}'{lang}'" + urllib.parse.quote(data, safe=""))
        elif str(value).isascii() and str(value).isprintable():
            out.append(f"{key}={quote_param(str(value))}")
        else:
            out.append(f"{key}*=''" + urllib.parse.quote(as_bytes(str(value)), safe=""))
    return out


def _rebody(ent: _Entity, part: Part, text: str, eol: bytes, top: bool) -> None:
    params = _params(part, "content-type", {"charset"})
    atoms = [f"{part.content_type};", 'charset="utf-8"' + (";" if params else "")]
    atoms += [p + ";" for p in params[:-1]] + params[-1:]
    ent.replace["content-type"] = fold("Content-Type", atoms, eol)
    ent.replace["content-transfer-encoding"] = b"Content-Transfer-Encoding: base64" + eol
    if top and part.raw.get("MIME-Version") is None:
        ent.replace["mime-version"] = b"MIME-Version: 1.0" + eol
    canonical = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    encoded = base64.b64encode(canonical.encode("utf-8"))
    ent.body = b"".join(encoded[i:i + 76] + eol for i in range(0, len(encoded), 76))


def _redocument(ent: _Entity, part: Part, report: DocumentReport, eol: bytes) -> None:
    """An attachment's body replaced by the converted document (base64); a text or HTML
    attachment is now UTF-8, so its charset says so. Content-Disposition stays."""
    assert report.converted is not None
    if report.kind in ("text", "html"):
        params = _params(part, "content-type", {"charset"})
        atoms = [f"{part.content_type};", 'charset="utf-8"' + (";" if params else "")]
        atoms += [p + ";" for p in params[:-1]] + params[-1:]
        ent.replace["content-type"] = fold("Content-Type", atoms, eol)
    ent.replace["content-transfer-encoding"] = b"Content-Transfer-Encoding: base64" + eol
    encoded = base64.b64encode(report.converted)
    ent.body = b"".join(encoded[i:i + 76] + eol for i in range(0, len(encoded), 76))


def _rename(ent: _Entity, part: Part, name: str, eol: bytes) -> None:
    disposition = part.disposition or "attachment"
    params = _params(part, "content-disposition", {"filename"})
    atoms = [f"{disposition};"] + [p + ";" for p in params] + filename_params(name).split(" ")
    ent.replace["content-disposition"] = fold("Content-Disposition", atoms, eol)
    if part.raw.get_param("name", header="content-type") is not None:
        ct_params = _params(part, "content-type", {"name"})
        ct_atoms = [f"{part.content_type};"]
        ct_atoms += [p + ";" for p in ct_params]
        ct_atoms.append('name="' + " ".join(encoded_words(name)) + '"')
        ent.replace["content-type"] = fold("Content-Type", ct_atoms, eol)


def _apply(raw: bytes, ent: _Entity, eol: bytes) -> bytes:
    end = len(raw) if ent.end is None else ent.end
    segment = raw[ent.start:end]
    head, body = split_header(segment)
    blank = segment[len(head):len(segment) - len(body)] or eol
    new_head = edit_fields(head, ent.replace, eol) if ent.replace else head
    if new_head and not new_head.endswith((b"\n", b"\r")):
        new_head += eol
    new_body = body if ent.body is None else ent.body
    return raw[:ent.start] + new_head + blank + new_body + raw[end:]

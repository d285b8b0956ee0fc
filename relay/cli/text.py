"""`relay text check|convert FILE`: the TCVN 6909 converter on its own.

A plain text file is examined as one text part (its charset given with
`--charset`, or none); an .eml message goes through the `tcvn6909` policy's own
inspection and rewrite (`relay.tcvn.message`), exactly as the relay would convert it
(attachments included); a document (.docx, .xlsx, .pptx, .odt, .ods, .odp, .rtf, .doc,
.xls) is opened as the relay opens an attachment, so an office can clean a file before
sending it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relay.cli.common import print_json, printable
from relay.message import Message
from relay.tcvn import Detection, inspect
from relay.tcvn.attachment import KIND_NAMES, DocumentOptions, DocumentReport, inspect_document
from relay.tcvn.attachment import kind_of as document_kind

DOCUMENT_KINDS = frozenset({"rtf", "docx", "xlsx", "pptx", "odt", "ods", "odp", "ole"})


def _mode(path: Path, data: bytes, mode: str) -> str:
    """eml, document or text."""
    if mode != "auto":
        return mode
    if _is_message(path, data, mode):
        return "eml"
    return "document" if document_kind(data, path.name, None) in DOCUMENT_KINDS else "text"


def _is_message(path: Path, data: bytes, mode: str) -> bool:
    if mode != "auto":
        return mode == "eml"
    if path.suffix.lower() in (".eml", ".msg", ".mbox"):
        return True
    msg = Message(data[:65536])
    names = {n.lower() for n, _ in msg.headers}
    return bool(msg.headers) and not msg.problems and bool(
        names & {"from", "subject", "mime-version", "content-type", "received", "date"})


def _read(file: str) -> tuple[Path, bytes]:
    if file == "-":
        return Path("-"), sys.stdin.buffer.read()
    path = Path(file)
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}") from None


def _detection_dict(where: str, det: Detection, codes: list[str]) -> dict:
    vi, en = det.describe()
    return {"where": where, "codes": codes, "encoding": det.label, "kind": det.kind,
            "declared": det.declared, "words": det.words, "not_nfc": det.not_nfc,
            "fonts": det.fonts, "vi": vi, "en": en}


def _document_dict(report: DocumentReport) -> dict:
    vi, en = report.describe()
    return {"where": "document", "codes": ["tcvn6909.attachment"], "format": report.kind,
            "encoding": report.label, "fonts": report.fonts, "runs": report.nodes,
            "sample": report.sample, "vi": vi, "en": en}


def _font_map(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        old, eq, new = pair.partition("=")
        if not eq or not old.strip() or not new.strip():
            raise click.BadParameter(f"expected OLD=NEW, got {pair!r}", param_hint="--font-map")
        out[old.strip()] = new.strip()
    return out


def _document(data: bytes, path: Path, convert: bool,
              font_map: dict[str, str] | None = None) -> DocumentReport:
    report = inspect_document(data, path.name, convert=convert, font_map=font_map,
                              kind=document_kind(data, path.name, None))
    if report is None:
        raise click.ClickException(f"{printable(str(path))}: not a document this command reads")
    if report.error:
        raise click.ClickException(f"{printable(str(path))}: cannot inspect this "
                                   f"{KIND_NAMES.get(report.kind)} file: "
                                   f"{printable(report.error)}")
    return report


def _text_codes(det: Detection) -> list[str]:
    from relay.tcvn.message import Item

    return Item("text", det).codes


file_argument = click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
mode_option = click.option(
    "--as", "mode", type=click.Choice(["auto", "text", "eml", "document"]), default="auto",
    show_default=True,
    help="Treat FILE as plain text, a message or a document (auto: by name/content).")
charset_option = click.option("--charset", default=None,
                              help="Declared charset of a plain text file (default: none).")
html_option = click.option("--html", is_flag=True, help="The plain text file is HTML.")


@click.group("text")
def text() -> None:
    """Vietnamese text per TCVN 6909:2001 (Điều 9): find legacy encodings, convert to UTF-8 NFC."""


@text.command("check")
@file_argument
@mode_option
@charset_option
@html_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def check(file: str, mode: str, charset: str | None, html: bool, as_json: bool) -> None:
    """Say what in FILE is not Unicode NFC. Exit 1 when something was found, else 0."""
    path, data = _read(file)
    found: list[dict] = []
    kind = _mode(path, data, mode)
    if kind == "eml":
        from relay.tcvn.message import inspect_message

        for item in inspect_message(Message(data), documents=DocumentOptions()):
            if item.document is not None:
                found.append({**_document_dict(item.document), "where": item.where,
                              "codes": item.codes})
            else:
                found.append(_detection_dict(item.where, item.detection, item.codes))
    elif kind == "document":
        report = _document(data, path, convert=False)
        if report.found:
            found.append(_document_dict(report))
    else:
        det = inspect(data, charset, html=html or path.suffix.lower() in (".html", ".htm"))
        if det.found:
            found.append(_detection_dict("text", det, _text_codes(det)))
    if as_json:
        print_json({"file": file, "found": found})
    elif not found:
        click.echo(f"{printable(file)}: Unicode NFC, nothing to convert / không có gì cần "
                   "chuyển đổi")
    else:
        for f in found:  # `where` names parts and attachments as the message calls them
            click.echo(f"{printable(file)}: {printable(f['where'])}: {f['encoding']} "
                       f"({', '.join(f['codes'])})")
            click.echo(f"    {printable(f['vi'])}")
            click.echo(f"    {printable(f['en'])}")
    sys.exit(1 if found else 0)


@text.command("convert")
@file_argument
@mode_option
@charset_option
@html_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of stdout.")
@click.option("--font-map", "font_map", multiple=True, metavar="OLD=NEW",
              help="Documents: the Unicode font for a legacy one (a name prefix), e.g. "
                   "'.VnArial=Arial'; default .VnTime/VNI-Times -> Times New Roman, "
                   ".VnArial -> Arial.")
def convert(file: str, mode: str, charset: str | None, html: bool, output: Path | None,
            font_map: tuple[str, ...]) -> None:
    """Print FILE in UTF-8 NFC (a message: rewritten as the relay would deliver it; a
    document: the same document with its text in Unicode and Unicode fonts)."""
    path, data = _read(file)
    kind = _mode(path, data, mode)
    fonts = _font_map(font_map)
    if kind == "eml":
        from relay.tcvn.message import inspect_message, rewrite_message

        msg = Message(data)
        documents = DocumentOptions(font_map=fonts)
        items = inspect_message(msg, documents=documents)
        out, notes = rewrite_message(data, msg, items, documents)
        for note in notes:
            click.echo(f"converted: {printable(note)}", err=True)
    elif kind == "document":
        report = _document(data, path, convert=True, font_map=fonts)
        if not report.convertible and report.found:
            raise click.ClickException(
                f"{printable(str(path))}: legacy fonts {printable(', '.join(report.fonts[:3]))}"
                f" in a binary {KIND_NAMES['ole']} file, which this command cannot rewrite; "
                "save it as .docx/.xlsx in Word or LibreOffice first")
        out = report.converted if report.converted is not None else data
        _, en = report.describe()
        click.echo(f"converted: {report.kind} {printable(en)} -> Unicode" if report.found
                   else "nothing to convert / không có gì cần chuyển đổi", err=True)
    else:
        det = inspect(data, charset, html=html or path.suffix.lower() in (".html", ".htm"))
        if det.found:
            click.echo(f"converted: {det.label} -> utf-8 NFC", err=True)
        out = det.text.encode("utf-8")
    if output is not None:
        output.write_bytes(out)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()


COMMANDS = [text]

"""`relay text check|convert FILE`: the TCVN 6909 converter on its own.

A plain text file is examined as one text part (its charset given with
`--charset`, or none); an .eml message goes through the `tcvn6909` policy's own
inspection and rewrite, exactly as the relay would convert it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relay.cli.common import print_json, printable
from relay.message import Message
from relay.tcvn import Detection, inspect


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


def _text_codes(det: Detection) -> list[str]:
    from policies.tcvn6909 import Item

    return Item("text", det).codes


file_argument = click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
mode_option = click.option(
    "--as", "mode", type=click.Choice(["auto", "text", "eml"]), default="auto",
    show_default=True, help="Treat FILE as plain text or as a message (auto: by name/content).")
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
    if _is_message(path, data, mode):
        from policies.tcvn6909 import inspect_message

        for item in inspect_message(Message(data)):
            found.append(_detection_dict(item.where, item.detection, item.codes))
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
def convert(file: str, mode: str, charset: str | None, html: bool, output: Path | None) -> None:
    """Print FILE in UTF-8 NFC (a message: rewritten as the relay would deliver it)."""
    path, data = _read(file)
    if _is_message(path, data, mode):
        from policies.tcvn6909 import inspect_message, rewrite_message

        msg = Message(data)
        out, notes = rewrite_message(data, msg, inspect_message(msg))
        for note in notes:
            click.echo(f"converted: {printable(note)}", err=True)
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

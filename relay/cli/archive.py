"""`relay archive`: keys, verification, and the auditors' read-only commands.

`log` only reads. `show` and `export` read and append who/when/what/why to the
access log before they output anything; they never change an entry. Every stored
value printed for a person goes through `printable` (a subject is client-supplied);
times are UTC and printed with their zone (`Z`).
"""

from __future__ import annotations

import getpass
import os
import sys
import unicodedata
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from relay.archive import Archive, ArchiveError, Filters, chain, schema
from relay.cli.common import config_option, is_interactive, load_config, print_json, printable
from relay.message import Message, decode_header_value

EX_USAGE = 2
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M")


def _who() -> str:
    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def _open(config_path: Path | None, migrate: bool = False) -> Archive:
    """The archive, or exit 2: "could not look" must not read as "tampered" (1)."""
    config = load_config(config_path)
    try:
        return Archive.open(config, migrate=migrate)
    except (ArchiveError, sa.exc.SQLAlchemyError) as exc:
        click.echo(f"relay archive: {exc}", err=True)
        sys.exit(EX_USAGE)


def _time(dt: datetime) -> str:
    """A stored time (UTC, naive) as people read it: to the second, with its zone."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(value: str | None, end: bool = False) -> datetime | None:
    """UTC; a bare date as --until means the end of that day."""
    if value is None:
        return None
    for fmt in DATE_FORMATS:
        try:
            dt = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return dt + timedelta(days=1) if end and fmt == "%Y-%m-%d" else dt
    raise click.BadParameter(f"expected a date such as 2026-11-29 or 2026-11-29T08:00, "
                             f"got {value!r}")


def filter_options(func: Any) -> Any:
    for option in reversed([
        click.option("--mailbox", help="Archived mailbox (either direction)."),
        click.option("--from", "sender", help="Envelope sender."),
        click.option("--to", "recipient", help="Envelope recipient."),
        click.option("--since", help="Recorded on or after (UTC date or date-time)."),
        click.option("--until", help="Recorded before (a bare date includes that day)."),
        click.option("--subject", help="Subject contains (case-insensitive, Vietnamese too)."),
    ]):
        func = option(func)
    return func


def _filters(mailbox: str | None, sender: str | None, recipient: str | None,
             since: str | None, until: str | None, subject: str | None) -> Filters:
    return Filters(mailbox=mailbox, sender=sender, recipient=recipient,
                   since=parse_date(since), until=parse_date(until, end=True), subject=subject)


def _entry_json(row: Any) -> dict[str, Any]:
    fields = chain.entry_fields(row)
    fields["entry_hash"] = row["entry_hash"]
    fields["purged_at"] = chain.timestamp(row["purged_at"]) if row["purged_at"] else None
    return fields


@click.group("archive")
def archive() -> None:
    """The archive of official mailboxes (Điều 8): verify, search, show, export."""


@archive.command()
@config_option
@click.option("--force", is_flag=True, help="Replace an existing key; the old public key is "
              "kept as <public_key>.old-<key id> for verify.")
def keygen(config_path: Path | None, force: bool) -> None:
    """Create the Ed25519 key that signs checkpoints, and its public half (.pub)."""
    config = load_config(config_path)
    arch = Archive(config)
    private, public = arch.signing_key_path, arch.public_key_path
    arch.close()
    if private.exists() and not force:
        raise click.ClickException(f"{private} exists (use --force to replace it)")
    retired = None
    if public.exists():  # retired, kept: verify still needs it for older checkpoints
        old = chain.key_id(chain.load_public(public))
        retired = public.with_name(f"{public.name}.old-{old}")
        public.rename(retired)
    kid = chain.generate_keys(private, public)
    click.echo(f"signing key {private} (keep secret)\npublic key  {public} (give to auditors)"
               f"\nkey id      {kid}")
    if retired is not None:
        click.echo(f"retired     {retired}: checkpoints signed before now need it; add it to "
                   "archive.retired_public_keys in relay.toml (and give it to auditors), "
                   "verify uses no key it is not given")
    click.echo("a running relay signs with the new key from its next message on")


@archive.command()
@config_option
def checkpoint(config_path: Path | None) -> None:
    """Sign the chain head now (the relay also does it every N entries / interval)."""
    arch = _open(config_path)
    try:
        row = arch.checkpoint()
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        arch.close()
    click.echo("chain head already signed" if row is None else
               f"signed #{row['seq']} {row['entry_hash']}")


@archive.command()
@config_option
@click.option("--since", help="Start at entry ID or at the first entry of a date.")
@click.option("--export", "export_path", type=click.Path(file_okay=False, path_type=Path),
              help="Verify an export folder instead (needs only the public key).")
@click.option("--public-key", "public_keys", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Public key, repeatable (default: archive.public_key and "
              "archive.retired_public_keys from the configuration, nothing else).")
@click.option("--json", "as_json", is_flag=True)
def verify(config_path: Path | None, since: str | None, export_path: Path | None,
           public_keys: tuple[Path, ...], as_json: bool) -> None:
    """Recompute every blob hash and the chain, check every checkpoint signature.

    Exit status: 0 intact (with a warning for what is not signed yet); 1 something was
    modified, deleted, inserted, reordered, cut off or purged without a signature;
    2 the archive, the export or the public key could not be read.
    """
    from relay.archive.export import verify_export
    from relay.archive.verify import verify_archive

    if export_path is not None:
        keys = _public_keys(public_keys, config_path)
        report = verify_export(export_path, keys)
    else:
        arch = _open(config_path)
        try:
            keys = _public_keys(public_keys, config_path)
            since_seq = _since_seq(arch, since)
            report = _run_verify(arch, keys, since_seq, as_json, verify_archive)
        finally:
            arch.close()
    if report.unreadable:
        click.echo(f"relay archive: {printable(report.unreadable)}", err=True)
        sys.exit(EX_USAGE)
    _print_report(report, as_json)
    sys.exit(0 if report.ok else 1)


def _public_keys(paths: tuple[Path, ...], config_path: Path | None) -> list[Any]:
    """The given keys, or the configured ones; never a file merely found beside them
    (whoever can write there could plant a key and sign a forged checkpoint)."""
    if not paths:
        arch = Archive(load_config(config_path))
        paths = (arch.public_key_path, *arch.retired_public_key_paths)
        arch.close()
    keys = []
    for path in paths:
        try:
            keys.append(chain.load_public(path))
        except (OSError, ValueError) as exc:
            click.echo(f"relay archive: cannot read the public key {path}: {exc}", err=True)
            sys.exit(EX_USAGE)
    return keys


def _since_seq(arch: Archive, since: str | None) -> int | None:
    if since is None:
        return None
    if since.lstrip("#").isdigit():
        return int(since.lstrip("#"))
    when = parse_date(since)
    e = schema.entry
    with arch.db.connect() as conn:
        seq = conn.execute(sa.select(sa.func.min(e.c.seq)).where(e.c.recorded_at >= when))
        first = seq.scalar()
        if first is None:  # nothing that recent: nothing to check
            first = (conn.execute(sa.select(sa.func.max(e.c.seq))).scalar() or 0) + 1
        return int(first)


def _run_verify(arch: Archive, key: Any, since_seq: int | None, as_json: bool,
                verify_archive: Any) -> Any:
    if not is_interactive(as_json):
        return verify_archive(arch, key, since_seq)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with arch.db.connect() as conn:
        e = schema.entry
        total = conn.execute(sa.select(sa.func.count()).select_from(e)
                             .where(e.c.seq >= (since_seq or 0))).scalar()
    with Progress(TextColumn("verifying"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} entries"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("verify", total=total)
        return verify_archive(arch, key, since_seq,
                              lambda n, _b: bar.update(task, completed=n))


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    d = report.as_dict()
    rate = report.bytes / report.seconds / 1e6 if report.seconds else 0.0
    click.echo(f"{report.entries} entries (#{d['first_seq']}–#{d['last_seq']}), "
               f"{report.blobs} messages, {report.bytes / 1e6:.1f} MB checked"
               + (f" in {report.seconds:.1f}s ({rate:.1f} MB/s)" if report.seconds else ""))
    click.echo(f"{report.checkpoints} checkpoint(s), last covers #{d['last_checkpoint']}")
    if report.access_entries:
        click.echo(f"access log: {report.access_entries} entries, signed up to "
                   f"#{d['signed_access']}")
    if report.tombstones:
        by_purge: dict[str, list[int]] = {}
        for t in report.tombstones:
            by_purge.setdefault(f"{t['purged_at']} by {t['by']}", []).append(t["seq"])
        for when, seqs in by_purge.items():
            click.echo(f"purged (tombstones, hashes kept): {len(seqs)} entries "
                       f"#{min(seqs)}–#{max(seqs)} on {printable(when)}")
    for warning in report.warnings:
        click.secho(f"WARNING: {warning}", fg="yellow", bold=True)
    if report.ok:
        click.secho("INTACT" + (" (not all signed: see the warning)" if report.warnings
                                else ""), fg="green", bold=True)
        return
    first = report.first_bad
    click.secho(f"TAMPERED: first bad {printable(first)}", fg="red", bold=True)
    for p in report.problems[:50]:
        click.echo(f"  - {printable(p)}")
    if len(report.problems) > 50:
        click.echo(f"  … {len(report.problems) - 50} more")


@archive.command("log")
@config_option
@filter_options
@click.option("--limit", type=int, default=None, help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def log_cmd(config_path: Path | None, mailbox: str | None, sender: str | None,
            recipient: str | None, since: str | None, until: str | None, subject: str | None,
            limit: int | None, as_json: bool) -> None:
    """List archived entries (read-only)."""
    arch = _open(config_path)
    try:
        filters = _filters(mailbox, sender, recipient, since, until, subject)
        filters.limit = limit
        with arch.db.connect() as conn:
            for row in conn.execute(arch.query(filters)).mappings():
                if as_json:
                    print_json(_entry_json(row))
                    continue
                arrow = "→" if row["direction"] == "out" else "←"
                gone = " [purged]" if row["purged_at"] else ""
                click.echo(f"#{row['seq']}\t{_time(row['recorded_at'])}\t"
                           f"{printable(row['mailbox'])} {arrow}\t"
                           f"{printable(row['sender'] or '<>')} -> "
                           f"{printable(', '.join(_recipients(row)))}\t"
                           f"{printable(row['subject'])}{gone}")
    finally:
        arch.close()


def _recipients(row: Any) -> list[str]:
    import json

    return json.loads(row["recipients"])


@archive.command()
@config_option
@click.argument("entry_id", metavar="ID", type=int)
@click.option("--raw", is_flag=True, help="The exact bytes, nothing else.")
@click.option("--accepted", is_flag=True, help="As accepted (default: as delivered).")
@click.option("--reason", required=True, help="Why you look (recorded in the access log).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the `log --json` fields and the message as text.")
def show(config_path: Path | None, entry_id: int, raw: bool, accepted: bool,
         reason: str, as_json: bool) -> None:
    """Show entry ID: envelope, decision record and the message, decoded."""
    arch = _open(config_path)
    try:
        row = arch.get(entry_id)
        if row is None:
            raise click.ClickException(f"no entry #{entry_id}")
        which = "accepted" if accepted else "delivered"
        arch.log_access(_who(), "show", {"entry": entry_id, "version": which,
                                         "raw": raw}, reason)
        if row["purged_at"] is not None:
            raise click.ClickException(f"entry #{entry_id} was purged on "
                                       f"{_time(row['purged_at'])}; only its hashes remain")
        data = arch.read_blob(row[f"{which}_hash"], int(row[f"{which}_size"]))
        other = "delivered" if accepted else "accepted"
        versions = {which: data}
        if not raw:  # to say how the two differ
            versions[other] = data if row["accepted_hash"] == row["delivered_hash"] else \
                arch.read_blob(row[f"{other}_hash"], int(row[f"{other}_size"]))
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        arch.close()
    if raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if as_json:
        print_json({**_entry_json(row), "version": which,
                    "message": data.decode("utf-8", "replace")})
        return
    _render(row, versions, which)


def _render(row: Any, versions: dict[str, bytes], which: str) -> None:
    import json

    meta = json.loads(row["meta"])
    arrow = "sent by" if row["direction"] == "out" else "received by"
    client = meta.get("client") or {}
    out = [
        f"Entry #{row['seq']}  recorded {_time(row['recorded_at'])} on {printable(row['node'])}",
        f"Mailbox: {printable(row['mailbox'])} ({row['kind']}), {arrow} it",
        f"Envelope: {printable(row['sender'] or '<>')} -> "
        f"{printable(', '.join(_recipients(row)))}",
        f"Client: {printable(client.get('ip'))} helo={printable(repr(client.get('helo')))} "
        f"tls={client.get('tls')} auth={printable(meta.get('auth_login'))}",
        f"Entry hash: {row['entry_hash']}",
        f"{which.capitalize()} message: sha256 {row[f'{which}_hash']} "
        f"({row[f'{which}_size']} bytes)",
    ]
    out += _changes(row, meta, versions["delivered"], versions["accepted"])
    for d in meta.get("decisions", []):
        out.append(printable(f"Decision: {d['policy']} {d['code']} -> {d['action']} "
                             f"({d['article']})"))
    msg = Message(versions[which])
    out.append("")
    for name in ("Date", "From", "To", "Cc", "Subject", "Message-ID"):
        for value in msg.get_all(name):
            out.append(f"{name}: {printable(_nfc(decode_header_value(value)))}")
    out.append("")
    texts = [p for p in msg.parts if p.is_text and p.content_type == "text/plain"] or \
        [p for p in msg.parts if p.is_text]
    for part in texts:
        out.append(printable(_nfc(_decode_text(part.payload, part.charset)), multiline=True))
    for part in msg.parts:
        if part.is_attachment and part not in texts:
            out.append(f"[attachment {part.path}: {printable(_nfc(part.filename or ''))} "
                       f"{printable(part.content_type)}, {len(part.payload)} bytes]")
    click.echo("\n".join(out))


def _changes(row: Any, meta: dict[str, Any], delivered: bytes, accepted: bytes) -> list[str]:
    """How the delivered message differs from the accepted one: "Converted" only when a
    policy converted it; headers the relay only added (Received:, tags) are named."""
    if row["accepted_hash"] == row["delivered_hash"]:
        return []
    conversions = meta.get("conversions") or []
    if conversions:
        return [f"Converted: {printable(', '.join(conversions))} (see --accepted for the "
                "original)"]
    if delivered.endswith(accepted):
        names = [n for n, _ in Message(delivered[:len(delivered) - len(accepted)]).headers]
        return [f"Delivered as accepted, with added header(s): "
                f"{printable(', '.join(names) or '(none)')}"]
    return ["Delivered differs from accepted (see --accepted for the original)"]


def _decode_text(payload: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return payload.decode(cs)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("utf-8", "replace")


def _nfc(text: str) -> str:
    """Composed forms: decomposed Vietnamese (TCVN 6909 allows both) renders badly in
    many terminals."""
    return unicodedata.normalize("NFC", text)


@archive.command("export")
@config_option
@filter_options
@click.option("--format", "fmt", type=click.Choice(["mbox", "eml"]), default="eml",
              show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to create (messages + manifest.json).")
@click.option("--reason", required=True, help="Why (recorded in the access log).")
def export_cmd(config_path: Path | None, mailbox: str | None, sender: str | None,
               recipient: str | None, since: str | None, until: str | None,
               subject: str | None, fmt: str, output: Path, reason: str) -> None:
    """Export matching entries with a manifest that `verify --export` proves."""
    from relay.archive.export import export

    arch = _open(config_path)
    try:
        summary = export(arch, _filters(mailbox, sender, recipient, since, until, subject),
                         fmt, output, _who(), reason)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        arch.close()
    if summary["signed_now"]:
        click.echo(f"signed the chain head (checkpoint #{summary['checkpoint']}) so that "
                   "every entry exported is covered")
    click.echo(f"exported {summary['entries']} entries to {printable(summary['path'])} "
               f"(covered by checkpoint #{summary['checkpoint']})")
    if summary["skipped_purged"]:
        from relay.archive.retention import ranges

        click.echo(f"not exported: {len(summary['skipped_purged'])} matching entries were "
                   f"purged, only their hashes remain: {ranges(summary['skipped_purged'])}")


@archive.command("access-log")
@config_option
@click.option("--limit", type=int, default=None, help="Only the newest N entries.")
@click.option("--json", "as_json", is_flag=True)
def access_log(config_path: Path | None, limit: int | None, as_json: bool) -> None:
    """Who looked at or exported what, when and why (hash-chained; `verify` checks it)."""
    import json

    arch = _open(config_path)
    try:
        rows = arch.access_log(limit)
    finally:
        arch.close()
    for row in rows:
        fields = chain.access_fields(row)
        if as_json:
            print_json({**fields, "entry_hash": row["entry_hash"]})
        else:
            click.echo(f"#{fields['seq']}\t{_time(row['at'])}\t{printable(fields['who'])}\t"
                       f"{printable(fields['action'])}\t"
                       f"{printable(json.dumps(fields['target'], ensure_ascii=False))}"
                       f"\t{printable(fields['reason'])}")


@archive.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Say what would be purged; change nothing.")
@click.option("--reason", default="retention period ended", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def purge(config_path: Path | None, dry_run: bool, reason: str, as_json: bool) -> None:
    """Delete message bytes older than archive.retention (held mailboxes excepted).

    Entries stay as tombstones: their hashes keep the chain whole, so verify passes.
    """
    arch = _open(config_path, migrate=True)
    try:
        report = arch.purge(_who(), reason, dry_run=dry_run)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        arch.close()
    result = {"dry_run": dry_run, "cutoff": report.cutoff and chain.timestamp(report.cutoff),
              "purged": report.purged, "blobs_deleted": report.blobs_deleted,
              "held": report.held}
    if as_json:
        print_json(result)
        return
    if report.cutoff is None:
        click.echo("archive.retention is 0: nothing is ever purged")
        return
    verb = "would purge" if dry_run else "purged"
    click.echo(f"{verb} {len(report.purged)} entries recorded before "
               f"{result['cutoff']}; {report.blobs_deleted} blobs deleted")
    for mailbox, n in report.held.items():
        click.echo(f"kept {n} entries of {printable(mailbox)}: legal hold")


@archive.command()
@config_option
@click.argument("mailbox", required=False)
@click.option("--reason", help="Why (case number, decision); required to place a hold.")
@click.option("--json", "as_json", is_flag=True, help="The list of holds as JSON Lines.")
def hold(config_path: Path | None, mailbox: str | None, reason: str | None,
         as_json: bool) -> None:
    """Place a legal hold on MAILBOX (purge then keeps it); without MAILBOX, list holds."""
    arch = _open(config_path, migrate=mailbox is not None)
    try:
        if mailbox is None:
            for row in arch.holds():
                if as_json:
                    print_json({key: chain.timestamp(value) if key == "since" else value
                                for key, value in dict(row).items()})
                    continue
                click.echo(f"{printable(row['mailbox'])}\tsince {_time(row['since'])}\t"
                           f"{printable(row['who'])}\t{printable(row['reason'])}")
            return
        if not reason:
            raise click.UsageError("--reason is required to place a hold")
        placed = arch.hold(mailbox, _who(), reason)
    finally:
        arch.close()
    click.echo(f"hold placed on {printable(mailbox)}" if placed
               else f"{printable(mailbox)} is already on hold")


@archive.command()
@config_option
@click.argument("mailbox")
@click.option("--reason", required=True, help="Why (decision closing the case).")
def release(config_path: Path | None, mailbox: str, reason: str) -> None:
    """Lift the legal hold on MAILBOX (signed at once: needs the signing key)."""
    arch = _open(config_path, migrate=True)
    try:
        released = arch.release(mailbox, _who(), reason)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        arch.close()
    if not released:
        raise click.ClickException(f"{printable(mailbox)} is not on hold")
    click.echo(f"hold on {printable(mailbox)} released")


COMMANDS = [archive]

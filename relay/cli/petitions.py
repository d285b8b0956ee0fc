"""`relay petitions`: the register of citizen petitions (Điều 8) for the intake officers.

`list`, `show` and `report` only read; `assign` and `close` change a case and record
who did it in its history; `remind` mails each intake mailbox's holders the cases due
soon and overdue (run daily by systemd/relay-petitions-remind.timer). Subjects and
addresses are a citizen's bytes: human output escapes them (`printable`), JSON escapes
on its own. Dates are days in Asia/Ho_Chi_Minh (`--as-of 2026-08-01` means the end of
that day there); times in JSON are UTC with `Z`.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa

from relay.cli.common import (
    OperatorError,
    config_option,
    load_config,
    notify_relay,
    print_json,
    printable,
    who,
)
from relay.config import Config
from relay.db import DatabaseUnavailable
from relay.petitions import CaseFilter, PetitionError, PetitionStore
from relay.petitions.records import STATUSES, Case, ReportRow, iso


def _store(config_path: Path | None) -> PetitionStore:
    config = load_config(config_path)
    try:
        return PetitionStore.open(config, migrate=False)
    except DatabaseUnavailable:
        raise  # one line and its sysexits code, as for every command (cli.common.explain)
    except (PetitionError, sa.exc.SQLAlchemyError) as exc:
        _fail(exc)


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date such as 2026-08-01, got {value!r}") from None


def _fail(exc: Exception) -> NoReturn:
    raise OperatorError(f"petitions: {printable(str(exc))}", 1)


def _short(text: str, width: int) -> str:
    text = printable(text)
    return text if len(text) <= width else text[:width - 1] + "…"


as_of_option = click.option("--as-of", "as_of", metavar="YYYY-MM-DD",
                            help="Status as of the end of this day (default: today).")


@click.group("petitions")
def petitions() -> None:
    """Citizen petitions at the intake mailboxes, tracked to an answer (Điều 8)."""


@petitions.command("list")
@config_option
@click.option("--status", type=click.Choice(STATUSES), default="all", show_default=True,
              help="open (not yet due), due (within [petitions] remind_within working "
              "days), overdue, answered, all.")
@click.option("--mailbox", "mailboxes", multiple=True, help="Intake mailbox (repeatable).")
@click.option("--citizen", help="The citizen's address.")
@as_of_option
@click.option("--limit", type=click.IntRange(1), help="At most this many cases.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one case per line.")
def list_(config_path: Path | None, status: str, mailboxes: tuple[str, ...],
          citizen: str | None, as_of: str | None, limit: int | None, as_json: bool) -> None:
    """The cases, oldest first."""
    store = _store(config_path)
    day = _day(as_of) or store.calendar.today()
    end = store.calendar.day_end(day)
    try:
        cases = store.cases(CaseFilter(status=status, mailboxes=list(mailboxes) or None,
                                       citizen=citizen, as_of=day, limit=limit))
    finally:
        store.close()
    for case in cases:
        if as_json:
            print_json(case.as_dict(day, end))
            continue
        click.echo(f"{printable(case.number)}  {case.status(day, end):<8}  "
                   f"{case.deadline.isoformat()}  {printable(case.mailbox)}  "
                   f"{_short(case.citizen, 40)}  {_short(case.subject, 60)}")
    if not as_json:
        click.echo(f"-- {len(cases)} cases ({status}, as of {day.isoformat()})")


@petitions.command("show")
@config_option
@click.argument("number")
@as_of_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(config_path: Path | None, number: str, as_of: str | None, as_json: bool) -> None:
    """One case: its messages (with their archive entries) and its history.

    The messages' contents stay in the archive: `relay archive show SEQ --reason ...`
    reads one and records who read it."""
    store = _store(config_path)
    day = _day(as_of) or store.calendar.today()
    end = store.calendar.day_end(day)
    try:
        detail = store.case(number)
    finally:
        store.close()
    if detail is None:
        _fail(PetitionError(f"no case {number[:80]!r}"))
    if as_json:
        print_json(detail.as_dict(day, end))
        return
    case = detail.case
    local = case.received_at.astimezone(store.calendar.tz)
    lines = [
        f"Case {printable(case.number)}: {case.status(day, end)} (as of {day.isoformat()})",
        f"Mailbox:         {printable(case.mailbox)}",
        f"Citizen:         {printable(case.citizen)}",
        f"Subject:         {printable(case.subject)}",
        f"Received:        {local:%Y-%m-%d %H:%M} ({iso(case.received_at)})",
        f"Deadline:        {case.deadline.isoformat()} ({case.working_days} working days)",
        f"Acknowledgement: {printable(case.ack_status)}",
        f"Assigned to:     {printable(case.assignee or '-')}",
        f"Reported to:     {printable(', '.join(case.reported_to) or '-')}",
    ]
    if case.answered_by_end(end):
        lines.append(f"Answered:        {iso(case.answered_at)} by "
                     f"{printable(case.answered_by or '-')}"
                     + (f" (closed: {printable(case.closed_reason)})"
                        if case.closed_reason else ""))
    lines.append("Messages:")
    for m in detail.messages:
        entries = ", ".join(str(s) for s in m.archive) or "-"
        lines.append(f"  {iso(m.at)}  {m.direction:<3}  {m.role:<15}  "
                     f"{_short(m.sender, 40)} -> {_short(', '.join(m.recipients), 60)}  "
                     f"archive {entries}")
        lines.append(f"      {_short(m.subject, 100)}")
    lines.append("History:")
    for e in detail.events:
        lines.append(f"  {iso(e.at)}  {_short(e.actor, 40)}  {e.action}  "
                     f"{_short(e.detail, 100)}")
    click.echo("\n".join(lines))


@petitions.command("assign")
@config_option
@click.argument("number")
@click.option("--to", "to", required=True, help="The officer handling it (a local address).")
def assign(config_path: Path | None, number: str, to: str) -> None:
    """Name the officer who handles a case."""
    store = _store(config_path)
    try:
        case = store.assign(number, to, who())
    except PetitionError as exc:
        _fail(exc)
    finally:
        store.close()
    click.echo(f"{printable(case.number)}: assigned to {printable(case.assignee or '')}")


@petitions.command("close")
@config_option
@click.argument("number")
@click.option("--reason", required=True,
              help="How the citizen was answered (by post, in person...).")
def close(config_path: Path | None, number: str, reason: str) -> None:
    """Record a case as answered outside e-mail."""
    store = _store(config_path)
    try:
        case = store.close_case(number, reason, who())
    except PetitionError as exc:
        _fail(exc)
    finally:
        store.close()
    click.echo(f"{printable(case.number)}: closed ({printable(case.closed_reason or '')})")


@petitions.command("report")
@config_option
@as_of_option
@click.option("--since", metavar="YYYY-MM-DD", help="Only cases received on or after this day.")
@click.option("--mailbox", "mailboxes", multiple=True, help="Intake mailbox (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one mailbox per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line.")
def report(config_path: Path | None, as_of: str | None, since: str | None,
           mailboxes: tuple[str, ...], as_json: bool, as_csv: bool) -> None:
    """Per intake mailbox: received, answered on time, answered late, open, overdue."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    store = _store(config_path)
    day = _day(as_of) or store.calendar.today()
    try:
        rows = store.report(day, _day(since), list(mailboxes) or None)
    finally:
        store.close()
    if as_json:
        for row in rows:
            print_json({**row.as_dict(), "as_of": day.isoformat()})
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(ReportRow.FIELDS)
        for row in rows:
            writer.writerow([getattr(row, name) for name in ReportRow.FIELDS])
        return
    click.echo(f"Petitions as of {day.isoformat()}"
               + (f", received since {since}" if since else ""))
    click.echo(f"{'Mailbox':<40} {'Received':>8} {'On time':>8} {'Late':>6} {'Open':>6} "
               f"{'Overdue':>8}")
    totals = [0] * 5
    for row in rows:
        values = [row.received, row.answered_on_time, row.answered_late, row.open, row.overdue]
        totals = [a + b for a, b in zip(totals, values, strict=True)]
        click.echo(f"{printable(row.mailbox):<40} {values[0]:>8} {values[1]:>8} {values[2]:>6} "
                   f"{values[3]:>6} {values[4]:>8}")
    click.echo(f"{'Total':<40} {totals[0]:>8} {totals[1]:>8} {totals[2]:>6} {totals[3]:>6} "
               f"{totals[4]:>8}")


@petitions.command("remind")
@config_option
@as_of_option
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one mailbox per line.")
def remind(config_path: Path | None, as_of: str | None, dry_run: bool, as_json: bool) -> None:
    """Mail each intake mailbox's holders its cases due soon and overdue (daily timer)."""
    config = load_config(config_path)
    if not config.petitions.enabled:
        click.echo("relay petitions: [petitions] is not enabled: nothing to remind", err=True)
        return
    store = _store(config_path)
    try:
        sent = asyncio.run(_remind(config, store, _day(as_of), dry_run))
    finally:
        store.close()
    failed = False
    for item in sent:
        failed |= bool(item.get("error"))
        if as_json:
            print_json(item)
        else:
            what = "would send" if dry_run else ("FAILED" if item.get("error") else "sent")
            click.echo(f"{printable(item['mailbox'])}: {item['overdue']} overdue, "
                       f"{item['due']} due: {what} to {printable(', '.join(item['to']))}"
                       + (f" ({printable(item['error'])})" if item.get("error") else ""))
    sys.exit(1 if failed else 0)


async def _remind(config: Config, store: PetitionStore, as_of: date | None,
                  dry_run: bool) -> list[dict[str, Any]]:
    from relay.archive import Archive
    from relay.directory.store import DirectoryStore
    from relay.petitions import notices, outbox
    from relay.spool import Spool

    day = as_of or store.calendar.today()
    due = await asyncio.to_thread(store.due, day)
    if not due:
        return []
    directory = DirectoryStore(config)
    archive = Archive.open(config, directory, migrate=False) \
        if config.archive.enabled and not dry_run else None
    sender: outbox.Sender | None = None
    spool: Spool | None = None
    if not dry_run:
        if config.petitions.submit_to is not None:
            sender = outbox.SubmitOutbox(config, *config.petitions.submit_to)
        elif config.spool_path.exists():
            spool = Spool(config.spool_path)
            sender = outbox.QueueOutbox(spool, lambda queue_id: None)
        else:
            raise click.ClickException(f"no queue at {config.spool_path}: set [petitions] "
                                       "submit_to (the milter's Postfix) to send reminders")
    mail_from = config.petitions.reminder_from or \
        f"postmaster@{config.server.local_domains[0]}"
    out: list[dict[str, Any]] = []
    try:
        for mailbox, cases in sorted(due.items()):
            to = await _holders(directory, mailbox, cases)
            item: dict[str, Any] = {
                "mailbox": mailbox, "to": to, "as_of": day.isoformat(),
                "overdue": sum(c.deadline < day for c in cases),
                "due": sum(c.deadline >= day for c in cases),
                "cases": [c.number for c in cases]}
            out.append(item)
            if sender is None:
                continue
            data, summary = notices.reminder(mailbox, cases, day, mail_from, to,
                                             config.server.hostname, store.calendar.tz)
            try:
                item["queue_id"] = await outbox.send(sender, archive, config, mail_from, to,
                                                     data, summary)
            except Exception as exc:
                item["error"] = str(exc)[:300]
                continue
            await asyncio.to_thread(store.note, [c.id for c in cases], f"{who()} (remind)",
                                    "reminded", f"to {', '.join(to)}"[:1000])
    finally:
        if sender is not None:
            await sender.aclose()
        if spool is not None:
            spool.close()
            notify_relay(config)
        if archive is not None:
            await archive.aclose()
        await directory.aclose()
    return out


async def _holders(directory: Any, mailbox: str, cases: list[Case]) -> list[str]:
    """Who holds the mailbox (its owner and delegates, Điều 8) and who was assigned its
    cases; the mailbox itself when the directory knows no one."""
    holders: list[str] = []
    try:
        info = await directory.mailbox(mailbox)
    except Exception:
        info = None
    if info is not None:
        holders.extend(a for a in [info.owner, *sorted(info.delegates)] if a)
    holders.extend(c.assignee for c in cases if c.assignee)
    return list(dict.fromkeys(holders)) or [mailbox]


COMMANDS = [petitions]

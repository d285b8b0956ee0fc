"""`relay directory`: administer the provincial directory (danh bạ điện tử, Điều 4–8).

Every write takes `--basis "QĐ số …/… ngày …"` (Điều 5.3, 6) and is recorded in the
change log with who made it. Passwords are read with `--password-stdin` or
generated and printed once; they are never echoed, logged or put in the log.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from relay.cli.common import config_option, load_config, print_json, print_lines, printable
from relay.directory import lockout, passwords
from relay.directory.admin import Directory, DirectoryError, Writer, default_actor
from relay.directory.schema import Kind, Status

F = TypeVar("F", bound=Callable[..., Any])


def write_options(func: F) -> F:
    func = click.option("--actor", default=None,
                        help="Who makes the change, for the log (default: your login name).")(func)
    func = click.option("--basis", required=True,
                        help='Legal basis, e.g. "QĐ số 12/QĐ-UBND ngày 01/03/2026".')(func)
    return config_option(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="JSON Lines on stdout (one object per line).")(func)


def _directory(config_path: Path | None) -> Directory:
    return Directory(load_config(config_path))


@contextmanager
def _writing(config_path: Path | None, basis: str, actor: str | None) -> Iterator[Writer]:
    directory = _directory(config_path)
    try:
        with directory.write(actor or default_actor(), basis) as writer:
            yield writer
    except (DirectoryError, ValueError) as exc:
        raise click.ClickException(printable(exc)) from None
    finally:
        directory.close()


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("--password-stdin: no password on standard input")
    return password


def _show_password(address: str, password: str) -> None:
    click.echo(f"Password for {printable(address)} (shown once, give it to its owner): "
               f"{password}")


@click.group("directory")
def directory() -> None:
    """The provincial directory: agencies, mailboxes, delegations, change log, HR sync."""


# --- agencies -------------------------------------------------------------------
@directory.group("agency")
def agency() -> None:
    """Agencies (sở, ban, ngành, huyện…): each has the official address <code>@."""


@agency.command("add")
@click.argument("code")
@click.option("--name", required=True, help="Full name, in Vietnamese.")
@click.option("--parent", default=None, help="Code of the parent agency.")
@write_options
def agency_add(code: str, name: str, parent: str | None, config_path: Path | None,
               basis: str, actor: str | None) -> None:
    """Register an agency."""
    with _writing(config_path, basis, actor) as w:
        a = w.add_agency(code, name, parent)
        click.echo(f"agency {printable(a.code)} added")


@agency.command("list")
@config_option
@json_option
def agency_list(config_path: Path | None, as_json: bool) -> None:
    """All agencies."""
    rows = _directory(config_path).agencies()
    if as_json:
        print_lines(rows)
        return
    for a in rows:
        parent = f" (in {printable(a['parent'])})" if a["parent"] else ""
        click.echo(f"{printable(a['code']):<16} {a['status']:<7} {printable(a['name'])}{parent}")


@agency.command("rename")
@click.argument("code")
@click.option("--name", required=True, help="The new full name.")
@write_options
def agency_rename(code: str, name: str, config_path: Path | None, basis: str,
                  actor: str | None) -> None:
    """Change an agency's name (its code, and so its address, stays)."""
    with _writing(config_path, basis, actor) as w:
        w.update_agency(code, name=name)
        click.echo(f"agency {printable(code)} renamed")


@agency.command("close")
@click.argument("code")
@write_options
def agency_close(code: str, config_path: Path | None, basis: str, actor: str | None) -> None:
    """Close an agency; its official mailboxes are removed (the archive keeps their mail)."""
    with _writing(config_path, basis, actor) as w:
        w.close_agency(code)
        click.echo(f"agency {printable(code)} closed")


# --- mailboxes ------------------------------------------------------------------
@directory.group("mailbox")
def mailbox() -> None:
    """Mailboxes: personal, official, citizen_intake (Điều 4)."""


@mailbox.command("add")
@click.argument("address")
@click.option("--kind", required=True, type=click.Choice([k.value for k in Kind]))
@click.option("--agency", "agency_code", required=True, help="Agency code.")
@click.option("--name", default=None, help="Owner's full name (a new person).")
@click.option("--hr-id", default=None, help="Owner's HR id (an existing or a new person).")
@click.option("--title", default="", help="Owner's job title.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--no-password", is_flag=True, help="Set no password now (reset-password later).")
@write_options
def mailbox_add(address: str, kind: str, agency_code: str, name: str | None,
                hr_id: str | None, title: str, password_stdin: bool, no_password: bool,
                config_path: Path | None, basis: str, actor: str | None) -> None:
    """Create a mailbox. Without --password-stdin a password is generated and shown once."""
    password = _read_password() if password_stdin else (
        None if no_password else passwords.generate())
    with _writing(config_path, basis, actor) as w:
        owner = None
        if hr_id:
            owner = w.person_by_hr_id(hr_id)
        if owner is None and (name or hr_id):
            if not name:
                raise DirectoryError(f"no person with HR id {hr_id}: give --name to create one")
            owner = w.add_person(name, agency_code, hr_id=hr_id, title=title)
        box = w.add_mailbox(address, kind, agency_code, owner, password)
        click.echo(f"mailbox {printable(box.address)} ({box.kind}) added")
    if password and not password_stdin:
        _show_password(box.address, password)


@mailbox.command("show")
@click.argument("address")
@config_option
@json_option
def mailbox_show(address: str, config_path: Path | None, as_json: bool) -> None:
    """One mailbox with its delegations and its sending rate (policy rate_limit)."""
    directory = _directory(config_path)
    box = directory.mailbox(address)
    if box is None:
        raise click.ClickException(f"no mailbox {printable(address)}")
    box["rate"] = _rate(directory, box["address"])
    if as_json:
        print_json(box)
        return
    for key, value in box.items():
        if key not in ("delegations", "rate"):
            click.echo(f"{key:<12} {printable(value) if value is not None else '-'}")
    rate = box["rate"]
    if rate["limit"] or rate["refused_last_7d"]:
        state = "OVER THE LIMIT" if rate["over"] else "ok"
        click.echo(f"{'rate':<12} {rate['count']:g} messages in the window, limit "
                   f"{rate['limit'] or '-'}: {state}")
    if rate["refused_last_7d"]:
        click.secho(f"{'rate_limited':<12} {rate['refused_last_7d']} messages refused in the "
                    f"last 7 days, last at {rate['last_refused']:%Y-%m-%d %H:%M} UTC "
                    f"(a stolen password? Điều 7.4)", fg="red")
    for d in box["delegations"]:
        state = "active" if d["active"] else "ended"
        click.echo(f"delegate     {printable(d['address'] or d['hr_id'])} "
                   f"({printable(d['person'])}) {state}, "
                   f"from {d['valid_from']:%Y-%m-%d}, basis: {printable(d['basis'])}")


def _rate(directory: Directory, address: str) -> dict[str, Any]:
    """The login's counters of the `rate_limit` policy (relay.ratelimit)."""
    from pydantic import ValidationError

    from policies.rate_limit import Options
    from relay.ratelimit import usage

    table = directory.config.policies.get("rate_limit")
    try:
        limit = Options.model_validate(table).per_login if table is not None else None
    except ValidationError:
        limit = None  # `relay check-config` names the key; show the counts anyway
    return usage(directory.db, "login", address, limit)


@mailbox.command("list")
@click.option("--agency", "agency_code", default=None)
@click.option("--kind", type=click.Choice([k.value for k in Kind]), default=None)
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None,
              help="Default: active and suspended.")
@config_option
@json_option
def mailbox_list(agency_code: str | None, kind: str | None, status: str | None,
                 config_path: Path | None, as_json: bool) -> None:
    """Mailboxes, filtered."""
    rows = _directory(config_path).mailboxes(agency_code, kind, status)
    if as_json:
        print_lines(rows)
        return
    for b in rows:
        owner = b["owner_name"] or "-"
        click.echo(f"{printable(b['address']):<40} {b['kind']:<15} {b['status']:<9} "
                   f"{printable(b['agency']):<12} {printable(owner)}")


def _status_command(name: str, status: Status, doc: str) -> click.Command:
    @mailbox.command(name, help=doc)
    @click.argument("address")
    @write_options
    def command(address: str, config_path: Path | None, basis: str, actor: str | None) -> None:
        with _writing(config_path, basis, actor) as w:
            w.set_status(address, status)
            click.echo(f"mailbox {printable(address.lower())} {status.value}")

    return command


_status_command("suspend", Status.SUSPENDED, "Suspend a mailbox: no login, no mail.")
_status_command("restore", Status.ACTIVE, "Make a suspended or removed mailbox active again.")
_status_command("remove", Status.REMOVED,
                "Remove a mailbox (Điều 6.3). Its archived mail is kept; its address is "
                "quarantined.")


@mailbox.command("rename")
@click.argument("address")
@click.argument("new_address")
@write_options
def mailbox_rename(address: str, new_address: str, config_path: Path | None, basis: str,
                   actor: str | None) -> None:
    """Change a mailbox's address (Điều 6.2); the old one is quarantined."""
    with _writing(config_path, basis, actor) as w:
        box = w.rename_mailbox(address, new_address)
        click.echo(f"mailbox {printable(address.lower())} is now {printable(box.address)}")


@mailbox.command("reset-password")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@write_options
def mailbox_reset_password(address: str, password_stdin: bool, config_path: Path | None,
                           basis: str, actor: str | None) -> None:
    """Set a new password (Điều 7.4); generated and shown once unless --password-stdin."""
    password = _read_password() if password_stdin else passwords.generate()
    with _writing(config_path, basis, actor) as w:
        w.set_password(address, password)
    if password_stdin:
        click.echo(f"password of {printable(address.lower())} changed")
    else:
        _show_password(address.lower(), password)


# --- official mailboxes (Điều 8) ------------------------------------------------
def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date such as 2026-12-31, got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@directory.command("delegate")
@click.argument("official")
@click.option("--to", "to", required=True, help="Personal address (or HR id) of the delegate.")
@click.option("--until", default=None, help="End of the delegation (ISO date/time, UTC).")
@write_options
def delegate(official: str, to: str, until: str | None, config_path: Path | None, basis: str,
             actor: str | None) -> None:
    """Let a person use an official or citizen-intake mailbox (Điều 8)."""
    with _writing(config_path, basis, actor) as w:
        w.delegate(official, to, _parse_until(until))
        click.echo(f"{printable(to)} may now use {printable(official.lower())}")


@directory.command("revoke")
@click.argument("official")
@click.option("--from", "from_", required=True, help="Personal address (or HR id).")
@write_options
def revoke(official: str, from_: str, config_path: Path | None, basis: str,
           actor: str | None) -> None:
    """End a delegation (Điều 8)."""
    with _writing(config_path, basis, actor) as w:
        w.revoke(official, from_)
        click.echo(f"{printable(from_)} may no longer use {printable(official.lower())}")


@directory.command("handover")
@click.argument("official")
@click.option("--to", "to", required=True, help="The new head: personal address or HR id.")
@write_options
def handover(official: str, to: str, config_path: Path | None, basis: str,
             actor: str | None) -> None:
    """A new head takes the official mailbox (Điều 8): new password, old delegations end."""
    with _writing(config_path, basis, actor) as w:
        password = w.handover(official, to)
    click.echo(f"{printable(official.lower())} handed over to {printable(to)}; former "
               "delegations ended")
    _show_password(official.lower(), password)


# --- SMTP AUTH lockouts (Điều 7.4) ----------------------------------------------
@directory.group("lockout")
def lockout_group() -> None:
    """SMTP AUTH lockouts: logins and client networks (IPv4 address, IPv6 /64) with failed
    attempts, shared by every relay node."""


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@lockout_group.command("list")
@click.option("--locked", "locked_only", is_flag=True, help="Only the keys locked now.")
@config_option
@json_option
def lockout_list(locked_only: bool, config_path: Path | None, as_json: bool) -> None:
    """Logins and client networks with failures in the current window, and lockouts."""
    rows = lockout.entries(_directory(config_path).db, locked_only)
    for row in rows:
        for key in ("locked_until", "window_start", "last_attempt"):
            row[key] = _when(row[key])
    if as_json:
        for row in rows:
            print_json(row)
        return
    for r in rows:
        state = f"locked until {r['locked_until']}" if r["locked"] else "not locked"
        click.echo(f"{r['scope']:<6} {printable(r['subject']):<40} {r['failures']:>4} failures"
                   f"  {state}")
    if not rows:
        click.echo("no lockouts" if locked_only else "no failed logins")


def _lockout_key(text: str, local_domains: list[str]) -> tuple[str, str]:
    """A login, an IP address (an IPv6 one stands for its /64) or an IPv6 /64 network."""
    try:
        ipaddress.ip_address(text)
        return lockout.IP, lockout.network_key(text)
    except ValueError:
        pass
    try:
        return lockout.IP, str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return lockout.LOGIN, lockout.login_key(text, local_domains)


@lockout_group.command("clear")
@click.argument("keys", nargs=-1)
@click.option("--all", "clear_all", is_flag=True, help="Clear every login and network.")
@config_option
def lockout_clear(keys: tuple[str, ...], clear_all: bool, config_path: Path | None) -> None:
    """Let logins or client networks (KEYS: logins, IP addresses) try again now."""
    if clear_all == bool(keys):
        raise click.UsageError("give logins or IP addresses, or --all")
    config = load_config(config_path)
    directory = Directory(config)
    try:
        if clear_all:
            click.echo(f"cleared {lockout.clear(directory.db, None)} entries")
            return
        missing = 0
        for text in keys:
            scope, subject = _lockout_key(text, config.server.local_domains)
            if lockout.clear(directory.db, [(scope, subject)]):
                click.echo(f"cleared {scope} {printable(subject)}")
            else:
                missing += 1
                click.echo(f"relay: no failed logins for {scope} {printable(subject)}",
                           err=True)
    finally:
        directory.close()
    sys.exit(1 if missing else 0)


# --- history and helpers --------------------------------------------------------
@directory.command("log")
@click.option("--key", "--address", "key", default=None, help="Address, agency code or HR id.")
@click.option("--actor", default=None)
@click.option("--since", default=None, help="ISO date.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@config_option
@json_option
def log_command(key: str | None, actor: str | None, since: str | None, limit: int,
                config_path: Path | None, as_json: bool) -> None:
    """The change history: who changed what, when, before/after, on which legal basis."""
    rows = _directory(config_path).log(key, actor, _parse_until(since), limit)
    if as_json:
        print_lines(rows)
        return
    for c in rows:
        click.echo(f"{c['at']:%Y-%m-%d %H:%M:%S} {printable(c['actor']):<12} "
                   f"{printable(c['action']):<22} {printable(c['key']):<32} "
                   f"[{printable(c['basis'])}]")


@directory.command("suggest-address")
@click.argument("full_name")
@click.option("--agency", "agency_code", default=None)
@click.option("--pattern", default=None,
              help="e.g. '{given}{initials}' (annv) or '{given}.{family}{middle}' "
                   "(an.nguyenvan); default [directory] address_pattern.")
@config_option
@json_option
def suggest_address(full_name: str, agency_code: str | None, pattern: str | None,
                    config_path: Path | None, as_json: bool) -> None:
    """Propose a free personal address for a Vietnamese name."""
    try:
        address = _directory(config_path).suggest_address(full_name, agency_code, pattern)
    except (DirectoryError, ValueError) as exc:
        raise click.ClickException(printable(exc)) from None
    if as_json:
        print_json({"name": full_name, "address": address})
    else:
        click.echo(printable(address))


@directory.command("sync")
@click.option("--source", required=True,
              help="HR feed: a .csv or .jsonl file or http(s) URL, or ldap://host:port/BASE-DN.")
@click.option("--dry-run", is_flag=True, help="Print the plan, change nothing.")
@click.option("--bind-dn", default=None, envvar="RELAY_LDAP_BIND_DN", help="LDAP bind DN.")
@click.option("--bind-password-file", default=None, type=click.Path(dir_okay=False),
              envvar="RELAY_LDAP_BIND_PASSWORD_FILE", help="File holding the LDAP password.")
@click.option("--actor", default=None, help="Who runs the sync (default: directory-sync).")
@config_option
@json_option
def sync(source: str, dry_run: bool, bind_dn: str | None, bind_password_file: str | None,
         actor: str | None, config_path: Path | None, as_json: bool) -> None:
    """Bring the directory in line with the HR feed of the Department of Home Affairs (Điều 5.2,
    6). Exit status: 0 done (or nothing to do), 1 the feed is malformed (nothing applied)."""
    from relay.cli.sync import run_sync

    run_sync(load_config(config_path), source, dry_run=dry_run, as_json=as_json,
             bind_dn=bind_dn, bind_password_file=bind_password_file,
             actor=actor or f"directory-sync:{default_actor()}")


COMMANDS = [directory]

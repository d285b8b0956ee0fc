"""`relay web`: serve the read-only web console, and manage its accounts.

`relay web -c CFG` serves; `relay web user add|list|disable|enable|passwd|unlock|assign`
manage the console's own accounts (not mailbox logins) in the relay's database.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from relay.cli.common import config_option, load_config, print_json, resolve_config_path

if TYPE_CHECKING:
    from relay.web.accounts import Accounts


def _config_path(ctx: click.Context, own: Path | None) -> Path | None:
    """-c after the subcommand, else -c given to `relay web`."""
    return own if own is not None else (ctx.obj or {}).get("web_config")


@click.group("web", invoke_without_command=True)
@config_option
@click.pass_context
def web(ctx: click.Context, config_path: Path | None) -> None:
    """Serve the read-only web console on [web] bind (SIGHUP reloads, SIGTERM stops)."""
    ctx.ensure_object(dict)
    ctx.obj["web_config"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    from relay.web.server import run

    config = load_config(config_path)
    sys.exit(run(config, resolve_config_path(config_path)))


@web.group("user")
def user() -> None:
    """The console's accounts: auditor, petitions or admin."""


@contextmanager
def _accounts(ctx: click.Context, config_path: Path | None) -> Iterator[Accounts]:
    from relay.db import make_engine
    from relay.web import schema
    from relay.web.accounts import Accounts

    config = load_config(_config_path(ctx, config_path))
    engine = make_engine(config.directory_url)
    try:
        schema.migrate(engine)
        yield Accounts(engine)
    finally:
        engine.dispose()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to ask for the password: use --password-stdin")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _run(action: Callable[[], Any]) -> None:
    from relay.web.accounts import AccountError

    try:
        action()
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["auditor", "petitions", "admin"]))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input "
              "(one line) instead of asking twice.")
@click.option("--mailbox", "mailboxes", multiple=True,
              help="A mailbox whose petitions this user handles (repeatable; petitions role).")
@config_option
@click.pass_context
def add(ctx: click.Context, name: str, role: str, password_stdin: bool,
        mailboxes: tuple[str, ...], config_path: Path | None) -> None:
    """Create a web account (argon2id hash; at least 10 characters)."""
    password = _password(password_stdin)
    with _accounts(ctx, config_path) as accounts:
        _run(lambda: accounts.add(name, role, password, mailboxes))
    click.echo(f"web user {name} added ({role})")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
@click.pass_context
def list_users(ctx: click.Context, as_json: bool, config_path: Path | None) -> None:
    """Every web account: role, enabled, lockout, last login, assigned mailboxes."""
    from relay.web.schema import now

    with _accounts(ctx, config_path) as accounts:
        users = accounts.users()
    at = now()
    for u in users:
        entry = {"name": u.username, "role": u.role.value, "enabled": u.enabled,
                 "locked_until": u.locked_until if u.locked(at) else None,
                 "last_login": u.last_login_at, "mailboxes": list(u.mailboxes)}
        if as_json:
            print_json(entry)
            continue
        state = "enabled" if u.enabled else "disabled"
        if u.locked(at):
            state += f", locked until {u.locked_until:%Y-%m-%d %H:%M} UTC"
        last = f"{u.last_login_at:%Y-%m-%d %H:%M} UTC" if u.last_login_at else "never"
        boxes = f"\t{', '.join(u.mailboxes)}" if u.mailboxes else ""
        click.echo(f"{u.username}\t{u.role.value}\t{state}\tlast login {last}{boxes}")


def _simple(name: str, done: str, doc: str, method: str, *args: object) -> None:
    @click.argument("username")
    @config_option
    @click.pass_context
    def command(ctx: click.Context, username: str, config_path: Path | None) -> None:
        with _accounts(ctx, config_path) as accounts:
            _run(lambda: getattr(accounts, method)(username, *args))
        click.echo(f"web user {username}: {done}")

    command.__doc__ = doc
    user.command(name)(command)


_simple("disable", "disabled", "Disable a web account; its open sessions end at once.",
        "set_enabled", False)
_simple("enable", "enabled", "Enable a disabled web account.", "set_enabled", True)
_simple("unlock", "unlocked", "Lift a lockout after failed logins.", "unlock")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard "
              "input (one line).")
@config_option
@click.pass_context
def passwd(ctx: click.Context, name: str, password_stdin: bool,
           config_path: Path | None) -> None:
    """Set a new password; the user's open sessions end and a lockout is lifted."""
    password = _password(password_stdin)
    with _accounts(ctx, config_path) as accounts:
        _run(lambda: accounts.set_password(name, password))
    click.echo(f"web user {name}: password changed")


@user.command("assign")
@click.argument("name")
@click.option("--mailbox", "mailboxes", multiple=True,
              help="Mailbox (repeatable); none clears the list.")
@config_option
@click.pass_context
def assign(ctx: click.Context, name: str, mailboxes: tuple[str, ...],
           config_path: Path | None) -> None:
    """Set the mailboxes whose petitions a user handles."""
    with _accounts(ctx, config_path) as accounts:
        _run(lambda: accounts.assign(name, mailboxes))
    click.echo(f"web user {name}: {len(mailboxes)} mailbox(es) assigned")


COMMANDS = [web]

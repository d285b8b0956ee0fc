"""What every `relay` subcommand shares: the -c option, loading the configuration with
clean errors, JSON output, text safe for a terminal, whether a person is watching, and
how a failure the operator can fix is told: one line naming what failed and a sysexits(3)
code, never a traceback.

The mapping from exceptions to that line and code is `explain()`, applied once to every
command by `RelayGroup` (the `relay` group): commands raise, they do not print and exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from relay import pidfile
from relay.config import EX_CONFIG, Config, ConfigError, load

if TYPE_CHECKING:
    from relay.policyset import PolicySet

F = TypeVar("F", bound=Callable[..., Any])

# sysexits.h
EX_USAGE = 64  # bad input from the operator (arguments, standard input)
EX_UNAVAILABLE = 69  # a service we need is not there: an address already taken
EX_CANTCREAT = 73  # a file or folder we must write cannot be created
EX_TEMPFAIL = 75  # try again later: the database does not answer

SYSTEM_CONFIG = Path("/etc/relay/relay.toml")


def config_option(func: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        envvar="RELAY_CONFIG",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Configuration file (default: {SYSTEM_CONFIG} if present, else the embedded "
        "defaults). Env: RELAY_CONFIG.",
    )(func)


def resolve_config_path(path: Path | None) -> Path | None:
    if path is not None:
        return path
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def load_config(path: Path | None) -> Config:
    """The configuration, or exit 78 (EX_CONFIG) with the message naming the key."""
    try:
        return load(resolve_config_path(path))
    except ConfigError as exc:
        click.echo(f"relay: configuration error:\n{exc}", err=True)
        sys.exit(EX_CONFIG)


def load_policies(config: Config) -> PolicySet:
    """The configured policies, or exit 78 (EX_CONFIG) naming the key."""
    from relay.policyset import configure

    try:
        return configure(config)
    except ConfigError as exc:
        click.echo(f"relay: configuration error:\n{exc}", err=True)
        sys.exit(EX_CONFIG)


def print_json(obj: Any) -> None:
    """One JSON value on one line (JSON Lines: call once per object of a listing);
    datetimes as RFC 3339 UTC with `Z`. Vietnamese stays readable; what JSON itself
    leaves raw but a terminal or a line splitter acts on (DEL, C1, bidi overrides,
    U+2028/9, lone surrogates) is written as \\uXXXX: the same value, safe on any screen."""
    text = json.dumps(obj, ensure_ascii=False, default=_json_default)
    click.echo(_UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def print_lines(rows: Iterable[Any]) -> None:
    """A listing as JSON Lines."""
    for row in rows:
        print_json(row)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    return str(value)


def is_interactive(json_output: bool = False) -> bool:
    """Progress bars only for a person at a terminal, never with --json or when piped."""
    return not json_output and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


# What must never reach a terminal from stored or client-supplied text: C0 controls (ESC
# starts the sequences that move the cursor, set the window title or write to the
# clipboard), DEL, C1 controls (U+009B is a one-character CSI), bidirectional overrides
# and isolates (they reorder what the reader sees), the Unicode line and paragraph
# separators, and lone surrogates (undecodable bytes kept by surrogateescape).
_OTHERS = r"\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_UNSAFE_LINE = re.compile(r"[\x00-\x1f" + _OTHERS + "]")
_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f" + _OTHERS + "]")  # keeps TAB and LF
_UNSAFE_JSON = re.compile(f"[{_OTHERS}]")  # json.dumps escapes C0 itself


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, multiline: bool = False) -> str:
    """`value` as text that is safe to print for a person: every character above
    shown as a visible escape (`\\x1b`, `\\u202e`). One line unless `multiline`, which
    keeps LF and TAB (a message body); CR is always escaped. Use it on every stored or
    client-supplied value in human (non-JSON) output; JSON escapes on its own."""
    text = value if isinstance(value, str) else str(value)
    if multiline:
        text = text.replace("\r\n", "\n")
    return (_UNSAFE_TEXT if multiline else _UNSAFE_LINE).sub(_escape, text)


def rfc3339(value: float | datetime | None) -> str | None:
    """UTC with `Z` (RFC 3339), the one timestamp shape of every --json output."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    elif value.tzinfo is None:  # the stores keep naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- failures the operator can fix: one line and a sysexits code -------------------
class OperatorError(click.ClickException):
    """A failure with its own message and exit code (EX_USAGE by default)."""

    def __init__(self, message: str, exit_code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"relay: {self.format_message()}", err=True)


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit code for a failure an operator can fix; None for a bug
    (whose traceback is worth reading)."""
    from relay.daemon import ListenError
    from relay.db import DatabaseUnavailable

    if isinstance(exc, ConfigError):
        return f"configuration error:\n{exc}", EX_CONFIG
    if isinstance(exc, ListenError):
        return str(exc), EX_UNAVAILABLE
    if isinstance(exc, DatabaseUnavailable):
        return str(exc), EX_CANTCREAT if exc.local else EX_TEMPFAIL
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or os.strerror(exc.errno or 0)
        return f"cannot create or open {exc.filename}: {reason}", EX_CANTCREAT
    return None


class RelayGroup(click.Group):
    """The `relay` group: every command's operator failures become one line + a code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            found = explain(exc)
            if found is None:
                raise
            message, code = found
            click.echo(f"relay: {message}", err=True)
            ctx.exit(code)


def who() -> str:
    """The person running a command, for a record of who did what (sudo shows both)."""
    import getpass

    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def notify_relay(config: Config) -> None:
    """Ask a running relay to rescan its queue now (SIGUSR1), if one is running; a stale
    relay.pid naming another process is left alone (`relay.pidfile`)."""
    path = config.state_file("relay.pid")
    pid = pidfile.running_relay(path)
    if pid is None:
        if path.exists():
            click.echo(f"relay: {path} names no running relay; not signalled", err=True)
        return
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError:
        pass

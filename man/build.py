"""Write man/relay.8 from the `relay` command tree (click) and man/relay.toml.5 from the
comments of relay.toml, so the pages say what the code and the example file say.

    .venv/bin/python man/build.py            # rewrite both pages
    .venv/bin/python man/build.py --check    # exit 1 when a page is stale (the tests do)

Read them with `man -l man/relay.8`; installed, `man 8 relay` and `man 5 relay.toml`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.cli import main as relay_cli  # noqa: E402

DATE = "2026-12"


def package_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"', text, re.M)
    return found.group(1) if found else "unknown"


def esc(text: str) -> str:
    """Text for roff: backslashes and hyphens escaped, no line starting with . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.splitlines())


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


# --- relay(8) ---------------------------------------------------------------------------
def commands(group: click.Group, prefix: str = "relay") -> list[tuple[str, click.Command]]:
    out = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            out.extend(commands(command, path))
        else:
            out.append((path, command))
    return out


def usage(path: str, command: click.Command) -> str:
    ctx = click.Context(command, info_name=path)
    pieces = command.collect_usage_pieces(ctx)
    return f"{bold(path)} {esc(' '.join(pieces))}"


def option_lines(command: click.Command, path: str) -> list[str]:
    ctx = click.Context(command, info_name=path)
    out = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or "--config" in param.opts:
            continue  # -c is told once, in DESCRIPTION
        names = ", ".join(param.opts + param.secondary_opts)
        metavar = "" if param.is_flag else f" {_metavar(param, ctx)}"
        out += [".TP", f"{bold(names)}{esc(metavar)}", esc(param.help or "")]
    return out


def _metavar(param: click.Parameter, ctx: click.Context) -> str:
    try:
        return param.make_metavar(ctx)  # click >= 8.2
    except TypeError:
        return param.make_metavar()  # type: ignore[call-arg]


def help_text(command: click.Command) -> str:
    text = (command.help or "").split("\f")[0]
    return "\n.PP\n".join(esc(" ".join(p.split())) for p in text.strip().split("\n\n") if p)


def relay_8() -> str:
    lines = [
        f'.TH RELAY 8 "{DATE}" "dienbien-relay {package_version()}" "System Administration"',
        ".SH NAME",
        "relay \\- policy\\-enforcing SMTP relay and milter for the \\(lqĐiện Biên\\(rq "
        "provincial mail system",
        ".SH SYNOPSIS", f"{bold('relay')} \\fIcommand\\fR [\\fIoptions\\fR] [\\fIarguments\\fR]",
        ".SH DESCRIPTION",
        esc("relay checks every message against the province's e-mail regulation "
            "(QĐ 28/2005/QĐ-UBND) before it is queued and delivered, either as an SMTP relay "
            "(relay serve) or inside an existing Postfix (relay milter). Its configuration is "
            "one file, relay.toml(5). The same command administers the queue, the directory "
            "of mailboxes, the archive of official mail and the configuration."),
        ".PP",
        esc("Every command takes -c FILE (or the environment variable RELAY_CONFIG); "
            "without it /etc/relay/relay.toml is read when it exists, else the embedded "
            "defaults. Listings take --json and then print JSON Lines (one object per line, "
            "timestamps in RFC 3339 with Z)."),
        ".SH COMMANDS",
    ]
    for path, command in commands(relay_cli):
        lines += [".SS " + esc(path), usage(path, command), ".PP", help_text(command)]
        options = option_lines(command, path)
        if options:
            lines += [".PP", "Options:", ".RS", *options, ".RE"]
    lines += [
        ".SH EXIT STATUS",
        "Commands exit 0 on success. A failure an operator can fix prints one line naming "
        "what failed and exits with a code from sysexits.h:",
        ".TP", "\\fB1\\fR", "a refusal or a finding (test\\-message rejected, archive verify "
        "found tampering, a queue id that is not queued)",
        ".TP", "\\fB2\\fR", "a usage error found by the argument parser; archive verify could "
        "not read the archive",
        ".TP", "\\fB64\\fR (EX_USAGE)", "bad input on standard input or in arguments",
        ".TP", "\\fB69\\fR (EX_UNAVAILABLE)", "an address to listen on is taken or refused",
        ".TP", "\\fB73\\fR (EX_CANTCREAT)", "a file or folder cannot be created (state_dir, "
        "spool, a SQLite database)",
        ".TP", "\\fB75\\fR (EX_TEMPFAIL)", "the database does not answer: try again later; "
        "also test\\-message for a temporary failure",
        ".TP", "\\fB78\\fR (EX_CONFIG)", "the configuration is invalid; the message names the "
        "file and the key. systemd does not restart the relay on it",
        ".SH SIGNALS",
        "For relay serve and relay milter:",
        ".TP", "\\fBSIGHUP\\fR", "reload relay.toml (an invalid file is refused and the old "
        "configuration stays) and reopen the decision log",
        ".TP", "\\fBSIGUSR2\\fR", "reopen the decision log (logrotate's postrotate)",
        ".TP", "\\fBSIGUSR1\\fR", "rescan the queue now (relay queue flush sends it)",
        ".TP", "\\fBSIGTERM\\fR, \\fBSIGINT\\fR", "stop after the sessions in progress",
        ".SH LOGGING",
        esc("Daemon messages go to stderr with sd-daemon(3) priority prefixes for journald. "
            "Each transaction is one JSON line in the decision log (server.decision_log). "
            "Postfix-shaped lines (QUEUEID: from=<...>, size=..., nrcpt=...; to=<...>, "
            "relay=..., delay=..., delays=..., dsn=..., status=...; NOQUEUE: reject: ...) go "
            "to syslog, facility mail, as relay/smtpd, relay/qmgr, relay/local, relay/lmtp "
            "and relay/smtp, which pflogsumm --syslog-name=relay reads."),
        ".SH ENVIRONMENT",
        ".TP", "\\fBRELAY_CONFIG\\fR", "the configuration file, as with \\-c",
        ".TP", "\\fBPROMETHEUS_MULTIPROC_DIR\\fR",
        "when set, /metrics adds up what every relay process wrote there",
        ".SH FILES",
        ".TP", "\\fI/etc/relay/relay.toml\\fR", "the configuration, see relay.toml(5)",
        ".TP", "\\fI/var/lib/relay\\fR", "state_dir: databases, archive, TLS material, "
        "log/decisions.jsonl",
        ".TP", "\\fI/var/spool/relay\\fR", "spool_dir: the queue",
        ".TP", "\\fI/usr/lib/systemd/system/relay.service\\fR, \\fIrelay\\-milter.service\\fR",
        "the daemons' units",
        ".TP", "\\fI/etc/logrotate.d/relay\\fR", "rotates the decision log",
        ".SH SEE ALSO",
        "relay.toml(5), postfix(1), postconf(5), pflogsumm(1), logrotate(8), "
        "systemd.service(5), sysexits.h",
        "",
    ]
    return "\n".join(lines)


# --- relay.toml(5) ------------------------------------------------------------------------
KEY = re.compile(r"^(#\s?)?([A-Za-z_][A-Za-z0-9_]*|\"[^\"]+\")\s*=\s*(.+?)(?:\s+#\s?(.*))?$")
SECTION = re.compile(r"^(#\s?)?\[([^\]]+)\]\s*(?:#\s?(.*))?$")


def block(comments: list[str]) -> list[str]:
    """Comment lines as roff: prose filled, indented lines (examples, lists) kept as they are."""
    out: list[str] = []
    prose: list[str] = []
    for comment in comments:
        if comment.startswith("  "):
            if prose:
                out.append(esc(" ".join(prose)))
                prose = []
            out += [".nf", esc(comment.strip()), ".fi"]
        else:
            prose.append(comment.strip())
    if prose:
        out.append(esc(" ".join(prose)))
    return out


def relay_toml_5() -> str:
    text = (ROOT / "relay.toml").read_text()
    preamble, _, body = text.partition("\n[")
    body = "[" + body
    lines = [
        f'.TH RELAY.TOML 5 "{DATE}" "dienbien-relay {package_version()}" "File Formats"',
        ".SH NAME", "relay.toml \\- configuration of the relay(8) policy\\-enforcing relay",
        ".SH SYNOPSIS", "\\fI/etc/relay/relay.toml\\fR",
        ".SH DESCRIPTION",
        esc(" ".join(line.lstrip("# ").strip() for line in preamble.splitlines()[2:]
                     if line.strip("# ") and not line.startswith("#   "))),
        ".PP",
        esc("relay check-config -c FILE validates a file (exit 78 naming the key when it is "
            "not valid); relay config show prints every key in force, --changed only those "
            "that differ from the defaults. Each key below is shown with the value of the "
            "example relay.toml shipped with the relay; a key or table written as a comment "
            "there is not set (or not enabled) by default."),
        ".SH KEYS",
    ]
    pending: list[str] = []  # comment lines waiting for what follows them
    for raw in body.splitlines():
        line = raw.rstrip()
        if not line.strip():
            if pending:  # a comment block on its own: a paragraph, titled when it says so
                title, _, rest = pending[0].partition(":")
                if rest and " " not in title.strip() and title[:1].isupper():
                    lines += [".SS " + esc(title.strip())]
                    pending = [rest.strip(), *pending[1:]] if rest.strip() else pending[1:]
                else:
                    lines += [".PP"]
                lines += block(pending)
                pending = []
            continue
        stripped = line.lstrip()
        section = SECTION.match(stripped)
        key = KEY.match(stripped) if not section else None
        if section:
            commented, name, note = section.groups()
            lines += [".SS " + esc(f"[{name}]" + ("   (not enabled by default)"
                                                   if commented else ""))]
            lines += block([*pending, *([note] if note else [])])
            pending = []
        elif key:
            commented, name, value, note = key.groups()
            shown = f"{name} = {value}" + ("   (not set by default)" if commented else "")
            lines += [".TP", bold(shown), *block(pending), *([esc(note)] if note else [])]
            pending = []
        elif stripped.startswith("#"):
            comment = stripped[1:]
            comment = comment[1:] if comment.startswith(" ") else comment
            if raw.startswith(" ") and lines and not lines[-1].startswith("."):
                lines[-1] += " " + esc(comment.strip())  # continued under the value column
            elif comment.strip() and not comment.startswith("---"):
                pending.append(comment)
    lines += [
        ".SH DURATIONS",
        esc("A duration is a number of seconds or a string with a unit: \"30s\", \"10m\", "
            "\"2h\", \"5d\", \"1w\"."),
        ".SH SEE ALSO", "relay(8), postconf(5)", "",
    ]
    return "\n".join(lines)


PAGES = {"relay.8": relay_8, "relay.toml.5": relay_toml_5}


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in PAGES.items():
        path = ROOT / "man" / name
        text = build()
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run man/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

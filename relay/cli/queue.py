"""`relay queue`: list, show, flush, delete, hold, release (postqueue/postsuper style)."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from relay.cli.common import (
    OperatorError,
    config_option,
    load_config,
    notify_relay,
    print_json,
    printable,
    rfc3339,
)
from relay.config import Config
from relay.spool import Spool, is_queue_id


def _spool(config: Config) -> Spool:
    if not config.spool_path.exists():
        click.echo(f"relay: no queue at {config.spool_path}", err=True)
        sys.exit(1)
    return Spool(config.spool_path)


def _entry(spool: Spool, qid: str) -> dict:
    env = spool.load_envelope(qid)
    state = spool.load_state(qid)
    held = spool.is_held(qid)
    name = "hold" if held else ("deferred" if state.attempts else "active")
    recipients = []
    for address in state.pending(env):
        rs = state.recipients.get(address)
        item: dict = {"address": address}
        if rs is not None and rs.reason:
            item["delay_reason"] = rs.reason
        recipients.append(item)
    return {
        "queue_name": name,
        "queue_id": qid,
        "arrival_time": rfc3339(env.arrival_time),
        "message_size": env.size,
        "forced_expire": False,
        "sender": env.sender,
        "recipients": recipients,
        "attempts": state.attempts,
        "next_attempt": rfc3339(state.next_attempt) if state.next_attempt else None,
        "last_attempt": rfc3339(state.last_attempt) if state.last_attempt else None,
    }


def _ids(spool: Spool, ids: Iterable[str]) -> list[str]:
    ids = list(ids)
    if ids == ["-"]:
        ids = list(read_ids(sys.stdin))
    if ids == ["ALL"]:
        return list(spool.ids())
    for qid in ids:
        if not is_queue_id(qid):
            raise OperatorError(f"{printable(qid)[:80]} is not a queue id")
    return ids



def read_ids(lines: Iterable[str]) -> Iterator[str]:
    """Queue ids from standard input: one per line, or the JSON Lines of
    `relay queue list --json` (so `relay queue list --json | relay queue hold -` works)."""
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                qid = json.loads(line).get("queue_id")
            except (ValueError, AttributeError):
                qid = None
            if not isinstance(qid, str):
                raise OperatorError(f"standard input line {number}: a JSON object without "
                                    "a \"queue_id\" (expected queue ids or the output of "
                                    "`relay queue list --json`)")
            line = qid
        if not is_queue_id(line):
            raise OperatorError(f"standard input line {number}: {printable(line)[:80]} is "
                                "not a queue id")
        yield line


@click.group("queue")
def queue() -> None:
    """Inspect and manage the mail queue."""


@queue.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True,
              help="JSON Lines with postqueue -j field names.")
def list_(config_path: Path | None, as_json: bool) -> None:
    """List queued messages (like mailq)."""
    spool = _spool(load_config(config_path))
    count = 0
    for qid in spool.ids():
        try:
            entry = _entry(spool, qid)
        except (KeyError, ValueError):
            continue  # delivered or moved while we listed
        count += 1
        if as_json:
            print_json(entry)
            continue
        mark = {"hold": "!", "active": "*"}.get(entry["queue_name"], " ")
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(
            spool.load_envelope(qid).arrival_time))
        click.echo(f"{printable(qid)}{mark} {entry['message_size']:>8} {arrival}  "
                   f"<{printable(entry['sender'])}>")
        for r in entry["recipients"]:  # a delay reason is the remote server's reply text
            if "delay_reason" in r:
                click.echo(f"    ({printable(r['delay_reason'])})")
            click.echo(f"    {printable(r['address'])}")
    if not as_json:
        click.echo("Mail queue is empty" if count == 0 else f"-- {count} messages")


@queue.command("show")
@config_option
@click.argument("queue_id")
@click.option("--raw", is_flag=True, help="The message's exact bytes, unescaped (for a file "
              "or a pipe, not a terminal).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the `queue list --json` fields, the headers, and the "
              "message (as text when it is UTF-8, else in message_base64).")
def show(config_path: Path | None, queue_id: str, raw: bool, as_json: bool) -> None:
    """Print a queued message with its envelope and delivery state.

    Control characters in the message are shown escaped (\\x1b) unless --raw."""
    spool = _spool(load_config(config_path))
    try:
        entry = _entry(spool, queue_id)
        _, data = spool.load(queue_id)
    except KeyError:
        raise OperatorError(f"no message {printable(queue_id)} in the queue", 1) from None
    if as_json:
        print_json({**entry, **_message_json(data)})
        return
    if raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    for key in ("queue_name", "sender", "arrival_time", "message_size", "attempts"):
        click.echo(f"{key}: {printable(entry[key])}")
    for r in entry["recipients"]:
        click.echo(printable(f"recipient: {r['address']} {r.get('delay_reason', '')}".rstrip()))
    click.echo("")
    click.echo(printable(data.decode("utf-8", "surrogateescape"), multiline=True))


def _message_json(data: bytes) -> dict:
    from relay.message import Message, decode_header_value

    headers = [[name, decode_header_value(value)] for name, value in Message(data).headers]
    try:
        return {"headers": headers, "message": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"headers": headers, "message_base64": base64.b64encode(data).decode()}


@queue.command("flush")
@config_option
def flush(config_path: Path | None) -> None:
    """Try every deferred message now."""
    config = load_config(config_path)
    spool = _spool(config)
    count = 0
    for qid in spool.ids(held=False):
        try:
            state = spool.load_state(qid)
            state.next_attempt = 0
            spool.save_state(qid, state)
            count += 1
        except KeyError:
            continue
    notify_relay(config)
    click.echo(f"{count} messages scheduled for immediate delivery")


def _bulk(name: str, verb: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @config_option
    @click.argument("queue_ids", nargs=-1, required=True)
    def command(config_path: Path | None, queue_ids: tuple[str, ...]) -> None:
        config = load_config(config_path)
        spool = _spool(config)
        done = missing = 0
        for qid in _ids(spool, queue_ids):
            try:
                getattr(spool, verb)(qid)
                done += 1
            except KeyError:
                missing += 1
                click.echo(f"relay: {printable(qid)}: not in the queue", err=True)
        notify_relay(config)
        click.echo(f"{name}: {done} messages")
        sys.exit(1 if missing else 0)

    return command


for _name, _verb, _help in (
    ("delete", "remove", "Delete messages: QUEUE_ID..., - (ids from stdin) or ALL."),
    ("hold", "hold", "Put messages on hold: QUEUE_ID..., - or ALL."),
    ("release", "release", "Release held messages: QUEUE_ID..., - or ALL."),
):
    queue.add_command(_bulk(_name, _verb, _help))

COMMANDS = [queue]

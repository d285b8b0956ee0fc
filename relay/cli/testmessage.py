"""`relay test-message`: run the whole engine on a message and explain the decision."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from relay.cli.common import config_option, load_config, load_policies, print_json, printable
from relay.config import Config
from relay.model import Outcome, Transaction
from relay.policyset import PolicySet
from relay.runtime import Runtime
from relay.transaction import Conversation, Hub, walk


async def run_test(config: Config, policies: PolicySet, raw: bytes, sender: str,
                   recipients: list[str], auth: str | None, client_ip: str,
                   listener_kind: str) -> tuple[dict[str, Any], bytes]:
    """The decision as JSON-able data, and the message as it would be delivered."""
    runtime = await Runtime.build(config, policies, archive=False, inline=True)
    try:
        tx = Transaction(listener="test-message", listener_kind=listener_kind,
                         client_ip=client_ip, tls=True, auth_login=auth, smtputf8=True,
                         trusted=config.is_trusted(client_ip))
        conversation = Conversation(Hub(runtime), tx)
        result = await walk(conversation, sender, recipients, raw)
        conversation.close()
        verdict = result.verdict
        assert result.reply is not None
        outcome = verdict.outcome if verdict else Outcome.of(result.reply)
        return {
            "stage": result.stage,
            "recipients": {r: str(reply) for r, reply in result.recipients.items()},
            "action": outcome.value,
            "reply": result.reply.render(),
            "accepted_recipients": tx.rcpt_to,
            "findings": [d.as_dict() for d in tx.decisions],
            "added_headers": [f"{n}: {v}" for n, v in tx.added_headers],
            "conversions": tx.conversions,
        }, (verdict.delivered(raw) if verdict else raw)
    finally:
        await runtime.aclose()


@click.command("test-message")
@config_option
@click.option("--from", "sender", required=True, help="Envelope sender (MAIL FROM); '' for <>.")
@click.option("--to", "recipients", multiple=True, required=True, help="Envelope recipient.")
@click.option("--auth", default=None, help="Pretend the client authenticated as this login.")
@click.option("--client-ip", default="203.0.113.10", show_default=True)
@click.option("--listener", "listener_kind", default=None,
              type=click.Choice(["mx", "submission", "smtps"]),
              help="Listener kind (default: submission with --auth, else mx).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the message as it would be delivered.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.argument("message", type=click.File("rb"))
def test_message(config_path: Path | None, sender: str, recipients: tuple[str, ...],
                 auth: str | None, client_ip: str, listener_kind: str | None,
                 output: Path | None, as_json: bool, message: click.utils.LazyFile) -> None:
    """Run every policy on MESSAGE (a .eml file, - for stdin) without sending it.

    Exit status: 0 accepted, 1 rejected, 75 temporary failure.
    """
    config = load_config(config_path)
    policies = load_policies(config)
    raw = message.read()
    kind = listener_kind or ("submission" if auth else "mx")
    result, data = asyncio.run(run_test(config, policies, raw, sender.strip("<>"),
                                        list(recipients), auth, client_ip, kind))
    if output is not None and result["action"] == "accept":
        output.write_bytes(data)
    if as_json:
        print_json(result)
    else:
        _explain(result)
    sys.exit({"accept": 0, "reject": 1}.get(result["action"], 75))


def _explain(result: dict[str, Any]) -> None:
    colour = {"accept": "green", "reject": "red"}.get(result["action"], "yellow")
    click.secho(f"Decision: {result['action'].upper()} (at {result['stage']})", fg=colour,
                bold=True)
    # findings quote what the message said (file names, headers): escaped, like the rest
    for rcpt, reply in result["recipients"].items():
        click.echo(f"  RCPT {printable(rcpt)}: {printable(reply.splitlines()[0])}")
    if not result["findings"]:
        click.echo("No findings.")
    for f in result["findings"]:
        who = f" [{printable(f['recipient'])}]" if f["recipient"] else ""
        click.echo(f"- {f['policy']}: {f['code']}{who} -> {f['action']}")
        click.echo(f"    {printable(f['vi'])} ({f['article']})")
        click.echo(f"    {printable(f['en'])}")
    for header in result["added_headers"]:
        click.echo(f"  + header {printable(header)}")
    click.echo("Reply the client would get:")
    for line in result["reply"].split("\r\n"):
        click.echo(f"  {printable(line)}")


COMMANDS = [test_message]

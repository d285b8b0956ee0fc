"""`relay test-message`: run the whole engine on a message and explain the decision."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from relay import services as services_mod
from relay.cli import config_option, load_config, print_json
from relay.config import Config
from relay.engine import Engine
from relay.model import Reply, Transaction


async def run_test(
    config: Config,
    raw: bytes,
    sender: str,
    recipients: list[str],
    auth: str | None,
    client_ip: str,
    listener_kind: str,
) -> dict:
    services = await services_mod.build(config, archive=False)
    engine = Engine(config, services)
    try:
        tx = Transaction(
            listener="test-message",
            listener_kind=listener_kind,
            client_ip=client_ip,
            tls=True,
            auth_login=auth,
            smtputf8=True,
        )
        tx.trusted = config.is_trusted(client_ip)
        result: dict = {"stage": "connect", "recipients": {}}
        reply: Reply | None = await engine.connect(tx)
        data = raw
        if reply is None:
            result["stage"] = "mail"
            reply = await engine.mail(tx, sender)
        if reply is None:
            result["stage"] = "rcpt"
            for rcpt in recipients:
                r = await engine.rcpt(tx, rcpt)
                result["recipients"][rcpt] = str(r) if r else "250 2.1.5 OK"
            if not tx.rcpt_to:
                reply = r
        if reply is None:
            result["stage"] = "data"
            verdict = await engine.data(tx, raw)
            reply, data = verdict.reply, verdict.data
            action = verdict.action
        else:
            action = "tempfail" if reply.temporary else "reject"
        result.update(
            action=action,
            reply=reply.render(),
            accepted_recipients=tx.rcpt_to,
            findings=[d.as_dict() for d in tx.decisions],
            added_headers=[f"{n}: {v}" for n, v in tx.added_headers],
            conversions=tx.conversions,
        )
        result["_data"] = data
        return result
    finally:
        await engine.close()
        await services_mod.close(services)


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
    raw = message.read()
    kind = listener_kind or ("submission" if auth else "mx")
    result = asyncio.run(run_test(config, raw, sender, list(recipients), auth, client_ip, kind))
    data = result.pop("_data")
    if output is not None and result["action"] == "accept":
        output.write_bytes(data)
    if as_json:
        print_json(result)
    else:
        _explain(result)
    sys.exit({"accept": 0, "reject": 1}.get(result["action"], 75))


def _explain(result: dict) -> None:
    colour = {"accept": "green", "reject": "red"}.get(result["action"], "yellow")
    click.secho(f"Decision: {result['action'].upper()} (at {result['stage']})", fg=colour,
                bold=True)
    for rcpt, reply in result["recipients"].items():
        click.echo(f"  RCPT {rcpt}: {reply.splitlines()[0]}")
    if not result["findings"]:
        click.echo("No findings.")
    for f in result["findings"]:
        who = f" [{f['recipient']}]" if f["recipient"] else ""
        click.echo(f"- {f['policy']}: {f['code']}{who} -> {f['action']}")
        click.echo(f"    {f['vi']} ({f['article']})")
        click.echo(f"    {f['en']}")
    for header in result["added_headers"]:
        click.echo(f"  + header {header}")
    click.echo("Reply the client would get:")
    for line in result["reply"].split("\r\n"):
        click.echo(f"  {line}")


COMMANDS = [test_message]

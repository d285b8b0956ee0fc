"""`relay milter`: the policies inside an existing Postfix (smtpd_milters)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relay.cli.common import config_option, load_config, load_policies, resolve_config_path


@click.command("milter")
@config_option
def milter(config_path: Path | None) -> None:
    """Serve the milter protocol on [milter] bind for Postfix's smtpd_milters.

    Runs the same policies as `relay serve`; Postfix keeps the queue and delivery.
    SIGHUP reloads the configuration; SIGTERM stops (open sessions get 10 s to finish).
    """
    from relay.milter import service as milter_mod

    config = load_config(config_path)
    policies = load_policies(config)
    sys.exit(milter_mod.run(config, policies, resolve_config_path(config_path)))


COMMANDS = [milter]

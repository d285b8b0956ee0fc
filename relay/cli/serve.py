"""`relay serve` and `relay check-config`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relay.cli import config_option, load_config, resolve_config_path


@click.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the configuration: exit 0 when valid, 78 (EX_CONFIG) naming the key when not."""
    config = load_config(config_path)
    where = config.source or "embedded defaults"
    click.echo(f"{where}: OK ({len(config.listeners)} listeners, "
               f"{len(config.policy_options)} policies: {', '.join(config.policy_options)})")


@click.command("serve")
@config_option
def serve(config_path: Path | None) -> None:
    """Run the relay: SMTP listeners, queue runner, delivery. SIGHUP reloads, SIGTERM stops."""
    from relay import service

    config = load_config(config_path)
    sys.exit(service.run(config, resolve_config_path(config_path)))


COMMANDS = [check_config, serve]

"""`relay`: one command, a subcommand per job. Each group lives in its own module;
what they share is in `relay.cli.common`."""

from __future__ import annotations

import click

from relay.cli.common import RelayGroup


@click.group(cls=RelayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dienbien-relay")
def main() -> None:
    """Policy-enforcing SMTP relay for the Điện Biên provincial mail system (QĐ 28/2005)."""


def _register() -> None:
    from relay.cli import (
        archive,
        config,
        directory,
        dkim,
        milter,
        petitions,
        queue,
        serve,
        testmessage,
        text,
        web,
    )

    for module in (serve, config, testmessage, queue, directory, archive, petitions, text, milter,
                   web,
                   dkim):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

"""`relay dkim`: keys for signing outbound mail (`[dkim_signing]`, RFC 6376)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from relay.cli.common import config_option, load_config
from relay.config import SELECTOR_PATTERN, check_domain
from relay.mailauth.signing import generate, public_der, zone_record


@click.group()
def dkim() -> None:
    """DKIM signing keys and the DNS records that publish them."""


def _domain(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_domain(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _selector(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(SELECTOR_PATTERN, value):
        raise click.BadParameter("letters, digits, '.', '_' and '-', starting with a letter "
                                 "or digit, at most 63 (it names the key file)")
    return value


@dkim.command("keygen")
@config_option
@click.option("--domain", required=True, callback=_domain, help="The signing domain (d=).")
@click.option("--selector", default=None, callback=_selector,
              help="The selector (s=); default: [dkim_signing] selector.")
@click.option("--bits", default=2048, show_default=True, type=click.Choice(["2048", "3072",
                                                                             "4096"]))
@click.option("--force", is_flag=True, help="Replace an existing key (breaks mail in transit "
              "signed with it: rotate with a new selector instead).")
def keygen(config_path: Path | None, domain: str, selector: str | None, bits: str,
           force: bool) -> None:
    """Write a new RSA key (mode 0600) and print the TXT record to publish for it."""
    config = load_config(config_path)
    selector = selector or config.dkim_signing.selector
    path = config.dkim_signing.key_path(config, domain, selector)
    try:
        public = generate(path, int(bits), force=force)
    except FileExistsError:
        hint = ("" if "{selector}" in config.dkim_signing.key else
                "; to rotate, put {selector} in [dkim_signing] key and use a new --selector")
        raise click.ClickException(f"{path} exists (--force replaces it){hint}") from None
    click.echo(f"; key written to {path}", err=True)
    click.echo(f"; publish this record, then set [dkim_signing] selector = \"{selector}\"",
               err=True)
    click.echo(zone_record(domain, selector, public))


@dkim.command("record")
@config_option
@click.option("--domain", required=True, callback=_domain)
@click.option("--selector", default=None, callback=_selector,
              help="Default: [dkim_signing] selector.")
def record(config_path: Path | None, domain: str, selector: str | None) -> None:
    """Print the TXT record of an existing key."""
    config = load_config(config_path)
    selector = selector or config.dkim_signing.selector
    path = config.dkim_signing.key_path(config, domain, selector)
    try:
        public = public_der(path.read_bytes())
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise click.ClickException(f"{path}: not a private key: {exc}") from None
    click.echo(zone_record(domain, selector, public))


COMMANDS = [dkim]

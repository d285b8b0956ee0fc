"""What every `relay` subcommand shares: the -c option, loading the configuration with
clean errors, JSON output, and whether a person is watching."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from relay.config import EX_CONFIG, Config, ConfigError, load

if TYPE_CHECKING:
    from relay.policyset import PolicySet

F = TypeVar("F", bound=Callable[..., Any])

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
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


def is_interactive(json_output: bool = False) -> bool:
    """Progress bars only for a person at a terminal, never with --json or when piped."""
    return not json_output and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"

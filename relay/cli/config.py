"""`relay config show`: the configuration in force, like Postfix's `postconf`.

One `key = value` line per setting, keys dotted from the top of relay.toml, values
written as TOML (so the output of `--changed` is itself a valid relay.toml). Policies'
options are included, validated by each policy's own model through relay.policyset,
so what is shown is what the relay would run: defaults filled in, typos refused (78).
A password in `directory.url` is shown as `***`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from relay.cli.common import config_option, load_config, load_policies, print_json
from relay.config import Config, from_dict
from relay.policyset import PolicySet

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
UNSET: Any = object()  # a key the file's configuration does not have


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"server": {"hostname": "x"}} -> {"server.hostname": "x"}; an empty table stays {}."""
    if not isinstance(value, dict) or (not value and prefix):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        part = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
        out.update(flatten(item, f"{prefix}.{part}" if prefix else part))
    return out


def settings(config: Config, policies: PolicySet, defaults: bool = False) -> dict[str, Any]:
    """Every key of `config` with its value, policies' options included. With
    `defaults`, the value each key has when relay.toml does not set it."""
    base = from_dict({}) if defaults else config
    data = base.model_dump(mode="json", exclude={"policies"})
    data["policies"] = {
        entry.name: (entry.cls.Options.model_validate({}) if defaults else entry.options)
        .model_dump(mode="json") for entry in policies}
    flat = flatten(data)
    url = flat.get("directory.url")
    if url:
        flat["directory.url"] = make_url(url).render_as_string(hide_password=True)
    return flat


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


@click.group("config")
def config_group() -> None:
    """The configuration in force (like postconf)."""


@config_group.command("show")
@config_option
@click.option("--defaults", "mode", flag_value="defaults",
              help="The default of every key instead (like postconf -d).")
@click.option("--changed", "mode", flag_value="changed",
              help="Only keys whose value differs from the default (like postconf -n).")
@click.option("--json", "as_json", is_flag=True,
              help='JSON Lines: {"key", "value", "default", "changed"} per key.')
@click.argument("keys", nargs=-1)
def show(config_path: Path | None, mode: str | None, as_json: bool, keys: tuple[str, ...]
         ) -> None:
    """Print the effective configuration, one `key = value` per line (TOML).

    KEYS limit the output to those keys or tables (`server`, `policies.webmail`)."""
    config = load_config(config_path)
    policies = load_policies(config)
    effective = settings(config, policies)
    default = settings(config, policies, defaults=True)
    # a default policy the file no longer enables: say so, TOML cannot say "absent"
    default_policies = settings(from_dict({}), load_policies(from_dict({})))
    for key, value in default_policies.items():
        if key.startswith("policies.") and key.split(".")[1] not in policies.names:
            default.setdefault(key, value)
    rows = []
    for key in [*dict.fromkeys([*effective, *default])]:
        if keys and not any(key == k or key.startswith(k + ".") for k in keys):
            continue
        current = effective.get(key, UNSET)
        changed = current != default.get(key, UNSET)
        rows.append((key, default.get(key) if mode == "defaults" else current, changed))
    if mode == "changed":
        rows = _changed_only(rows, policies, default_policies)
    for key, value, changed in rows:
        if as_json:
            print_json({"key": key, "value": None if value is UNSET else value,
                        "default": default.get(key), "changed": changed})
        elif value is UNSET:
            click.echo(f"# {key} = {toml_value(default[key])}  (default; not in this "
                       "configuration)")
        elif value is None:
            click.echo(f"# {key} = (not set)")
        else:
            click.echo(f"{key} = {toml_value(value)}")


def _changed_only(rows: list[tuple[str, Any, bool]], policies: PolicySet,
                  default_policies: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """The changed rows. When the policies enabled differ from the default ones, each
    enabled policy whose options all keep their defaults still shows, in its place, as
    `policies.NAME = {}`: a [policies] table replaces the default list, and the order of
    the policies decides which finding leads a reply."""
    default_names = list(dict.fromkeys(key.split(".")[1] for key in default_policies
                                       if key.startswith("policies.")))
    same_list = policies.names == default_names
    changed_policies = {key.split(".")[1] for key, _, changed in rows
                        if changed and key.startswith("policies.")}
    # [listeners.NAME] replaces the default listeners whole, and a listener table in a
    # file has its own defaults (kind = "mx"): write them all once one differs
    listeners_changed = any(changed for key, _, changed in rows if key.startswith("listeners."))
    out, marked = [], set()
    for key, value, changed in rows:
        if listeners_changed and key.startswith("listeners.") and value is not UNSET:
            changed = True
        parts = key.split(".")
        name = parts[1] if parts[0] == "policies" and len(parts) > 2 else None
        if (name in policies.names and not same_list
                and name not in changed_policies and name not in marked):
            marked.add(name)
            out.append((f"policies.{name}", {}, True))
        elif changed:
            out.append((key, value, changed))
    return out


COMMANDS = [config_group]

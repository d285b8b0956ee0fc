"""`relay serve`, `relay check-config` and `relay policies`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from relay.cli.common import (
    config_option,
    load_config,
    load_policies,
    print_json,
    resolve_config_path,
)
from relay.config import EX_CONFIG, ConfigError, load


@click.command("check-config")
@config_option
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object: {"source", "ok", "errors", "listeners", "policies"}.')
def check_config(config_path: Path | None, as_json: bool) -> None:
    """Validate the configuration: exit 0 when valid, 78 (EX_CONFIG) naming the key when not."""
    from relay.policyset import configure

    path = resolve_config_path(config_path)
    result: dict = {"source": str(path) if path else None, "ok": False, "errors": []}
    try:
        config = load(path)
        policies = configure(config)
    except ConfigError as exc:
        if not as_json:
            raise
        print_json({**result, "errors": str(exc).splitlines()})
        sys.exit(EX_CONFIG)
    result.update(ok=True, listeners=sorted(config.listeners), policies=policies.names)
    if as_json:
        print_json(result)
        return
    where = config.source or "embedded defaults"
    click.echo(f"{where}: OK ({len(config.listeners)} listeners, "
               f"{len(policies)} policies: {', '.join(policies.names)})")
    signing = config.dkim_signing
    if signing.enabled:  # not a configuration error, but outbound mail would wait in the queue
        for domain in signing.domains or config.server.local_domains:
            path = signing.key_path(config, domain)
            if not path.is_file():
                click.echo(f"warning: dkim_signing: no key {path} for {domain}: mail from it "
                           f"to other domains is deferred (relay dkim keygen --domain {domain})",
                           err=True)


@click.command("policies")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per policy (JSON Lines).")
def list_policies(config_path: Path | None, as_json: bool) -> None:
    """Every policy this relay can run: stages, finding codes, articles, options.

    Policies enabled in the configuration are marked, in the order they run."""
    from relay.policyset import available, load

    config = load_config(config_path)
    enabled = load_policies(config).names
    search = [config.base_dir / d for d in config.server.policy_dirs]
    for name in [*enabled, *(n for n in available(search) if n not in enabled)]:
        cls = load(name, search)
        options = {key: field.default for key, field in cls.Options.model_fields.items()
                   if key not in ("action", "actions")}
        entry = {
            "name": name, "enabled": name in enabled,
            "stages": sorted(stage.value for stage in cls.stages),
            "articles": list(cls.articles), "codes": cls.codes,
            "default_action": cls.Options.model_fields["action"].default.value,
            "options": options,
            "summary": first_line(sys.modules[cls.__module__].__doc__),
        }
        if as_json:
            print_json(entry)
            continue
        mark = "enabled " if entry["enabled"] else "disabled"
        click.echo(f"{name} [{mark}] stages: {', '.join(entry['stages'])}; "
                   f"default action: {entry['default_action']}"
                   + (f"; {', '.join(entry['articles'])}" if entry["articles"] else ""))
        if entry["summary"]:
            click.echo(f"  {entry['summary']}")
        for code, meaning in cls.codes.items():
            click.echo(f"  {code}: {meaning}")
        for key, default in options.items():
            click.echo(f"  option {key} = {default!r}")


def first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


@click.command("serve")
@config_option
def serve(config_path: Path | None) -> None:
    """Run the relay: SMTP listeners, queue runner, delivery. SIGHUP reloads, SIGTERM stops."""
    from relay import serve as serve_mod

    config = load_config(config_path)
    policies = load_policies(config)
    sys.exit(serve_mod.run(config, policies, resolve_config_path(config_path)))


COMMANDS = [check_config, list_policies, serve]

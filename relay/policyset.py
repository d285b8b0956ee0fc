"""Finding policies by name and checking their tables: `configure(config) -> PolicySet`.

`[policies.NAME]` names the module `policies/NAME.py`, or `NAME.py` in one of
`server.policy_dirs`; the module defines exactly one `Policy` subclass whose
`name` is NAME. A name found in both places is an error (no silent shadowing),
as are options the policy's model refuses and per-code overrides naming a code
the policy does not declare. Every error names the key. The set keeps the order
of the tables in relay.toml: that order decides which finding leads a reply.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from policies.base import Policy, PolicyOptions
from relay.config import Config, ConfigError, format_errors

SHIPPED = Path(__file__).resolve().parents[1] / "policies"

# once policies, now the engine's own rules that no configuration can remove
BUILT_IN = {"size": "server.max_message_size", "recipients": "server.max_recipients"}


class PolicyLoadError(Exception):
    pass


@dataclass(frozen=True)
class Configured:
    """One enabled policy: its class and its validated options."""

    name: str
    cls: type[Policy]
    options: PolicyOptions


@dataclass(frozen=True)
class PolicySet:
    """The enabled policies in relay.toml order; built once per configuration load."""

    entries: tuple[Configured, ...]

    def __iter__(self) -> Iterator[Configured]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]


def available(search_dirs: Sequence[Path] = ()) -> list[str]:
    """Every policy name that `[policies.NAME]` may use."""
    found = {p.stem for p in SHIPPED.glob("*.py") if not p.stem.startswith("_")} - {"base"}
    for directory in search_dirs:
        found |= {p.stem for p in Path(directory).glob("*.py") if not p.stem.startswith("_")}
    return sorted(found)


def load(name: str, search_dirs: Sequence[Path] = ()) -> type[Policy]:
    """The policy class called NAME: from policies/NAME.py or a site directory."""
    if not name.isidentifier() or name == "base":
        raise PolicyLoadError(f"{name!r} is not a valid policy name")
    if name in BUILT_IN:
        raise PolicyLoadError(f"{name} is a built-in limit, not a policy: set "
                              f"{BUILT_IN[name]} and remove this table")
    site = [Path(d) / f"{name}.py" for d in search_dirs if (Path(d) / f"{name}.py").is_file()]
    shipped = SHIPPED / f"{name}.py"
    places = [*site, *([shipped] if shipped.is_file() else [])]
    if not places:
        raise PolicyLoadError(
            f"unknown policy {name!r} (available: {', '.join(available(search_dirs))})")
    if len(places) > 1:
        raise PolicyLoadError(f"policy {name!r} is defined more than once: "
                              + ", ".join(str(p) for p in places))
    if site:
        module_name = f"relay_site_policies.{name}"
        module = sys.modules.get(module_name)
        if module is None or getattr(module, "__file__", None) != str(site[0]):
            spec = importlib.util.spec_from_file_location(module_name, site[0])
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    else:
        module = importlib.import_module(f"policies.{name}")
    classes = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, Policy) and obj is not Policy
               and obj.__module__ == module.__name__ and getattr(obj, "name", None) == name]
    if len(classes) != 1:
        raise PolicyLoadError(f"{places[0]} must define one Policy subclass named {name!r}, "
                              f"found {len(classes)}")
    return classes[0]


def configure(config: Config) -> PolicySet:
    """The enabled policies with validated options; ConfigError naming every bad key."""
    where = f"{config.source}: " if config.source else ""
    search = [config.base_dir / d for d in config.server.policy_dirs]
    errors: list[str] = []
    entries = []
    for name, table in config.policies.items():
        try:
            cls = load(name, search)
        except PolicyLoadError as exc:
            errors.append(f"policies.{name}: {exc}")
            continue
        try:
            options = cls.Options.model_validate(table)
        except ValidationError as err:
            errors.extend(format_errors(err, ("policies", name)))
            continue
        for code in options.actions:
            if code not in cls.codes:
                known = ", ".join(sorted(cls.codes)) or "none"
                errors.append(f"policies.{name}.actions.{code}: policy {name} has no finding "
                              f"code {code!r} (its codes: {known})")
        entries.append(Configured(name, cls, options))
    if errors:
        raise ConfigError("\n".join(where + line for line in errors))
    return PolicySet(tuple(entries))

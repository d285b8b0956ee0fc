"""Policies: one module each, found by name.

A policy is a class that subclasses `Policy`, is decorated with `@register`,
declares the stages it runs at and its options (a pydantic model), and returns
`Finding`s. It never chooses the SMTP reply: `[policies.NAME] action` does.

`[policies.NAME]` loads the module `policies/NAME.py`, or `NAME.py` from one of
`server.policy_dirs`, so a site policy is one file plus one table in relay.toml.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from relay.model import Action, Finding, Stage, Transaction

if TYPE_CHECKING:
    from relay.config import Config


class PolicyOptions(BaseModel):
    """Options every policy table has; a policy extends this with its own."""

    model_config = ConfigDict(extra="forbid")

    action: Action = Action.REJECT
    # per finding code overrides, e.g. {"webmail.outbound" = "log"}
    actions: dict[str, Action] = {}

    def action_for(self, code: str) -> Action:
        return self.actions.get(code, self.action)


@dataclass
class Context:
    """What a policy may use besides the transaction: configuration and stores."""

    config: Config
    services: dict[str, Any] = field(default_factory=dict)


class Policy:
    name: ClassVar[str]
    stages: ClassVar[frozenset[Stage]]
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions
    # finding codes this policy may emit -> short description (documentation, `relay policies`)
    codes: ClassVar[dict[str, str]] = {}

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        self.options = options
        self.context = context

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        raise NotImplementedError

    def convert(self, tx: Transaction, findings: Sequence[Finding]) -> bytes | None:
        """Repair the message for findings whose action is `convert`.

        Returns the new message bytes, or None when this policy cannot repair.
        """
        return None

    async def close(self) -> None:
        """Release connections and caches on reload or shutdown."""

    def finding(self, code: str, article: str, vi: str, en: str, **kw: Any) -> Finding:
        return Finding(policy=self.name, code=code, article=article, vi=vi, en=en, **kw)


_registry: dict[str, type[Policy]] = {}


class PolicyLoadError(Exception):
    pass


def register(cls: type[Policy]) -> type[Policy]:
    existing = _registry.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise PolicyLoadError(f"two policies are named {cls.name!r}")
    _registry[cls.name] = cls
    return cls


def load(name: str, search_dirs: Sequence[Path] = ()) -> type[Policy]:
    """The policy class called NAME: from policies/NAME.py or a site directory."""
    if name in _registry:
        return _registry[name]
    if not name.isidentifier():
        raise PolicyLoadError(f"{name!r} is not a valid policy name")
    for directory in search_dirs:
        path = Path(directory) / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"relay_site_policies.{name}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            break
    else:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise PolicyLoadError(
                f"unknown policy {name!r} (available: {', '.join(available())})"
            ) from None
    if name not in _registry:
        raise PolicyLoadError(f"module for policy {name!r} registers no policy of that name")
    return _registry[name]


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_"))

"""What a policy is: the base classes every policy module (shipped or site) imports.

A policy detects and explains; it never chooses the SMTP reply. It declares the
stages it runs at, the finding codes it may emit (a per-code override in
relay.toml naming any other code is a configuration error) and its options (a
pydantic model validated from its `[policies.NAME]` table). The loader that finds
policies by name is `relay.policyset`, apart from these classes, so that loading
by name never makes an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from relay.model import Action, Finding, Stage, Transaction

if TYPE_CHECKING:
    from relay.config import Config
    from relay.services import Services


class PolicyOptions(BaseModel):
    """Options every policy table has; a policy extends this with its own."""

    model_config = ConfigDict(extra="forbid")

    action: Action = Action.REJECT
    # per finding code overrides, e.g. {"webmail.outbound" = "log"}
    actions: dict[str, Action] = {}

    def action_for(self, code: str) -> Action:
        return self.actions.get(code, self.action)


@dataclass(frozen=True)
class Context:
    """What a policy may use besides the transaction: configuration and stores."""

    config: Config
    services: Services


class Policy:
    """Subclass this in `policies/NAME.py` (or `NAME.py` in a `server.policy_dirs` folder)."""

    name: ClassVar[str]
    stages: ClassVar[frozenset[Stage]]
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions
    # every finding code this policy may emit -> what it means (`relay policies` lists them)
    codes: ClassVar[dict[str, str]] = {}
    # the articles of the regulation its findings cite
    articles: ClassVar[tuple[str, ...]] = ()

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
        if code not in self.codes:  # a typo here would dodge the per-code overrides
            raise ValueError(f"policy {self.name} emits undeclared finding code {code!r}")
        return Finding(policy=self.name, code=code, article=article, vi=vi, en=en, **kw)

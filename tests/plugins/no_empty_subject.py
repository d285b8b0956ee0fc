"""A site policy written the way an administrator would: this one file plus
`[policies.no_empty_subject]` in relay.toml (with `server.policy_dirs` naming
this folder). It proves the plugin contract; nothing in relay/ knows it."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import Policy, PolicyOptions
from relay.model import Finding, Stage, Transaction


class Options(PolicyOptions):
    min_length: int = 1


class NoEmptySubject(Policy):
    name = "no_empty_subject"
    codes = {"subject.empty": "the Subject: is empty or shorter than min_length"}
    stages = frozenset({Stage.DATA})
    Options = Options

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        assert tx.message is not None and isinstance(self.options, Options)
        subject = tx.message.decoded("Subject") or ""
        if len(subject.strip()) >= self.options.min_length:
            return []
        return [self.finding("subject.empty", "Điều 5.1", "Thư không có tiêu đề",
                             "Message has no subject", status="5.6.0")]

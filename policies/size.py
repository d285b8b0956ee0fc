"""`size`: a message larger than `server.max_message_size` (Điều 5.1: keep the system running).

Checked at MAIL when the client declares SIZE=, and again on the real size at DATA.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies import Policy, register
from relay.model import Finding, Stage, Transaction


@register
class SizePolicy(Policy):
    name = "size"
    stages = frozenset({Stage.MAIL, Stage.DATA})
    codes = {"size.exceeded": "message larger than server.max_message_size"}

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        limit = self.context.config.server.max_message_size
        if stage is Stage.MAIL:
            size = _declared_size(tx.mail_options)
        else:
            assert tx.message is not None
            size = len(tx.message.raw)
        if size is None or size <= limit:
            return []
        return [
            self.finding(
                "size.exceeded",
                "Điều 5.1",
                f"Thư quá lớn: {size} byte, giới hạn {limit} byte",
                f"Message too large: {size} bytes, limit {limit} bytes",
                reply_code=552,
                status="5.3.4",
                tempfail_code=452,
                details={"size": size, "limit": limit},
            )
        ]


def _declared_size(options: list[str]) -> int | None:
    for option in options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None

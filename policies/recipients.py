"""`recipients`: more recipients than `server.max_recipients` in one transaction.

RFC 5321 4.5.3.1.8 asks servers to take at least 100 and to answer `452` past
the limit, so the client sends the rest in another transaction: the default
action is therefore `tempfail`.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies import Policy, PolicyOptions, register
from relay.model import Action, Finding, Stage, Transaction


class Options(PolicyOptions):
    action: Action = Action.TEMPFAIL


@register
class RecipientsPolicy(Policy):
    name = "recipients"
    stages = frozenset({Stage.RCPT})
    Options = Options
    codes = {"recipients.too_many": "more than server.max_recipients recipients"}

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        limit = self.context.config.server.max_recipients
        if len(tx.rcpt_to) < limit:
            return []
        return [
            self.finding(
                "recipients.too_many",
                "Điều 5.1",
                f"Quá nhiều người nhận: tối đa {limit} trong một lần gửi",
                f"Too many recipients: at most {limit} per transaction",
                recipient=recipient,
                reply_code=550,
                status="5.5.3",
                tempfail_code=452,
            )
        ]

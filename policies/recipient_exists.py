"""`recipient_exists`: a local recipient must be an active mailbox (Điều 4, 6).

Refused at RCPT with `550 5.1.1`, so the relay never accepts mail it would have
to bounce later (no backscatter). `postmaster` is always accepted (RFC 5321 4.5.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import Policy, PolicyOptions
from relay.model import Finding, Stage, Transaction


class Options(PolicyOptions):
    # local parts accepted whether or not they are in the directory
    always_accept: list[str] = ["postmaster"]


class RecipientExistsPolicy(Policy):
    name = "recipient_exists"
    articles = ('Điều 4', 'Điều 5.1')
    stages = frozenset({Stage.RCPT})
    Options = Options
    codes = {
        "recipient.unknown": "local recipient not in the directory (or removed)",
        "recipient.suspended": "local recipient mailbox is suspended",
    }

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        assert isinstance(self.options, Options)
        if recipient is None or not self.context.config.is_local(recipient):
            return []
        address = recipient.lower()
        if address.partition("@")[0] in self.options.always_accept:
            return []
        info = await self.context.services.directory.mailbox(address)
        if info is None:
            return [self.finding(
                "recipient.unknown", "Điều 4",
                f"Không có hộp thư {address} trong danh bạ điện tử của tỉnh",
                f"No mailbox {address} in the provincial directory",
                recipient=recipient, reply_code=550, status="5.1.1", tempfail_code=450)]
        if not info.active:
            return [self.finding(
                "recipient.suspended", "Điều 5.1",
                f"Hộp thư {address} đang bị tạm khóa",
                f"Mailbox {address} is disabled",
                recipient=recipient, reply_code=550, status="5.2.1", tempfail_code=450)]
        return []

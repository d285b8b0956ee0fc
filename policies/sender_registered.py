"""`sender_registered`: a sender in a local domain must be an active mailbox (Điều 4, 6).

Every mailbox of the province is registered in the directory (Điều 4); a removed
one (departure, retirement, Điều 6.3) or a name nobody was given cannot send;
a suspended one neither (Điều 5.1: the Office manages access).
"""

from __future__ import annotations

from collections.abc import Sequence

from policies._directory import envelope_sender
from policies.base import Policy
from relay.model import Finding, Stage, Transaction


class SenderRegisteredPolicy(Policy):
    name = "sender_registered"
    articles = ('Điều 4', 'Điều 5.1', 'Điều 6')
    stages = frozenset({Stage.MAIL})
    codes = {
        "sender.unregistered": "local sender address not in the directory (or removed)",
        "sender.suspended": "local sender mailbox is suspended",
    }

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        sender = envelope_sender(tx)
        if not sender or not self.context.config.is_local(sender):
            return []
        info = await self.context.services.directory.mailbox(sender)
        if info is None:
            return [self.finding(
                "sender.unregistered", "Điều 4",
                f"Địa chỉ người gửi {sender} không có trong danh bạ điện tử của tỉnh",
                f"Sender {sender} is not registered in the provincial directory",
                reply_code=550, status="5.1.8", details={"sender": sender})]
        if not info.active:
            return [self.finding(
                "sender.suspended", "Điều 5.1",
                f"Hộp thư {sender} đang bị tạm khóa",
                f"Mailbox {sender} is suspended",
                reply_code=550, status="5.7.1", details={"sender": sender})]
        return []

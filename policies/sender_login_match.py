"""`sender_login_match`: an authenticated login sends only as itself (Điều 7.3, 8).

Nobody uses another person's address (Điều 7.3). The head of an agency, and the
people the head delegated (Điều 8), may also send as the agency's official or
citizen-intake mailbox. Checked on the envelope sender at MAIL and on the From:
header at DATA.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies._directory import envelope_sender, from_addresses
from policies.base import Policy
from relay.model import Finding, Stage, Transaction


class SenderLoginMatchPolicy(Policy):
    name = "sender_login_match"
    articles = ('Điều 7.3', 'Điều 8')
    stages = frozenset({Stage.MAIL, Stage.DATA})
    codes = {
        "login.sender_mismatch": "authenticated login sends as an address it does not own",
        "login.not_delegated": "login sends as an official mailbox it neither holds nor is "
                               "delegated",
    }

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        if tx.auth_login is None:
            return []
        directory = self.context.services.directory
        login = directory.normalise_login(tx.auth_login)
        if stage is Stage.MAIL:
            claimed = [(envelope_sender(tx), "MAIL FROM")]
        else:
            claimed = [(a, "From:") for a in from_addresses(tx)]
        out: list[Finding] = []
        for address, where in claimed:
            if not address or address == login:
                continue  # the null sender carries reports, not a person's voice
            info = (await directory.mailbox(address)
                    if self.context.config.is_local(address) else None)
            if info is not None and info.may_be_used_by(login):
                continue
            details = {"login": login, "address": address, "field": where}
            if info is not None and info.kind != "personal":
                out.append(self.finding(
                    "login.not_delegated", "Điều 8",
                    f"{login} không được Thủ trưởng ủy quyền sử dụng hộp thư công vụ {address}",
                    f"{login} is not delegated the official mailbox {address}",
                    reply_code=550, status="5.7.1", details=details))
            else:
                out.append(self.finding(
                    "login.sender_mismatch", "Điều 7.3",
                    f"{login} không được gửi thư với địa chỉ {address} ({where})",
                    f"{login} may not send as {address} ({where})",
                    reply_code=550, status="5.7.1", details=details))
        return out

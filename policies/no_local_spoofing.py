"""`no_local_spoofing`: outside mail must not claim a provincial sender (Điều 7.3).

Mail from a client that is neither in `server.trusted_networks` nor
authenticated cannot come from a provincial mailbox: local users submit after
logging in. A local address in its envelope sender or its From: header is
someone using an address that is not theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies._directory import envelope_sender, from_addresses
from policies.base import Policy
from relay.model import Finding, Stage, Transaction


class NoLocalSpoofingPolicy(Policy):
    name = "no_local_spoofing"
    articles = ('Điều 7.3',)
    stages = frozenset({Stage.MAIL, Stage.DATA})
    codes = {
        "spoof.envelope": "unauthenticated outside client uses a local envelope sender",
        "spoof.header": "unauthenticated outside client uses a local From: address",
    }

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        if tx.trusted or tx.authenticated:
            return []
        config = self.context.config
        if stage is Stage.MAIL:
            claimed = [a for a in [envelope_sender(tx)] if a and config.is_local(a)]
            code, where = "spoof.envelope", "MAIL FROM"
        else:
            claimed = [a for a in from_addresses(tx) if config.is_local(a)]
            code, where = "spoof.header", "From:"
        return [self.finding(
            code, "Điều 7.3",
            f"Thư từ bên ngoài, chưa đăng nhập, không được dùng địa chỉ {a} của tỉnh ({where})",
            f"Unauthenticated mail from outside may not use the provincial address {a} ({where})",
            reply_code=550, status="5.7.1", details={"address": a, "field": where,
                                                     "client_ip": tx.client_ip},
        ) for a in claimed]

"""`spf` (Điều 5.1, anti-spam): SPF (RFC 7208) on the MAIL FROM identity, the HELO
identity for the null sender, for inbound mail from clients that are neither
logged in nor trusted. Decided at MAIL, so a forged sender is refused before the
message is sent.

Codes: `spf.fail` (the domain says this IP may not send for it; reject by
default), `spf.softfail`, `spf.permerror` (a broken record), `spf.temperror` (DNS
trouble: tempfail by default, so the sender retries). `pass`, `neutral` and
`none` are no finding; every result goes into Authentication-Results.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import model_validator

from policies.base import Policy, PolicyOptions
from relay.mailauth import applies, spf_of
from relay.model import Action, Finding, Stage, Transaction

ARTICLE = "Điều 5.1"


class Options(PolicyOptions):
    action: Action = Action.LOG

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        self.actions.setdefault("spf.fail", Action.REJECT)
        self.actions.setdefault("spf.temperror", Action.TEMPFAIL)
        return self


class SpfPolicy(Policy):
    name = "spf"
    articles = (ARTICLE,)
    stages = frozenset({Stage.MAIL})
    Options = Options
    codes = {
        "spf.fail": "the sender's domain does not allow this client IP (SPF -all)",
        "spf.softfail": "the sender's domain discourages this client IP (SPF ~all)",
        "spf.permerror": "the sender's SPF record is broken or over the lookup limits",
        "spf.temperror": "SPF could not be evaluated: DNS timeout or failure",
    }

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        if not applies(tx) or not tx.client_ip:
            return []
        result = await spf_of(tx, self.context)
        details = {"result": result.result, "identity": result.identity,
                   "domain": result.domain, "client_ip": tx.client_ip,
                   "reason": result.reason}
        who = result.domain
        if result.result == "fail":
            why = f": {result.explanation}" if result.explanation else ""
            return [self.finding(
                "spf.fail", ARTICLE,
                f"Máy chủ {tx.client_ip} không được phép gửi thư của {who} (SPF){why}",
                f"{tx.client_ip} is not allowed to send mail for {who} (SPF){why}",
                reply_code=550, status="5.7.23", details=details)]
        if result.result == "softfail":
            return [self.finding(
                "spf.softfail", ARTICLE,
                f"Tên miền {who} không khuyến nghị máy chủ {tx.client_ip} gửi thư (SPF)",
                f"{who} does not designate {tx.client_ip} as a permitted sender (SPF "
                f"softfail)", reply_code=550, status="5.7.23", details=details)]
        if result.result == "permerror":
            return [self.finding(
                "spf.permerror", ARTICLE,
                f"Bản ghi SPF của {who} bị lỗi",
                f"The SPF record of {who} is broken", reply_code=550, status="5.7.24",
                details=details)]
        if result.result == "temperror":
            return [self.finding(
                "spf.temperror", ARTICLE,
                f"Không kiểm tra được SPF của {who}, xin gửi lại sau",
                f"Could not check the SPF policy of {who}, try again later",
                reply_code=550, status="5.7.24", tempfail_code=451, details=details)]
        return []

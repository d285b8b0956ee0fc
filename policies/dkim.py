"""`dkim` (Điều 5.1, anti-spam): verify every DKIM-Signature (RFC 6376) of inbound
mail from clients that are neither logged in nor trusted, at DATA.

Codes: `dkim.fail` (signed, and no signature verifies: altered in transit or
forged), `dkim.permerror` (no signature could be evaluated: malformed, no key, key
too short), `dkim.temperror` (a key lookup failed; tempfail by default). A
message with one good signature has no finding (RFC 6376 6.1: a failed signature
is as if absent). Unsigned mail is no finding here: DMARC says whether the From:
domain wanted it signed. Every result goes into Authentication-Results.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, StrictInt, model_validator

from policies.base import Policy, PolicyOptions
from relay.mailauth import applies, dkim_of
from relay.model import Action, Finding, Stage, Transaction

ARTICLE = "Điều 5.1"


class Options(PolicyOptions):
    action: Action = Action.LOG
    max_signatures: StrictInt = Field(5, ge=1, le=50)  # verified per message; the rest ignored

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        self.actions.setdefault("dkim.temperror", Action.TEMPFAIL)
        return self


class DkimPolicy(Policy):
    name = "dkim"
    articles = (ARTICLE,)
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = {
        "dkim.fail": "the message is signed and no DKIM signature verifies",
        "dkim.permerror": "no DKIM signature could be evaluated (malformed, no key)",
        "dkim.temperror": "a DKIM key could not be fetched: DNS timeout or failure",
    }

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        if not applies(tx):
            return []
        assert isinstance(self.options, Options)
        results = await dkim_of(tx, self.context, self.options.max_signatures)
        if not results or any(r.result == "pass" for r in results):
            return []
        details = {"signatures": [
            {"result": r.result, "d": r.domain, "s": r.selector, "reason": r.reason}
            for r in results]}
        domains = ", ".join(dict.fromkeys(r.domain or "?" for r in results))
        if any(r.result == "temperror" for r in results):
            return [self.finding(
                "dkim.temperror", ARTICLE,
                f"Không lấy được khóa DKIM của {domains}, xin gửi lại sau",
                f"Could not fetch the DKIM key of {domains}, try again later",
                reply_code=550, status="5.7.20", tempfail_code=451, details=details)]
        if any(r.result == "fail" for r in results):
            return [self.finding(
                "dkim.fail", ARTICLE,
                f"Chữ ký DKIM của {domains} không hợp lệ: thư đã bị sửa hoặc giả mạo",
                f"The DKIM signature of {domains} does not verify: the message was altered "
                f"or forged", reply_code=550, status="5.7.20", details=details)]
        return [self.finding(
            "dkim.permerror", ARTICLE,
            f"Không kiểm tra được chữ ký DKIM của {domains}",
            f"The DKIM signature of {domains} cannot be evaluated", reply_code=550,
            status="5.7.20", details=details)]

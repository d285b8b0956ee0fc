"""`dmarc` (Điều 5.1, anti-spam): DMARC (RFC 7489) for inbound mail from clients that
are neither logged in nor trusted, at DATA: does an SPF pass (MAIL FROM) or a DKIM
pass align with the domain in From:? If not, the domain's own policy decides.

Codes: `dmarc.reject` (p=reject and not aligned: reject by default),
`dmarc.quarantine` (p=quarantine: tag by default), `dmarc.temperror` (the DMARC
record could not be fetched; tempfail by default). A domain that publishes
`p=none`, or nothing, gets no finding. SPF and DKIM are evaluated here if their
own policies are not configured (once per transaction either way). The result
goes into Authentication-Results.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, StrictInt, model_validator

from policies.base import Context, Policy, PolicyOptions
from relay.mailauth import applies, dkim_of, record, spf_of
from relay.mailauth.authresults import value
from relay.mailauth.dmarc import DmarcChecker, organizational_domain
from relay.model import Action, Finding, Stage, Transaction

ARTICLE = "Điều 5.1"


class Options(PolicyOptions):
    action: Action = Action.LOG
    max_signatures: StrictInt = Field(5, ge=1, le=50)  # DKIM signatures verified, if dkim is off

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        self.actions.setdefault("dmarc.reject", Action.REJECT)
        self.actions.setdefault("dmarc.quarantine", Action.TAG)
        self.actions.setdefault("dmarc.temperror", Action.TEMPFAIL)
        return self


class DmarcPolicy(Policy):
    name = "dmarc"
    articles = (ARTICLE,)
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = {
        "dmarc.reject": "From: domain not authenticated and its DMARC policy is p=reject",
        "dmarc.quarantine": "From: domain not authenticated and its DMARC policy is "
                            "p=quarantine",
        "dmarc.temperror": "the DMARC record could not be fetched: DNS timeout or failure",
    }

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        super().__init__(options, context)
        organizational_domain("dienbien.gov.vn")  # load the Public Suffix List (0.3 s) now

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        if not applies(tx):
            return []
        assert tx.message is not None and isinstance(self.options, Options)
        spf = await spf_of(tx, self.context) if tx.client_ip else None
        dkim = await dkim_of(tx, self.context, self.options.max_signatures)
        result = await DmarcChecker(self.context.services.dns).check(
            tx.message.get_all("From"), spf, dkim)
        if result.from_domain:
            record(tx, "dmarc", f"dmarc={result.result} "
                                f"header.from={value(result.from_domain)}")
        domain = result.from_domain
        details = {"result": result.result, "from_domain": domain, "policy": result.policy,
                   "record_domain": result.record_domain, "spf_aligned": result.spf_aligned,
                   "dkim_aligned": result.dkim_aligned, "reason": result.reason}
        if result.result == "temperror":
            return [self.finding(
                "dmarc.temperror", ARTICLE,
                f"Không tra cứu được chính sách DMARC của {domain}, xin gửi lại sau",
                f"Could not look up the DMARC policy of {domain}, try again later",
                reply_code=550, status="5.7.1", tempfail_code=451, details=details)]
        if result.result != "fail" or result.policy == "none":
            return []
        code = "dmarc.reject" if result.policy == "reject" else "dmarc.quarantine"
        return [self.finding(
            code, ARTICLE,
            f"Thư mạo danh {domain}: không xác thực được (SPF, DKIM) và chính sách DMARC "
            f"của {domain} là {result.policy}",
            f"Message claims to be from {domain} but is not authenticated (SPF, DKIM), "
            f"and {domain}'s DMARC policy is {result.policy}",
            reply_code=550, status="5.7.1",
            tag=("X-Relay-DMARC", f"fail; policy={result.policy}; "
                                  f"from={value(domain)}"),
            details=details)]

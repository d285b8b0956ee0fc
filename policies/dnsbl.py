"""`dnsbl` (Điều 5.1, anti-spam): the client's IP address in DNS blocklists
(RFC 5782), and the HELO name and the sender's domain in domain blocklists (RHSBL).

`zones` are IP blocklists (`zen.spamhaus.org`); an entry `zone=127.0.0.2,127.0.0.4`
counts only those answers. `rhsbl_zones` are domain blocklists (`dbl.spamhaus.org`).
Answers outside 127.0.0.0/8, and Spamhaus's 127.255.255.0/24 error codes (query
refused, over quota), are not listings: they are logged and count as DNS trouble.

`stage = "rcpt"` (default) asks at the first RCPT, so a logged-in or trusted
client is never asked about and the refusal is per recipient; `"connect"` refuses
at the greeting (trusted clients excepted: nobody has logged in yet), on the MX
listener only, as Postfix's postscreen does (submission users log in after it).
The RHSBL needs the sender, so it is always at RCPT.

Codes: `dnsbl.listed` (the reply names the list), `dnsbl.temperror` (a list did
not answer; tempfail by default: `"dnsbl.temperror" = "log"` lets mail through
when a list is down).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Literal

from pydantic import StrictStr, field_validator, model_validator

from policies.base import Context, Policy, PolicyOptions
from relay.config import check_domain
from relay.mailauth import applies
from relay.mailauth.spf import valid_domain
from relay.model import Action, Finding, Stage, Transaction, domain_of
from relay.resolver import Answer

ARTICLE = "Điều 5.1"
ERROR_ANSWERS = ipaddress.ip_network("127.255.255.0/24")
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
CACHE = "dnsbl.results"


def _zone_entry(entry: str) -> str:
    zone, _, answers = entry.partition("=")
    check_domain(zone)
    for answer in filter(None, answers.split(",")):
        ipaddress.IPv4Address(answer.strip())
    return entry.strip().lower()


class Options(PolicyOptions):
    action: Action = Action.REJECT
    zones: list[StrictStr] = []
    rhsbl_zones: list[StrictStr] = []
    stage: Literal["connect", "rcpt"] = "rcpt"

    @field_validator("zones", "rhsbl_zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            try:
                out.append(_zone_entry(entry))
            except ValueError:
                raise ValueError(f"expected a zone such as zen.spamhaus.org or "
                                 f"zen.spamhaus.org=127.0.0.2,127.0.0.3, got {entry!r}"
                                 ) from None
        return out

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        self.actions.setdefault("dnsbl.temperror", Action.TEMPFAIL)
        return self


def reversed_ip(address: str) -> str | None:
    """`10.2.0.192` for 192.0.2.10; IPv6 as 32 nibbles (RFC 5782 2.4)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.reverse_pointer.rsplit(".", 2)[0]


class DnsblPolicy(Policy):
    name = "dnsbl"
    articles = (ARTICLE,)
    stages = frozenset({Stage.CONNECT, Stage.RCPT})
    Options = Options
    codes = {
        "dnsbl.listed": "the client IP (or the HELO/sender domain) is on a DNS blocklist",
        "dnsbl.temperror": "a DNS blocklist did not answer",
    }

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        super().__init__(options, context)
        assert isinstance(options, Options)
        self.opts = options

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        opts = self.opts
        if stage is Stage.CONNECT:
            # postscreen's place: the MX; on submission and smtps users log in after this
            if opts.stage != "connect" or tx.trusted or tx.listener_kind != "mx":
                return []
            return await self._client(tx, None)
        if not applies(tx):
            return []
        findings = [] if opts.stage == "connect" else await self._client(tx, recipient)
        return [*findings, *await self._domains(tx, recipient)]

    async def _client(self, tx: Transaction, recipient: str | None) -> list[Finding]:
        name = reversed_ip(tx.client_ip)
        if name is None or not self.opts.zones:
            return []
        checks = [(entry, f"{name}.{entry.partition('=')[0]}", tx.client_ip)
                  for entry in self.opts.zones]
        return await self._ask(tx, checks, recipient)

    async def _domains(self, tx: Transaction, recipient: str | None) -> list[Finding]:
        zones = self.opts.rhsbl_zones
        domains = dict.fromkeys(d for d in (tx.helo.lower().rstrip("."),
                                            domain_of(tx.mail_from)) if valid_domain(d))
        checks = [(entry, f"{d}.{entry.partition('=')[0]}", d)
                  for d in domains for entry in zones]
        return await self._ask(tx, checks, recipient)

    async def _ask(self, tx: Transaction, checks: list[tuple[str, str, str]],
                   recipient: str | None) -> list[Finding]:
        if not checks:
            return []
        # one question per name and transaction, however many recipients ask
        cache: dict[str, Answer] = tx.cache.setdefault(CACHE, {})
        todo = [q for _, q, _ in checks if q not in cache]
        if todo:
            dns = self.context.services.dns
            for q, answer in zip(todo, await asyncio.gather(*(dns.lookup(q, "A")
                                                               for q in todo)), strict=True):
                cache[q] = answer
        findings: list[Finding] = []
        for entry, q, listed in checks:
            zone, _, wanted = entry.partition("=")
            answer = cache[q]
            codes = [a for a in answer.records if _is_listing(a, wanted)]
            errors = [a for a in answer.records if _in(a, ERROR_ANSWERS)]
            if codes:
                findings.append(self.finding(
                    "dnsbl.listed", ARTICLE,
                    f"{listed} nằm trong danh sách chặn thư rác {zone}",
                    f"{listed} is listed in the spam blocklist {zone}",
                    recipient=recipient, reply_code=554, status="5.7.1",
                    details={"zone": zone, "listed": listed, "answers": codes}))
            elif answer.failed or errors:
                why = answer.error or f"the list answered {', '.join(errors)} (an error code)"
                findings.append(self.finding(
                    "dnsbl.temperror", ARTICLE,
                    f"Không tra cứu được danh sách chặn {zone}, xin gửi lại sau",
                    f"Could not query the blocklist {zone}, try again later",
                    recipient=recipient, reply_code=554, status="5.7.1", tempfail_code=451,
                    details={"zone": zone, "listed": listed, "error": why}))
        return findings


def _in(answer: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.ip_address(answer) in network
    except ValueError:
        return False


def _is_listing(answer: str, wanted: str) -> bool:
    if wanted:
        return answer in {w.strip() for w in wanted.split(",")}
    return _in(answer, LOOPBACK) and not _in(answer, ERROR_ANSWERS)

"""DMARC (RFC 7489): does SPF or DKIM vouch for the domain in From:, and if not,
what does that domain ask receivers to do?

Our own, small: the libraries that evaluate DMARC either resolve with a global
default resolver (`dmarc`), or wrap a blocking SPF library (`authheaders`), and
`checkdmarc` checks records rather than messages. What the RFC asks of a receiver
is short: find the record (6.6.3: at the From: domain, else at its organizational
domain), check identifier alignment (3.1: strict = same domain, relaxed = same
organizational domain), apply p= (sp= for subdomains) and pct=. The organizational
domain comes from the Public Suffix List shipped in `publicsuffixlist` (no
download at run time).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from relay.mailauth.dkim import DkimResult
from relay.mailauth.spf import SpfResult, valid_domain
from relay.resolver import Resolver

DISPOSITIONS = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcResult:
    result: str  # none | pass | fail | temperror | permerror
    from_domain: str
    policy: str = "none"  # what the domain asks for on fail (after pct)
    record_domain: str = ""  # where the record was found
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=10_000)
def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself if none)."""
    return _psl().privatesuffix(domain) or domain


def aligned(identifier: str | None, from_domain: str, mode: str) -> bool:
    if not identifier:
        return False
    identifier = identifier.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def from_domain(values: Sequence[str]) -> tuple[str | None, str]:
    """The one author domain of the From: field(s), or None and why there is none."""
    if not values:
        return None, "no From: field"
    if len(values) > 1:
        return None, "more than one From: field"
    try:
        addresses = [a for _, a in getaddresses(values) if a]
    except Exception:
        return None, "From: field not readable"
    domains = {a.rpartition("@")[2].lower().rstrip(".") for a in addresses if "@" in a}
    if len(domains) != 1:
        return None, "no author domain in From:" if not domains else "several From: domains"
    domain = domains.pop()
    if not valid_domain(domain):
        return None, f"not a domain in From: {domain[:80]!r}"
    return domain, ""


def parse_record(text: str) -> dict[str, str] | None:
    """The tags of a DMARC record; None when it is not a usable one (6.6.3)."""
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not name and not sep:
            continue
        if i == 0 and (name != "v" or value != "DMARC1"):
            return None
        tags.setdefault(name, value)
    policy = tags.get("p", "").lower()
    if policy not in DISPOSITIONS:
        # 6.6.3: a record with a valid rua= but no valid p= is taken as p=none
        if "rua" not in tags:
            return None
        tags["p"] = "none"
    tags["p"] = tags["p"].lower()
    if tags.get("sp", "").lower() not in DISPOSITIONS:
        tags.pop("sp", None)
    return tags


class DmarcChecker:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def _record(self, domain: str) -> tuple[dict[str, str] | None, str | None]:
        """(tags, error): the usable record at _dmarc.DOMAIN, if any."""
        answer = await self.resolver.lookup(f"_dmarc.{domain}", "TXT")
        if answer.failed:
            return None, answer.error
        records = [r for r in answer.records if r.startswith("v=DMARC1")]
        if len(records) != 1:
            return None, None  # none, or several: no policy (6.6.3)
        return parse_record(records[0]), None

    async def check(self, from_values: Sequence[str], spf: SpfResult | None,
                    dkim: Sequence[DkimResult]) -> DmarcResult:
        domain, why = from_domain(from_values)
        if domain is None:
            return DmarcResult("none", "", reason=why)
        tags, error = await self._record(domain)
        record_domain = domain
        if tags is None and error is None:
            org = organizational_domain(domain)
            if org != domain:
                tags, error = await self._record(org)
                record_domain = org
        if error is not None:
            return DmarcResult("temperror", domain, record_domain=record_domain, reason=error)
        if tags is None:
            return DmarcResult("none", domain, reason="no DMARC record")
        spf_ok = spf is not None and aligned(spf.authenticated_domain, domain,
                                             tags.get("aspf", "r").lower())
        dkim_ok = any(aligned(d.authenticated_domain, domain, tags.get("adkim", "r").lower())
                      for d in dkim)
        if spf_ok or dkim_ok:
            return DmarcResult("pass", domain, tags["p"], record_domain, spf_ok, dkim_ok)
        policy = tags["p"]
        if record_domain != domain and "sp" in tags:
            policy = tags["sp"].lower()
        pct = tags.get("pct", "100")
        sampled = pct.isdigit() and int(pct) < 100 and random.randrange(100) >= int(pct)
        if sampled:  # 6.6.4: outside the sample, the next weaker policy applies
            policy = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
        return DmarcResult("fail", domain, policy, record_domain,
                           reason="neither SPF nor DKIM aligned with From:"
                           + (f" (pct={pct}: sampled out)" if sampled else ""))

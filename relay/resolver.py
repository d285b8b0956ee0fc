"""DNS for every policy that asks: one dnspython async resolver built from `[dns]`.

Why one place: SPF, DKIM, DMARC, the blocklists and webmail's MX check all ask
the same servers with the same deadline, and share one answer cache (an SPF
`include:` of a big provider is asked once, not once per message).

DNS trouble is data, never an exception to the caller's caller: `lookup()`
returns an `Answer` whose `error` says what went wrong (timeout, SERVFAIL, no
server), and "no such name"/"no such record" are ordinary empty answers. Each
policy turns an `error` into its `*.temperror` finding (tempfail by default):
never a silent pass, never a crash.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from relay.config import Config, DnsConfig, parse_hostport
from relay.metrics import DNS_FAILURES, DNS_SECONDS

log = logging.getLogger(__name__)

# bounds on what one answer may hold: a hostile zone must not make us parse megabytes
MAX_RECORDS = 100


class DnsError(Exception):
    """A lookup that got no usable answer (timeout, SERVFAIL, REFUSED, no server)."""


@dataclass(frozen=True)
class Answer:
    """Records of one type at one name; `error` when the lookup itself failed."""

    name: str
    rdtype: str
    records: tuple[str, ...] = ()  # TXT: the strings joined; MX: "PREF HOST"; A/AAAA/PTR: text
    exists: bool = True  # False: NXDOMAIN
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def nameserver(entry: str) -> dns.nameserver.Nameserver:
    """`192.0.2.53`, `::1`, `127.0.0.1:5353` or `[::1]:5353` (an IP address: no lookups)."""
    host, port = (parse_hostport(entry) if entry.count(":") == 1 or entry.startswith("[")
                  else (entry, 53))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address or IP:PORT, got {entry!r}") from None
    return dns.nameserver.Do53Nameserver(host, port)


def make_resolver(nameservers: Sequence[str], timeout: float,
                  cache_size: int = 0) -> dns.asyncresolver.Resolver:
    """An async resolver: the given servers, else /etc/resolv.conf's."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration:
        # no usable /etc/resolv.conf: every lookup fails -> *.temperror findings
        log.error("no DNS servers configured ([dns] nameservers, /etc/resolv.conf): "
                  "every DNS lookup will fail")
        resolver = dns.asyncresolver.Resolver(configure=False)
    if nameservers:
        resolver.nameservers = [nameserver(n) for n in nameservers]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    if cache_size:
        resolver.cache = dns.resolver.LRUCache(cache_size)
    return resolver


class Resolver:
    """`lookup(name, type)` with the `[dns]` servers, deadline and cache."""

    def __init__(self, config: DnsConfig) -> None:
        self.config = config
        self.resolver = make_resolver(config.nameservers, config.timeout, config.cache_size)
        self.queries = 0
        self.failures = 0

    @classmethod
    def from_config(cls, config: Config) -> Resolver:
        return cls(config.dns)

    async def lookup(self, name: str, rdtype: str) -> Answer:
        started = time.monotonic()
        answer = await self._lookup(name, rdtype)
        outcome = ("error" if answer.error else "found" if answer.records
                   else "nxdomain" if not answer.exists else "nodata")
        DNS_SECONDS.labels(rdtype, outcome).observe(time.monotonic() - started)
        return answer

    async def _lookup(self, name: str, rdtype: str) -> Answer:
        self.queries += 1
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            # a name that cannot be asked (label too long, empty label): it cannot exist
            return Answer(name, rdtype, exists=False)
        try:
            answer = await self.resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rdtype, exists=False)
        except dns.resolver.NoAnswer:
            return Answer(name, rdtype)
        except dns.resolver.LifetimeTimeout:
            self.failures += 1
            DNS_FAILURES.inc()
            return Answer(name, rdtype, error=f"no DNS answer for {name} {rdtype} within "
                                              f"{self.resolver.lifetime:g}s")
        except dns.exception.DNSException as exc:  # SERVFAIL, REFUSED, no servers, bad name
            self.failures += 1
            DNS_FAILURES.inc()
            return Answer(name, rdtype, error=f"DNS lookup of {name} {rdtype} failed: "
                                              f"{str(exc)[:200]}")
        return Answer(name, rdtype, tuple(_text(r) for r in list(answer)[:MAX_RECORDS]))

    async def aclose(self) -> None:
        pass


def _text(rdata: object) -> str:
    rdtype = getattr(rdata, "rdtype", None)
    if rdtype == dns.rdatatype.TXT:
        # RFC 7208 3.3 / RFC 6376 3.6.2.2: the strings of one record are concatenated
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rdtype == dns.rdatatype.MX:
        host = rdata.exchange.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
        return f"{rdata.preference} {host}"  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME):
        return rdata.target.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
    return rdata.to_text()  # type: ignore[attr-defined]

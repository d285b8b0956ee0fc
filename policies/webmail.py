"""`webmail`: no official business with provincial mailboxes from free webmail that is
not registered in Vietnam (Yahoo, Hotmail, Gmail…), Điều 9.

Inbound, per recipient at RCPT (so the other recipients still get the mail):

- `webmail.inbound`: the envelope sender's domain is on the free-webmail list
  (`webmail_domains.txt`, shipped with the package; `add`/`remove` in relay.toml);
- `webmail.mx` (`mx_check = true`): the sender's own domain has its MX at a free
  provider (`webmail_mx.txt`, or any domain of the list);
- `webmail.dns_error` (`mx_check = true`): the MX lookup (through the `[dns]` servers,
  within `[dns] timeout`) timed out or failed
  (SERVFAIL, no answer from any server). Not an exception and never a silent pass: by
  default it is a `451 4.4.3` temporary failure, so the sending server retries (as
  Postfix does for an unresolvable sender domain); `actions = {"webmail.dns_error" =
  "log"}` lets such mail through. Answers (also "no such domain"/"no MX") are cached
  for `mx_cache_ttl`, failures for `mx_error_ttl`;
- `webmail.unregistered` (`vn_only = true`): any sender domain outside `.vn` counts as
  not registered in Vietnam;
- `webmail.header_from`: at DATA, the From: header names such a sender while the
  envelope did not (one finding per recipient; DATA has one reply for all of them).

Mail to a citizen-intake mailbox (`tiepdan@`, `tiepdan.<agency>@`, Điều 4) is exempt:
citizens write from wherever they are. The mailbox kind comes from the directory
(`DirectoryStore.kind()`: its entry, else the Điều 4 naming rule).

Outbound, per recipient: `webmail.outbound` when a provincial mailbox (other than a
citizen-intake one answering citizens) sends to a free-webmail address. It is its own
code so `[policies.webmail.actions]` can give it its own action.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from importlib import resources
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from policies.base import Context, Policy, PolicyOptions
from relay.config import Duration
from relay.metrics import DNS_SECONDS
from relay.model import Action, Finding, Stage, Transaction, domain_of
from relay.resolver import make_resolver, nameserver

log = logging.getLogger(__name__)

ARTICLE = "Điều 9"
CITIZEN_INTAKE = "citizen_intake"

# after a `name.*` entry: a top-level domain, or a country's second level (com.vn, co.uk)
_ANY_TLD = re.compile(r"^[a-z]{2,63}$|^(com|co|net|org|ne|or|ac|gen|ltd|plc)\.[a-z]{2}$")
_PATTERN = re.compile(r"^([a-z0-9-]+\.)*[a-z0-9-]+(\.\*|\.[a-z0-9-]+)$")


def read_list(name: str) -> list[str]:
    """Entries of a data file shipped in this package (comments and blanks dropped)."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    entries = (line.split("#", 1)[0].strip().lower() for line in text.splitlines())
    return [e for e in entries if e]


class DomainSet:
    """Domains and `name.*` patterns; a domain matches itself or any parent in the set."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.any_tld: set[str] = set()
        for entry in entries:
            entry = entry.strip().lower().rstrip(".")
            if entry.endswith(".*"):
                self.any_tld.add(entry[:-2])
            else:
                self.exact.add(entry)

    def match(self, domain: str) -> str | None:
        """The entry that `domain` falls under, or None."""
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self.exact:
                return candidate
            head, rest = labels[i], ".".join(labels[i + 1:])
            if head in self.any_tld and _ANY_TLD.match(rest):
                return f"{head}.*"
        return None

    def __contains__(self, domain: str) -> bool:
        return self.match(domain) is not None


def _edit(shipped: list[str], add: list[str], remove: list[str]) -> list[str]:
    removed = set(remove)
    return [d for d in shipped if d not in removed] + add


class Options(PolicyOptions):
    add: list[StrictStr] = []  # extra free-webmail domains (`name.*` allowed)
    remove: list[StrictStr] = []  # shipped entries this site does not count
    allow: list[StrictStr] = []  # sender domains never flagged (partners), for vn_only/mx
    vn_only: StrictBool = False
    mx_check: StrictBool = False
    mx_add: list[StrictStr] = []
    mx_remove: list[StrictStr] = []
    # the MX check asks the `[dns]` servers with `[dns] timeout`; these two, where set,
    # still override them for this policy alone (they came before `[dns]`)
    mx_timeout: Duration = 3.0
    mx_cache_ttl: Duration = 3600.0
    mx_error_ttl: Duration = 60.0
    mx_cache_size: StrictInt = Field(10_000, ge=1)
    # DNS servers for the MX check alone, IP or IP:PORT; empty: `[dns]`
    nameservers: list[StrictStr] = []

    @field_validator("add", "remove", "allow", "mx_add", "mx_remove")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            entry = entry.strip().lower().rstrip(".")
            if not _PATTERN.match(entry):
                raise ValueError(f"expected a domain such as mail.example or example.*, "
                                 f"got {entry!r}")
            out.append(entry)
        return out

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        for entry in value:
            nameserver(entry)
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        # a failed MX lookup tempfails unless the site says otherwise (see module doc)
        self.actions.setdefault("webmail.dns_error", Action.TEMPFAIL)
        return self


@dataclass(frozen=True)
class MxResult:
    outcome: Literal["free", "other", "none", "error"]
    host: str | None = None  # the MX host that matched (free) or the first one
    error: str | None = None


class MxChecker:
    """Which provider a domain's MX points at, with a deadline and a bounded cache."""

    def __init__(self, providers: DomainSet, timeout: float, ttl: float, error_ttl: float,
                 size: int, nameservers: Sequence[str] = (),
                 resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self.providers = providers
        self.ttl, self.error_ttl, self.size = ttl, error_ttl, size
        self.cache: dict[str, tuple[float, MxResult]] = {}
        self.inflight: dict[str, asyncio.Task[MxResult]] = {}
        # the `[dns]` resolver, unless this policy's own (older) options name servers
        self.resolver = resolver or make_resolver(nameservers, timeout)

    async def lookup(self, domain: str) -> MxResult:
        now = time.monotonic()
        hit = self.cache.get(domain)
        if hit is not None and hit[0] > now:
            return hit[1]
        task = self.inflight.get(domain)
        if task is None:  # one DNS question per domain, however many sessions ask at once
            task = asyncio.ensure_future(self._resolve(domain))
            self.inflight[domain] = task
            task.add_done_callback(lambda _: self.inflight.pop(domain, None))
        result = await asyncio.shield(task)
        ttl = self.error_ttl if result.outcome == "error" else self.ttl
        self.cache.pop(domain, None)
        while len(self.cache) >= self.size:
            self.cache.pop(next(iter(self.cache)))  # the oldest entry
        self.cache[domain] = (now + ttl, result)
        return result

    async def _resolve(self, domain: str) -> MxResult:
        started = time.monotonic()
        result = await self._ask(domain)
        DNS_SECONDS.labels("MX", result.outcome).observe(time.monotonic() - started)
        return result

    async def _ask(self, domain: str) -> MxResult:
        try:
            answer = await self.resolver.resolve(domain, "MX", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return MxResult("none")
        except dns.resolver.LifetimeTimeout:
            return MxResult("error", error=f"no DNS answer for {domain} MX within "
                                           f"{self.resolver.lifetime:g}s")
        except dns.exception.DNSException as exc:  # SERVFAIL, REFUSED, no servers, bad name
            return MxResult("error", error=f"DNS lookup of {domain} MX failed: {exc}")
        hosts = sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                       for r in answer)
        for _, host in hosts:
            if host and host in self.providers:
                return MxResult("free", host)
        return MxResult("other", hosts[0][1] if hosts else None)


class WebmailPolicy(Policy):
    name = "webmail"
    articles = ('Điều 9',)
    stages = frozenset({Stage.RCPT, Stage.DATA})
    Options = Options
    codes = {
        "webmail.inbound": "sender on free webmail writes to a personal or official mailbox",
        "webmail.mx": "sender domain hosted by a free webmail provider (MX check)",
        "webmail.dns_error": "MX lookup of the sender domain failed (timeout, SERVFAIL)",
        "webmail.unregistered": "vn_only: sender domain not under .vn",
        "webmail.header_from": "From: header on free webmail (envelope sender was not)",
        "webmail.outbound": "provincial mailbox sends to a free webmail address",
    }

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        super().__init__(options, context)
        assert isinstance(options, Options)
        self.opts = options
        self.webmail = DomainSet(_edit(read_list("webmail_domains.txt"), options.add,
                                       options.remove))
        self.allowed = DomainSet(options.allow)
        providers = _edit(read_list("webmail_mx.txt"), options.mx_add, options.mx_remove)
        every = [*providers, *self.webmail.exact, *(f"{d}.*" for d in self.webmail.any_tld)]
        # the shared `[dns]` resolver, unless this table still names its own servers or
        # a deadline other than `[dns] timeout` (the options from before `[dns]`)
        dns_config = context.config.dns
        own = bool(options.nameservers) or ("mx_timeout" in options.model_fields_set
                                            and options.mx_timeout != dns_config.timeout)
        self.mx = MxChecker(
            DomainSet(every),
            options.mx_timeout, options.mx_cache_ttl, options.mx_error_ttl,
            options.mx_cache_size, options.nameservers or dns_config.nameservers,
            resolver=None if own else context.services.dns.resolver,
        ) if options.mx_check else None

    # --- the checks -------------------------------------------------------------
    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        if stage is Stage.RCPT:
            assert recipient is not None
            return await self._rcpt(tx, recipient)
        return await self._data(tx)

    async def _rcpt(self, tx: Transaction, recipient: str) -> list[Finding]:
        config = self.context.config
        sender = tx.mail_from
        if not sender:
            return []
        sender_local, rcpt_local = config.is_local(sender), config.is_local(recipient)
        if rcpt_local and not sender_local:
            if await self.kind(recipient) == CITIZEN_INTAKE:
                return []
            return await self._judge_sender(domain_of(sender), recipient, tx)
        if sender_local and not rcpt_local:
            provider = self.webmail.match(domain_of(recipient))
            if provider is None or await self.kind(sender) == CITIZEN_INTAKE:
                return []
            return [self.finding(
                "webmail.outbound", ARTICLE,
                f"Hộp thư của tỉnh không được trao đổi công việc với hộp thư miễn phí "
                f"nước ngoài ({domain_of(recipient)})",
                f"Provincial mailboxes may not do official business with free webmail "
                f"not registered in Vietnam ({domain_of(recipient)})",
                recipient=recipient, details={"domain": domain_of(recipient),
                                              "listed_as": provider})]
        return []

    async def _data(self, tx: Transaction) -> list[Finding]:
        assert tx.message is not None
        config = self.context.config
        envelope = domain_of(tx.mail_from)
        if envelope and config.is_local(tx.mail_from):
            return []
        domains = []
        try:
            addresses = getaddresses(tx.message.get_all("From"))
        except Exception:  # a From: the parser chokes on is the headers policy's finding
            addresses = []
        for _, address in addresses:
            domain = domain_of(address)
            if domain and domain != envelope and domain not in domains:
                domains.append(domain)
        out: list[Finding] = []
        for domain in domains:
            if domain in config.server.local_domains:
                continue
            for recipient in tx.rcpt_to:
                if not config.is_local(recipient) or await self.kind(recipient) == CITIZEN_INTAKE:
                    continue
                for f in await self._judge_sender(domain, recipient, tx):
                    if f.code in ("webmail.inbound", "webmail.mx", "webmail.unregistered"):
                        out.append(self.finding(
                            "webmail.header_from", ARTICLE,
                            f"Người gửi (From: {domain}) dùng hộp thư miễn phí không đăng ký "
                            f"tại Việt Nam",
                            f"Sender (From: {domain}) uses free webmail not registered in "
                            f"Vietnam",
                            recipient=recipient, details={**f.details, "because": f.code}))
                    else:
                        out.append(f)
        return out

    async def _judge_sender(self, domain: str, recipient: str,
                            tx: Transaction) -> list[Finding]:
        if domain in self.allowed:
            return []
        provider = self.webmail.match(domain)
        if provider is not None:
            return [self._inbound("webmail.inbound", domain, recipient,
                                  {"domain": domain, "listed_as": provider})]
        if self.opts.vn_only and not domain.endswith(".vn"):
            return [self.finding(
                "webmail.unregistered", ARTICLE,
                f"Tên miền người gửi {domain} không đăng ký tại Việt Nam (.vn)",
                f"Sender domain {domain} is not registered in Vietnam (.vn)",
                recipient=recipient, details={"domain": domain})]
        if self.mx is None:
            return []
        result = await self.mx.lookup(domain)
        tx.cache.setdefault("webmail.mx", {})[domain] = result.outcome
        if result.outcome == "free":
            return [self._inbound("webmail.mx", domain, recipient,
                                  {"domain": domain, "mx": result.host})]
        if result.outcome == "error":
            return [self.finding(
                "webmail.dns_error", ARTICLE,
                f"Không tra cứu được máy chủ thư (MX) của {domain}, xin gửi lại sau",
                f"Could not look up the mail servers (MX) of {domain}, try again later",
                recipient=recipient, reply_code=550, status="5.4.3", tempfail_code=451,
                details={"domain": domain, "error": result.error})]
        return []

    def _inbound(self, code: str, domain: str, recipient: str,
                 details: dict[str, Any]) -> Finding:
        via = f" (MX {details['mx']})" if "mx" in details else ""
        intake = f"tiepdan@{domain_of(recipient)}"
        return self.finding(
            code, ARTICLE,
            f"Không dùng hộp thư miễn phí không đăng ký tại Việt Nam ({domain}{via}) để "
            f"trao đổi công việc với hộp thư của tỉnh; công dân xin gửi tới {intake}",
            f"Free webmail not registered in Vietnam ({domain}{via}) may not be used for "
            f"official business with provincial mailboxes; citizens please write to {intake}",
            recipient=recipient, details=details)

    # --- mailbox kinds ----------------------------------------------------------
    async def kind(self, address: str) -> str:
        return await self.context.services.directory.kind(address)

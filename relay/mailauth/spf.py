"""SPF (RFC 7208): may this client IP send mail for this domain? `check_host()` on
the `[dns]` resolver.

Why our own and not a library: pyspf (last release 2020) blocks on DNS and reads
its resolver settings from module globals, so each lookup would need a thread and
none would honour `[dns]`; emailsec is an alpha on aiodns; checkdmarc checks
records but does not evaluate an IP against them; authheaders wraps pyspf. The
evaluation itself is small and fully specified: the terms below follow RFC 7208
section 5, the macros section 7, and the processing limits of 4.6.4 (10 DNS-querying
terms, 2 void lookups, 10 MX or PTR names) that keep a hostile record from turning
one message into a DNS storm. Every DNS failure is `temperror`, never a pass.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field

from relay.resolver import Answer, Resolver

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LOOKUPS = 10  # 4.6.4: include, a, mx, ptr, exists, redirect
MAX_VOID = 2  # 4.6.4: lookups that answered NXDOMAIN or nothing
MAX_NAMES = 10  # 4.6.4: MX hosts, PTR names
MAX_RECORD = 4096  # longer than any real record: refuse to parse more
DEADLINE = 20.0  # 4.6.4: at least 20 seconds for the whole evaluation

RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$", re.I)
_TOPLABEL = re.compile(r"^(?=.*[a-z])[a-z0-9-]+$", re.I)
_MODIFIER = re.compile(r"^([a-z][a-z0-9_.-]*)=(.*)$", re.I)
_MECHANISM = re.compile(r"^([+\-~?]?)([a-z0-9]+)(.*)$", re.I)
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.I)
_CIDR = re.compile(r"^(.*?)(?:/(\d{1,2}))?(?://(\d{1,3}))?$")


class PermError(Exception):
    """The record is broken or over the limits: `permerror`."""


class TempError(Exception):
    """DNS failed: `temperror`."""


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    identity: str  # "mailfrom" | "helo"
    domain: str  # the domain whose policy was asked ("" when there was none to ask)
    sender: str  # what smtp.mailfrom / smtp.helo shows
    reason: str = ""  # the mechanism that matched, or what went wrong
    explanation: str = ""  # exp= text on fail

    @property
    def authenticated_domain(self) -> str | None:
        """The domain SPF vouches for (DMARC alignment), only on pass."""
        return self.domain if self.result == "pass" else None


@dataclass
class _State:
    ip: IP
    sender: str
    helo: str
    lookups: int = 0
    void: int = 0
    cache: dict[tuple[str, str], Answer] = field(default_factory=dict)


def valid_domain(domain: str) -> bool:
    """A multi-label domain name SPF may be evaluated for (4.3)."""
    if not domain or len(domain) > 253 or domain.endswith("."):
        return False
    labels = domain.split(".")
    return (len(labels) >= 2 and all(_LABEL.match(label) for label in labels)
            and bool(_TOPLABEL.match(labels[-1])))


class SpfChecker:
    def __init__(self, resolver: Resolver, deadline: float = DEADLINE) -> None:
        self.resolver = resolver
        self.deadline = deadline

    async def check(self, client_ip: str, sender: str, helo: str) -> SpfResult:
        """The MAIL FROM identity; for the null sender, `postmaster@HELO` (2.4)."""
        helo = helo.strip().lower().rstrip(".")
        if sender:
            local, _, domain = sender.rpartition("@")
            identity, shown = "mailfrom", sender
            local = local or "postmaster"
        else:
            local, domain, identity, shown = "postmaster", helo, "helo", helo
        domain = domain.lower().rstrip(".")
        try:
            ip = ipaddress.ip_address(client_ip)
        except ValueError:
            return SpfResult("none", identity, "", shown, "no client IP address")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # 5: an IPv4-mapped address is checked as IPv4
        if not valid_domain(domain):
            return SpfResult("none", identity, "", shown, f"not a domain SPF applies to: "
                                                          f"{domain[:80]!r}")
        state = _State(ip, f"{local}@{domain}", helo)
        try:
            async with asyncio.timeout(self.deadline):
                result, reason, explanation = await self._check_host(state, domain, top=True)
        except TimeoutError:
            result, reason, explanation = ("temperror", f"no result within "
                                           f"{self.deadline:g}s", "")
        return SpfResult(result, identity, domain, shown, reason, explanation)

    # --- 4: check_host() --------------------------------------------------------
    async def _check_host(self, state: _State, domain: str, top: bool = False
                          ) -> tuple[str, str, str]:
        try:
            record = await self._record(state, domain)
            if record is None:
                return "none", f"no SPF record at {domain}", ""
            return await self._evaluate(state, domain, record, top)
        except TempError as exc:
            return "temperror", str(exc), ""
        except PermError as exc:
            return "permerror", str(exc), ""

    async def _record(self, state: _State, domain: str) -> str | None:
        answer = await self._lookup(state, domain, "TXT", count_void=False)
        records = [r for r in answer.records
                   if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
        if len(records) > 1:
            raise PermError(f"{domain} has {len(records)} SPF records")
        if not records:
            return None
        if len(records[0]) > MAX_RECORD:
            raise PermError(f"the SPF record of {domain} is longer than {MAX_RECORD}")
        return records[0]

    async def _evaluate(self, state: _State, domain: str, record: str, top: bool
                        ) -> tuple[str, str, str]:
        terms = record.split()[1:]
        mechanisms: list[tuple[str, str, str]] = []
        redirect = exp = None
        for term in terms:
            modifier = _MODIFIER.match(term)
            if modifier:  # name=value; a mechanism has no "=" before its ":" or "/"
                name, value = modifier.group(1).lower(), modifier.group(2)
                if name in ("redirect", "exp"):
                    if (redirect if name == "redirect" else exp) is not None:
                        raise PermError(f"{name}= appears twice in the record of {domain}")
                    if name == "redirect":
                        redirect = value
                    else:
                        exp = value
                continue  # 6: unknown modifiers are ignored
            m = _MECHANISM.match(term)
            if not m or m.group(2).lower() not in MECHANISMS:
                raise PermError(f"unknown term {term[:60]!r} in the record of {domain}")
            mechanisms.append((QUALIFIERS[m.group(1) or "+"], m.group(2).lower(), m.group(3)))
        for qualifier, name, arg in mechanisms:
            if await self._matches(state, domain, name, arg):
                explanation = ""
                if qualifier == "fail" and exp and top:
                    explanation = await self._explain(state, domain, exp)
                return qualifier, f"{name}{arg}" if name != "all" else "all", explanation
        if redirect is not None:
            self._count(state)
            target = self._expand(state, domain, redirect)
            result, reason, explanation = await self._check_host(state, target)
            if result == "none":  # 6.1: a redirect to no record is an error
                return "permerror", f"redirect={target}: no SPF record", ""
            return result, reason, explanation
        return "neutral", "no mechanism matched", ""

    # --- 5: mechanisms ------------------------------------------------------------
    async def _matches(self, state: _State, domain: str, name: str, arg: str) -> bool:
        if name == "all":
            if arg:
                raise PermError(f"all takes no argument ({arg[:40]!r})")
            return True
        if name in ("ip4", "ip6"):
            return self._ip_matches(state.ip, name, arg)
        if name == "include":
            if not arg.startswith(":") or len(arg) < 2:
                raise PermError("include needs a domain")
            self._count(state)
            target = self._expand(state, domain, arg[1:])
            result, reason, _ = await self._check_host(state, target)
            if result == "pass":
                return True
            if result == "temperror":
                raise TempError(f"include:{target}: {reason}")
            if result in ("permerror", "none"):
                raise PermError(f"include:{target}: {reason}")
            return False
        target_spec, v4, v6 = self._split_cidr(arg, name)
        target = self._expand(state, domain, target_spec) if target_spec else domain
        if name == "a":
            self._count(state)
            return await self._address_matches(state, target, v4, v6)
        if name == "mx":
            self._count(state)
            answer = await self._lookup(state, target, "MX")
            hosts = [r.split(" ", 1)[1] for r in answer.records if " " in r]
            if len(hosts) > MAX_NAMES:
                raise PermError(f"{target} has more than {MAX_NAMES} MX records")
            for host in hosts:
                if host and await self._address_matches(state, host, v4, v6, count_void=False):
                    return True
            return False
        if name == "ptr":
            self._count(state)
            return await self._ptr_matches(state, target)
        if name == "exists":
            if not target_spec:
                raise PermError("exists needs a domain")
            self._count(state)
            answer = await self._lookup(state, target, "A")
            return bool(answer.records)
        raise PermError(f"unknown mechanism {name}")

    @staticmethod
    def _ip_matches(ip: IP, name: str, arg: str) -> bool:
        if not arg.startswith(":"):
            raise PermError(f"{name} needs an address")
        try:
            network = ipaddress.ip_network(arg[1:], strict=False)
        except ValueError:
            raise PermError(f"{name}{arg[:60]}: not a network") from None
        if (name == "ip4") != (network.version == 4) or "/" in arg[1:] and \
                int(arg.rsplit("/", 1)[1]) > network.max_prefixlen:
            raise PermError(f"{name}{arg[:60]}: not an IPv{name[-1]} network")
        return ip.version == network.version and ip in network

    @staticmethod
    def _split_cidr(arg: str, name: str) -> tuple[str, int, int]:
        spec = arg[1:] if arg.startswith(":") else arg
        if arg and not arg.startswith((":", "/")):
            raise PermError(f"{name}{arg[:60]}: bad syntax")
        m = _CIDR.match(spec)
        assert m is not None
        target, v4, v6 = m.group(1), m.group(2), m.group(3)
        v4n, v6n = int(v4) if v4 else 32, int(v6) if v6 else 128
        if v4n > 32 or v6n > 128 or (arg.startswith(":") and not target):
            raise PermError(f"{name}{arg[:60]}: bad prefix length or domain")
        return target, v4n, v6n

    async def _address_matches(self, state: _State, host: str, v4: int, v6: int,
                               count_void: bool = True) -> bool:
        rdtype = "A" if state.ip.version == 4 else "AAAA"
        answer = await self._lookup(state, host, rdtype, count_void=count_void)
        prefix = v4 if state.ip.version == 4 else v6
        for record in answer.records:
            try:
                if state.ip in ipaddress.ip_network(f"{record}/{prefix}", strict=False):
                    return True
            except ValueError:
                continue
        return False

    async def _ptr_matches(self, state: _State, target: str) -> bool:
        names = await self._validated_names(state)
        target = target.lower()
        return any(n == target or n.endswith("." + target) for n in names)

    async def _validated_names(self, state: _State) -> list[str]:
        """5.5: PTR names of the client whose own addresses include it (at most 10)."""
        reverse = state.ip.reverse_pointer
        try:
            answer = await self._lookup(state, reverse, "PTR", count_void=False)
        except TempError:
            return []  # 5.5: a DNS error here is a non-match, not temperror
        names = []
        rdtype = "A" if state.ip.version == 4 else "AAAA"
        for name in answer.records[:MAX_NAMES]:
            try:
                addresses = await self._lookup(state, name, rdtype, count_void=False)
            except TempError:
                continue
            if str(state.ip) in {str(ipaddress.ip_address(a)) for a in addresses.records
                                 if _is_ip(a)}:
                names.append(name.lower())
        return names

    async def _explain(self, state: _State, domain: str, exp: str) -> str:
        """6.2: the explanation string; any trouble means no explanation."""
        try:
            target = self._expand(state, domain, exp)
            answer = await self.resolver.lookup(target, "TXT")
            if answer.failed or len(answer.records) != 1:
                return ""
            text = self._expand(state, domain, answer.records[0], explanation=True)
        except (PermError, TempError):
            return ""
        return "".join(c for c in text if c.isprintable())[:300]

    # --- DNS with the limits --------------------------------------------------------
    def _count(self, state: _State) -> None:
        state.lookups += 1
        if state.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS-querying terms")

    async def _lookup(self, state: _State, name: str, rdtype: str,
                      count_void: bool = True) -> Answer:
        key = (name.lower(), rdtype)
        answer = state.cache.get(key)
        if answer is None:
            answer = await self.resolver.lookup(name, rdtype)
            state.cache[key] = answer
        if answer.failed:
            raise TempError(answer.error or "DNS error")
        if count_void and not answer.records:
            state.void += 1
            if state.void > MAX_VOID:
                raise PermError(f"more than {MAX_VOID} void DNS lookups")
        return answer

    # --- 7: macros ----------------------------------------------------------------------
    def _expand(self, state: _State, domain: str, spec: str, explanation: bool = False
                ) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(5) is not None:
                literal = {"%": "%", "_": " ", "-": "%20"}.get(m.group(5))
                if literal is None:
                    raise PermError(f"bad macro %{m.group(5)}")
                return literal
            letter, digits, reverse, delimiters = m.groups()[:4]
            if letter.lower() in "crt" and not explanation:
                raise PermError(f"macro %{{{letter}}} is only allowed in exp=")
            value = self._macro_value(state, domain, letter.lower())
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                if int(digits) == 0:
                    raise PermError("macro with 0 labels")
                parts = parts[-int(digits):]
            out = ".".join(parts)
            return urllib.parse.quote(out, safe="") if letter.isupper() else out

        if "%" not in spec:
            out = spec
        else:
            stripped = _MACRO.sub("", spec)
            if "%" in stripped:
                raise PermError(f"bad macro in {spec[:60]!r}")
            out = _MACRO.sub(one, spec)
        if explanation:
            return out
        out = out.rstrip(".").lower()
        while len(out) > 253 and "." in out:  # 7.3: drop labels from the left
            out = out.split(".", 1)[1]
        if not valid_domain(out):
            raise PermError(f"not a domain: {out[:80]!r}")
        return out

    @staticmethod
    def _macro_value(state: _State, domain: str, letter: str) -> str:
        local, _, sender_domain = state.sender.rpartition("@")
        ip = state.ip
        if letter == "s":
            return state.sender
        if letter == "l":
            return local
        if letter == "o":
            return sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if ip.version == 4:
                return str(ip)
            return ".".join(ip.exploded.replace(":", ""))
        if letter == "v":
            return "in-addr" if ip.version == 4 else "ip6"
        if letter == "h":
            return state.helo or "unknown"
        if letter == "p":
            return "unknown"  # 7.3: SHOULD NOT be used; no PTR lookup for it
        if letter == "c":
            return str(ip)
        if letter == "r":
            return "unknown"
        if letter == "t":
            return str(int(time.time()))
        raise PermError(f"unknown macro {letter}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True

"""DKIM verification (RFC 6376): dkimpy does the canonicalisation and the cryptography;
the key records come from the `[dns]` resolver.

dkimpy's own DNS is blocking (dnspython's stub resolver with its own settings) and
its asyncio variant needs aiodns; so the key of every signature is fetched first,
concurrently, through our resolver, and dkimpy verifies against those answers.
A key lookup that fails is `temperror`; no key, a malformed signature or key, or
a key under 1024 bits is `permerror`; a signature that does not verify is `fail`.
At most `max_signatures` are checked: a message with a hundred signatures costs
five verifications, not a hundred.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from relay.mailauth.rsa import install as use_openssl_rsa
from relay.mailauth.spf import valid_domain
from relay.resolver import Resolver

use_openssl_rsa()  # dkimpy's RSA arithmetic by OpenSSL (relay/mailauth/rsa.py)

log = logging.getLogger(__name__)

MAX_SIGNATURES = 5


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | temperror | permerror | neutral
    domain: str  # d=, "" when the signature could not be read
    selector: str  # s=
    b: str  # the start of b=, which tells signatures apart (RFC 6008)
    reason: str = ""

    @property
    def authenticated_domain(self) -> str | None:
        return self.domain if self.result == "pass" else None


def _ascii(value: bytes | None, limit: int = 253) -> str:
    return (value or b"").decode("ascii", "replace")[:limit].strip().lower()


_SELECTOR = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*")


def _names(sig: dict[bytes, bytes]) -> tuple[str, str]:
    """(d=, s=) when both are names DNS can be asked for, else "" for the bad one: the
    tags are the sender's, and they reach a DNS query, a finding and the log."""
    domain, selector = _ascii(sig.get(b"d")), _ascii(sig.get(b"s"), 63)
    return (domain if valid_domain(domain) else "",
            selector if _SELECTOR.fullmatch(selector) else "")


async def verify(raw: bytes, resolver: Resolver, max_signatures: int = MAX_SIGNATURES
                 ) -> list[DkimResult]:
    """One result per DKIM-Signature (the first `max_signatures`); [] when unsigned."""
    try:
        message = dkim.DKIM(raw, minkey=1024)
    except dkim.DKIMException as exc:
        return [DkimResult("permerror", "", "", "", f"message not readable: {exc}")]
    headers = [value for name, value in message.headers if name.lower() == b"dkim-signature"]
    if not headers:
        return []
    tags: list[dict[bytes, bytes] | None] = []
    for value in headers[:max_signatures]:
        try:
            tags.append(parse_tag_value(value))
        except InvalidTagValueList:
            tags.append(None)
    names = sorted({_key_name(t) for t in tags if t is not None and _key_name(t)})
    answers = dict(zip(names, await asyncio.gather(*(resolver.lookup(n, "TXT")
                                                     for n in names)), strict=True))
    out = []
    for index, sig in enumerate(tags):
        if sig is None:
            out.append(DkimResult("permerror", "", "", "", "malformed DKIM-Signature"))
            continue
        domain, selector = _names(sig)
        b = _ascii(sig.get(b"b"), 400).replace(" ", "").replace("\t", "")[:8]
        name = _key_name(sig)
        answer = answers.get(name) if name else None
        if answer is None:
            out.append(DkimResult("permerror", domain, selector, b,
                                  "no usable d= or s= (missing, or not a DNS name)"))
            continue
        if answer.failed:
            out.append(DkimResult("temperror", domain, selector, b, answer.error or ""))
            continue
        record = answer.records[0] if len(answer.records) == 1 else None
        if record is None:
            why = "no key record" if not answer.records else "more than one key record"
            out.append(DkimResult("permerror", domain, selector, b, f"{name}: {why}"))
            continue
        try:
            ok = message.verify(index, dnsfunc=lambda _name, timeout=5, r=record: r.encode())
        except dkim.DKIMException as exc:
            # a body changed in transit is a signature that does not verify (RFC 8601
            # 2.7.1 "fail"); dkimpy raises for it where a bad header hash returns False
            result = "fail" if "body hash mismatch" in str(exc) else "permerror"
            out.append(DkimResult(result, domain, selector, b, str(exc)[:200]))
            continue
        except Exception as exc:  # dkimpy on input it did not expect: a result, not a crash
            log.warning("dkim: verifying signature %d of d=%s failed: %r", index, domain, exc)
            out.append(DkimResult("permerror", domain, selector, b, "unverifiable signature"))
            continue
        out.append(DkimResult("pass" if ok else "fail", domain, selector, b,
                              "" if ok else "signature did not verify"))
    return out


def _key_name(sig: dict[bytes, bytes]) -> str | None:
    domain, selector = _names(sig)
    if not domain or not selector:
        return None
    return f"{selector}._domainkey.{domain}"

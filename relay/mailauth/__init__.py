"""Sender authentication shared by the `spf`, `dkim` and `dmarc` policies.

Each check runs at most once per transaction, whichever policy asks first: DMARC
needs the SPF result of MAIL FROM and the DKIM results of the message, and may
be configured without the other two. The SPF result and each method's entry for
the `Authentication-Results:` header (RFC 8601) are kept in `tx.authentication`
(JSON values: the DATA stage may run in an inspection worker, and they travel
there with the envelope); the DKIM results, made and used at DATA, in `tx.cache`.
The engine writes the header once at the end of DATA (`relay.mailauth.authresults`).

Authenticated and trusted clients are the province's own: none of this runs for
them (`applies()`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from relay.mailauth.dkim import DkimResult, verify
from relay.mailauth.spf import SpfChecker, SpfResult
from relay.model import Transaction

if TYPE_CHECKING:
    from policies.base import Context

SPF = "mailauth.spf"
DKIM = "mailauth.dkim"
RESULTS = "mailauth.results"  # method -> [resinfo, ...] for Authentication-Results


def applies(tx: Transaction) -> bool:
    """Inbound mail from a client that is neither logged in nor trusted."""
    return not tx.authenticated and not tx.trusted


def record(tx: Transaction, method: str, *resinfo: str) -> None:
    """Remember `method=result props` for the Authentication-Results header (once)."""
    results: dict[str, list[str]] = tx.authentication.setdefault(RESULTS, {})
    results[method] = list(resinfo)


def results(tx: Transaction) -> dict[str, list[str]]:
    """What the Authentication-Results header says ({} when nothing was checked)."""
    return tx.authentication.get(RESULTS) or {}


async def spf_of(tx: Transaction, context: Context) -> SpfResult:
    known = tx.authentication.get(SPF)
    if isinstance(known, dict):
        try:
            return SpfResult(**known)
        except TypeError:
            pass  # not what we wrote: evaluate again
    checker = SpfChecker(context.services.dns)
    result = await checker.check(tx.client_ip, tx.mail_from, tx.helo)
    tx.authentication[SPF] = asdict(result)
    record(tx, "spf", spf_resinfo(result))
    return result


async def dkim_of(tx: Transaction, context: Context, max_signatures: int = 5
                  ) -> list[DkimResult]:
    results = tx.cache.get(DKIM)
    if results is None:
        assert tx.message is not None
        results = await verify(tx.message.raw, context.services.dns, max_signatures)
        tx.cache[DKIM] = results
        record(tx, "dkim", *dkim_resinfo(results))
    return results


def spf_resinfo(result: SpfResult) -> str:
    from relay.mailauth.authresults import value

    prop = "smtp.mailfrom" if result.identity == "mailfrom" else "smtp.helo"
    return f"spf={result.result}" + (f" {prop}={value(result.sender)}" if result.sender else "")


def dkim_resinfo(results: list[DkimResult]) -> list[str]:
    from relay.mailauth.authresults import value

    if not results:
        return ["dkim=none"]
    out = []
    for r in results:
        props = "".join(f" header.{k}={value(v)}" for k, v in
                        (("d", r.domain), ("s", r.selector), ("b", r.b)) if v)
        out.append(f"dkim={r.result}{props}")
    return out

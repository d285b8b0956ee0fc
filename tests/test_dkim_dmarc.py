"""DKIM verification (RFC 6376) and DMARC (RFC 7489) against a real DNS server on
loopback: pass and fail for each, p=reject with a broken signature refused,
p=quarantine tagged, DNS timeouts tempfailed, hostile signatures bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relay.config import DnsConfig
from relay.mailauth import dkim as dkim_verify
from relay.mailauth.dmarc import organizational_domain, parse_record
from relay.resolver import Resolver
from tests.antispam_helpers import (
    BAD_IP,
    GOOD_IP,
    LOCAL,
    codes,
    message,
    sign,
    transact,
    zone_with_key,
)
from tests.fixtures.dns import DnsServer

RCPT = f"annv@{LOCAL}"
ALL = {"spf": {}, "dkim": {}, "dmarc": {}}


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(zone_with_key()).start()
    yield server
    server.stop()


def resolver(server: DnsServer, timeout: float = 2.0) -> Resolver:
    return Resolver(DnsConfig(nameservers=[server.address], timeout=timeout))


def tamper(raw: bytes) -> bytes:
    return raw.replace(b"Xin ch", b"Xin CH")


# --- DKIM ---------------------------------------------------------------------------
async def test_good_signature_passes(dns_server):
    [r] = await dkim_verify.verify(sign(message("a@signed.test")), resolver(dns_server))
    assert (r.result, r.domain, r.selector) == ("pass", "signed.test", "sel1")


async def test_altered_body_fails(dns_server):
    [r] = await dkim_verify.verify(tamper(sign(message("a@signed.test"))), resolver(dns_server))
    assert r.result == "fail"


async def test_unknown_selector_is_permerror(dns_server):
    raw = sign(message("a@signed.test"), selector="nokey")
    [r] = await dkim_verify.verify(raw, resolver(dns_server))
    assert r.result == "permerror" and "no key record" in r.reason


async def test_key_lookup_timeout_is_temperror(dns_server):
    raw = sign(message("a@x.silent.test"), domain="x.silent.test")
    [r] = await dkim_verify.verify(raw, resolver(dns_server, timeout=0.5))
    assert r.result == "temperror"


async def test_unsigned_has_no_result(dns_server):
    assert await dkim_verify.verify(message("a@signed.test"), resolver(dns_server)) == []


async def test_many_signatures_are_bounded(dns_server):
    raw = message("a@signed.test")
    for _ in range(30):
        raw = sign(raw)
    results = await dkim_verify.verify(raw, resolver(dns_server), max_signatures=5)
    assert len(results) == 5 and {r.result for r in results} == {"pass"}


@pytest.mark.parametrize("header", [
    b"DKIM-Signature: v=1; a=rsa-sha256; d=signed.test; s=sel1; b=;;;===\r\n",
    b"DKIM-Signature: garbage\x01\x02\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=signed.test; s=sel1; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; d=" + b"x" * 5000 + b"; s=s; h=from; bh=A; b=A\r\n",
])
async def test_malformed_signatures_are_results_not_crashes(dns_server, header):
    results = await dkim_verify.verify(header + message("a@signed.test"), resolver(dns_server))
    assert [r.result for r in results] in (["permerror"], ["fail"])


async def test_hostile_d_and_s_tags_ask_no_dns_and_reach_no_log(dns_server, caplog):
    """d= and s= are the sender's: escapes or spaces in them are no DNS name."""
    for tags in (b"d=ev\x1b[31mil.test; s=sel1", b"d=signed.test; s=se l\x1b]0;x",
                 b"d=signed.test; s=../../x"):
        header = (b"DKIM-Signature: v=1; a=rsa-sha256; " + tags
                  + b"; h=from; bh=AA; b=AA\r\n")
        [result] = await dkim_verify.verify(header + message("a@signed.test"),
                                            resolver(dns_server))
        assert result.result == "permerror" and "\x1b" not in result.domain + result.selector
        assert "not a DNS name" in result.reason or result.reason.startswith("malformed"), tags
    assert not dns_server.queries
    assert "\x1b" not in caplog.text


async def test_policy_fail_logged_by_default_and_in_authentication_results(dns_server):
    raw = tamper(sign(message("a@signed.test")))
    tx, out = await transact({"dkim": {}}, dns_server.address, "a@company.test", [RCPT], raw)
    assert out.verdict.outcome == "accept"
    assert [(d.finding.code, d.action.value) for d in tx.decisions] == [("dkim.fail", "log")]
    head = out.data.split(b"\r\n\r\n")[0]
    assert b"dkim=fail header.d=signed.test header.s=sel1 header.b=" in head


async def test_policy_fail_rejects_when_configured(dns_server):
    raw = tamper(sign(message("a@signed.test")))
    tx, out = await transact({"dkim": {"actions": {"dkim.fail": "reject"}}},
                             dns_server.address, "a@company.test", [RCPT], raw)
    assert out.verdict.outcome == "reject"
    assert (out.verdict.reply.code, out.verdict.reply.status) == (550, "5.7.20")
    assert "signed.test" in out.verdict.reply.render()


async def test_policy_one_good_signature_is_enough(dns_server):
    good = sign(message("a@signed.test"))
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=other.test; s=x; h=from; bh=AA; b=AA\r\n"
    tx, out = await transact({"dkim": {"action": "reject"}}, dns_server.address,
                             "a@company.test", [RCPT], broken + good)
    assert out.verdict.outcome == "accept" and codes(tx) == []


async def test_policy_key_timeout_tempfails(dns_server):
    raw = sign(message("a@x.silent.test"), domain="x.silent.test")
    tx, out = await transact({"dkim": {}}, dns_server.address, "a@company.test", [RCPT], raw,
                             timeout=0.5)
    assert out.verdict.outcome == "tempfail" and out.verdict.reply.code == 451
    assert codes(tx) == ["dkim.temperror"]


# --- DMARC --------------------------------------------------------------------------
def test_record_parsing():
    assert parse_record("v=DMARC1; p=reject; sp=none")["sp"] == "none"
    assert parse_record("v=DMARC1; p=bogus") is None
    assert parse_record("v=DMARC1; rua=mailto:x@y") == {"v": "DMARC1", "rua": "mailto:x@y",
                                                         "p": "none"}
    assert parse_record("p=reject; v=DMARC1") is None  # v= must come first
    assert organizational_domain("mail.dienbien.gov.vn") == "dienbien.gov.vn"
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"


async def test_reject_with_broken_signature_is_refused(dns_server):
    """p=reject, SPF fails (wrong IP), the signature was broken in transit: refused."""
    raw = tamper(sign(message("ceo@signed.test")))
    tx, out = await transact(ALL, dns_server.address, "ceo@signed.test", [RCPT], raw,
                             client_ip=BAD_IP, settings=None)
    # spf.fail is rejected at MAIL by default; to see DMARC decide, SPF only logs here
    assert out.stage == "mail" and codes(tx) == ["spf.fail"]
    policies = {"spf": {"actions": {"spf.fail": "log"}}, "dkim": {}, "dmarc": {}}
    tx, out = await transact(policies, dns_server.address, "ceo@signed.test", [RCPT], raw,
                             client_ip=BAD_IP)
    assert out.verdict.outcome == "reject"
    assert (out.verdict.reply.code, out.verdict.reply.status) == (550, "5.7.1")
    reply = out.verdict.reply.render()
    assert "signed.test" in reply and "reject" in reply and "Điều 5.1" in reply
    assert codes(tx) == ["spf.fail", "dkim.fail", "dmarc.reject"]


async def test_good_signature_passes_dmarc_even_from_a_wrong_ip(dns_server):
    raw = sign(message("ceo@signed.test"))
    tx, out = await transact(ALL, dns_server.address, "bounce@company.test", [RCPT], raw,
                             client_ip=BAD_IP)
    assert out.verdict.outcome == "accept" and codes(tx) == []
    head = out.data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith(
        "Authentication-Results: mx.dienbien.gov.vn;\r\n\tspf=none "
        "smtp.mailfrom=bounce@company.test;\r\n\tdkim=pass header.d=signed.test "
        "header.s=sel1 header.b=")
    assert "\r\n\tdmarc=pass header.from=signed.test\r\n" in head


async def test_spf_alignment_passes_and_strict_mode_is_honoured(dns_server):
    tx, out = await transact(ALL, dns_server.address, "a@strict.test", [RCPT],
                             message("a@strict.test"), client_ip=GOOD_IP)
    assert out.verdict.outcome == "accept" and codes(tx) == []
    # aspf=s: an SPF pass for a subdomain of the From: domain does not align
    tx, out = await transact(ALL, dns_server.address, "a@pass-domain.test", [RCPT],
                             message("a@strict.test"), client_ip=GOOD_IP)
    assert codes(tx) == ["dmarc.reject"] and out.verdict.outcome == "reject"


async def test_quarantine_is_tagged(dns_server):
    tx, out = await transact(ALL, dns_server.address, "x@company.test", [RCPT],
                             message("boss@quarantined.test"), client_ip=BAD_IP)
    assert out.verdict.outcome == "accept"
    assert [(d.finding.code, d.action.value) for d in tx.decisions] == [
        ("dmarc.quarantine", "tag")]
    assert b"X-Relay-DMARC: fail; policy=quarantine; from=quarantined.test" in out.data


async def test_p_none_and_no_record_are_no_finding(dns_server):
    for sender in ("a@monitor.test", "a@company.test"):
        tx, out = await transact(ALL, dns_server.address, "x@other.test", [RCPT],
                                 message(sender), client_ip=BAD_IP)
        assert out.verdict.outcome == "accept" and codes(tx) == [], sender


async def test_subdomain_gets_sp_from_the_organizational_domain(dns_server):
    tx, out = await transact(ALL, dns_server.address, "x@company.test", [RCPT],
                             message("a@sub.org.test"), client_ip=BAD_IP)
    [d] = tx.decisions
    assert d.finding.code == "dmarc.quarantine"
    assert d.finding.details["record_domain"] == "org.test"


async def test_dmarc_record_lookup_failure_tempfails(dns_server):
    tx, out = await transact(ALL, dns_server.address, "x@company.test", [RCPT],
                             message("a@servfail.test"), client_ip=GOOD_IP)
    assert out.verdict.outcome == "tempfail" and codes(tx) == ["dmarc.temperror"]


async def test_dmarc_alone_computes_spf_and_dkim_itself(dns_server):
    raw = tamper(sign(message("ceo@signed.test")))
    tx, out = await transact({"dmarc": {}}, dns_server.address, "ceo@signed.test", [RCPT],
                             raw, client_ip=BAD_IP)
    assert codes(tx) == ["dmarc.reject"]
    assert tx.decisions[0].finding.details["spf_aligned"] is False


async def test_authenticated_clients_are_not_checked(dns_server):
    raw = tamper(sign(message(f"annv@{LOCAL}")))
    tx, out = await transact(ALL, dns_server.address, f"annv@{LOCAL}",
                             ["x@example.test"], raw, client_ip=BAD_IP, auth=f"annv@{LOCAL}")
    assert out.verdict.outcome == "accept" and codes(tx) == []
    assert not dns_server.queries

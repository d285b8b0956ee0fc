"""SPF (RFC 7208) against a real authoritative DNS server on loopback: the evaluation,
its limits, its DNS failures, and the `spf` policy's findings at MAIL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from relay.config import DnsConfig
from relay.mailauth.spf import SpfChecker
from relay.resolver import Resolver
from tests.antispam_helpers import (
    BAD_IP,
    GOOD_IP,
    LOCAL,
    codes,
    message,
    transact,
    zone_with_key,
)
from tests.fixtures.dns import DnsServer

RCPT = f"annv@{LOCAL}"


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(zone_with_key()).start()
    yield server
    server.stop()


def checker(server: DnsServer, timeout: float = 2.0) -> SpfChecker:
    return SpfChecker(Resolver(DnsConfig(nameservers=[server.address], timeout=timeout)))


@pytest.mark.parametrize("domain,ip,result", [
    ("pass-domain.test", GOOD_IP, "pass"),
    ("pass-domain.test", BAD_IP, "fail"),
    ("soft-domain.test", BAD_IP, "softfail"),
    ("neutral-domain.test", BAD_IP, "neutral"),
    ("include-domain.test", GOOD_IP, "pass"),
    ("include-domain.test", BAD_IP, "fail"),
    ("redirect-domain.test", GOOD_IP, "pass"),
    ("redirect-domain.test", BAD_IP, "fail"),
    ("mx-domain.test", "192.0.2.25", "pass"),
    ("mx-domain.test", "192.0.2.26", "fail"),
    ("a-domain.test", "192.0.2.99", "pass"),  # a:/24
    ("a-domain.test", BAD_IP, "fail"),
    ("v6-domain.test", "2001:db8:1:2::5", "pass"),
    ("v6-domain.test", "2001:db8:2::5", "fail"),
    ("v6-domain.test", GOOD_IP, "fail"),  # ip6 never matches an IPv4 client
    ("pass-domain.test", "::ffff:192.0.2.10", "pass"),  # IPv4-mapped: checked as IPv4
    ("exists-domain.test", "192.0.2.77", "pass"),  # %{i} macro
    ("exists-domain.test", "192.0.2.78", "fail"),
    ("long-domain.test", "192.0.2.20", "pass"),  # two strings of one TXT record joined
    ("company.test", GOOD_IP, "none"),  # no SPF record
    ("does-not-exist.test", GOOD_IP, "none"),  # NXDOMAIN
    ("two-records.test", GOOD_IP, "permerror"),
    ("broken-domain.test", GOOD_IP, "permerror"),
    ("loop-domain.test", GOOD_IP, "permerror"),  # more than 10 lookups
    ("void-domain.test", GOOD_IP, "permerror"),  # more than 2 void lookups
    ("dnsfail-domain.test", GOOD_IP, "temperror"),  # include: SERVFAIL
    ("a.servfail.test", GOOD_IP, "temperror"),
])
async def test_check_host(dns_server, domain, ip, result):
    got = await checker(dns_server).check(ip, f"user@{domain}", "mail.example.test")
    assert got.result == result, got


async def test_timeout_is_temperror_within_the_deadline(dns_server):
    t0 = time.monotonic()
    got = await checker(dns_server, timeout=0.5).check(GOOD_IP, "a@x.silent.test", "h.test")
    assert got.result == "temperror" and "within" in got.reason
    assert time.monotonic() - t0 < 3


async def test_null_sender_checks_the_helo_identity(dns_server):
    got = await checker(dns_server).check(GOOD_IP, "", "helo.example-helo.test")
    assert (got.result, got.identity, got.domain) == ("pass", "helo",
                                                      "helo.example-helo.test")
    got = await checker(dns_server).check(BAD_IP, "", "helo.example-helo.test")
    assert got.result == "fail"
    got = await checker(dns_server).check(BAD_IP, "", "[198.51.100.9]")  # an address literal
    assert got.result == "none"


async def test_explanation_is_expanded_and_printable(dns_server):
    got = await checker(dns_server).check(BAD_IP, "a@exp-domain.test", "h.test")
    assert got.result == "fail"
    assert got.explanation == f"{BAD_IP} is not one of exp-domain.test's designated mail servers"


@pytest.mark.parametrize("sender", ["a@" + "x" * 70 + ".test", "a@nodot", "a@-bad-.test",
                                    "a@" + ".".join(["a"] * 200)])
async def test_hostile_domains_are_none_without_asking(dns_server, sender):
    got = await checker(dns_server).check(GOOD_IP, sender, "h.test")
    assert got.result == "none"
    assert not dns_server.queries


async def test_large_answer_comes_over_tcp(dns_server):
    # over 512 bytes: the UDP answer is truncated and the resolver asks again over TCP
    # (a 4096-bit DKIM key, or an SPF record with many includes, is this large)
    big = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(1, 60)) + " -all"
    dns_server.add("big-domain TXT " + " ".join(f'"{big[i:i + 200]}"'
                                                for i in range(0, len(big), 200)))
    got = await checker(dns_server).check("192.0.2.59", "a@big-domain.test", "h.test")
    assert got.result == "pass"
    assert dns_server.tcp_queries >= 1


# --- the policy, through the engine ------------------------------------------------
async def test_fail_is_refused_at_mail(dns_server):
    sender = "boss@pass-domain.test"
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT],
                             message(sender), client_ip=BAD_IP)
    assert out.stage == "mail"
    assert (out.reply.code, out.reply.status) == (550, "5.7.23")
    assert "pass-domain.test" in out.reply.render() and BAD_IP in out.reply.render()
    assert "Điều 5.1" in out.reply.render()
    assert codes(tx) == ["spf.fail"]


async def test_pass_is_accepted_with_authentication_results(dns_server):
    sender = "boss@pass-domain.test"
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT],
                             message(sender), client_ip=GOOD_IP)
    assert out.verdict is not None and out.verdict.outcome == "accept"
    first = out.data.split(b"\r\n\r\n")[0].decode()
    assert first.startswith("Authentication-Results: mx.dienbien.gov.vn;\r\n\t"
                            "spf=pass smtp.mailfrom=boss@pass-domain.test")
    assert codes(tx) == []


async def test_softfail_logged_by_default_and_configurable(dns_server):
    sender = "a@soft-domain.test"
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT],
                             message(sender), client_ip=BAD_IP)
    assert out.verdict.outcome == "accept"
    assert [(d.finding.code, d.action.value) for d in tx.decisions] == [("spf.softfail", "log")]
    assert b"spf=softfail" in out.data
    tx, out = await transact({"spf": {"actions": {"spf.softfail": "reject"}}},
                             dns_server.address, sender, [RCPT], message(sender),
                             client_ip=BAD_IP)
    assert out.stage == "mail" and out.reply.code == 550


async def test_dns_trouble_tempfails(dns_server):
    sender = "a@dnsfail-domain.test"
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT],
                             message(sender), client_ip=GOOD_IP)
    assert out.stage == "mail" and (out.reply.code, out.reply.status) == (451, "4.7.24")
    assert codes(tx) == ["spf.temperror"]


async def test_silent_dns_tempfails_and_can_be_logged_instead(dns_server):
    sender = "a@x.silent.test"
    tx, out = await transact({"spf": {"actions": {"spf.temperror": "log"}}},
                             dns_server.address, sender, [RCPT], message(sender),
                             client_ip=GOOD_IP, timeout=0.5)
    assert out.verdict.outcome == "accept"
    assert b"spf=temperror" in out.data


@pytest.mark.parametrize("who", ["auth", "trusted"])
async def test_authenticated_and_trusted_clients_are_not_checked(dns_server, who):
    sender = f"annv@{LOCAL}"
    kw = ({"auth": sender} if who == "auth"
          else {"settings": {"server": {"trusted_networks": ["198.51.100.0/24"]}}})
    tx, out = await transact({"spf": {}}, dns_server.address, "boss@pass-domain.test",
                             ["someone@example.test"], message(sender), client_ip=BAD_IP, **kw)
    assert out.verdict.outcome == "accept" and codes(tx) == []
    assert b"Authentication-Results" not in out.data
    assert not dns_server.queries


@pytest.mark.parametrize("who", ["auth", "trusted"])
async def test_unchecked_clients_cannot_bring_our_verdict_either(dns_server, who):
    """Not checked is not trusted to speak for us: a forged field with our authserv-id
    is removed from an authenticated or trusted client's message too."""
    sender = f"annv@{LOCAL}"
    kw = ({"auth": sender} if who == "auth"
          else {"settings": {"server": {"trusted_networks": ["198.51.100.0/24"]}}})
    forged = message(sender, extra={
        "Authentication-Results": "mx.dienbien.gov.vn; dkim=pass header.d=x.test"})
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT], forged,
                             client_ip=BAD_IP, **kw)
    assert out.verdict.outcome == "accept"
    assert b"header.d=x.test" not in out.data and b"Authentication-Results" not in out.data


async def test_forged_authentication_results_are_removed(dns_server):
    sender = "boss@pass-domain.test"
    forged = message(sender, extra={
        "Authentication-Results": "mx.dienbien.gov.vn; spf=pass smtp.mailfrom=x@y.test"})
    other = b"Authentication-Results: other.example; dkim=pass\r\n"
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT],
                             other + forged, client_ip=GOOD_IP)
    head = out.data.split(b"\r\n\r\n")[0]
    assert head.count(b"Authentication-Results: mx.dienbien.gov.vn") == 1
    assert b"x@y.test" not in head
    assert b"Authentication-Results: other.example; dkim=pass" in head


async def test_the_mail_stage_result_reaches_data_in_an_inspection_worker(dns_server):
    """DATA runs in a worker process: the SPF result of MAIL travels there with the
    envelope and is in the Authentication-Results the worker writes."""
    sender = "boss@pass-domain.test"
    tx, out = await transact({"spf": {}}, dns_server.address, sender, [RCPT],
                             message(sender), client_ip=GOOD_IP, inline=False,
                             settings={"inspection": {"workers": 1}})
    assert out.verdict.outcome == "accept"
    assert out.data.startswith(b"Authentication-Results: mx.dienbien.gov.vn;\r\n\t"
                                       b"spf=pass smtp.mailfrom=boss@pass-domain.test")
    # asked once, at MAIL: the worker did not evaluate it again
    assert dns_server.queries["pass-domain.test. TXT"] == 1

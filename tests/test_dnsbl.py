"""`dnsbl`: the client IP in a DNS blocklist (IPv4 and IPv6), the HELO/sender domain in
a domain blocklist, at RCPT (default) or at connect, against a real DNS server on
loopback; list error codes and timeouts are temperror, not listings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.antispam_helpers import (
    ERROR_IP,
    GOOD_IP,
    LISTED_IP,
    LISTED_V6,
    LOCAL,
    codes,
    message,
    transact,
    zone_with_key,
)
from tests.fixtures.dns import DnsServer

RCPT = f"annv@{LOCAL}"
OTHER = f"binhtt@{LOCAL}"
SENDER = "a@company.test"


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(zone_with_key()).start()
    yield server
    server.stop()


async def run(dns_server, options: dict, client_ip: str, sender: str = SENDER,
              rcpts: list[str] | None = None, **kw):
    return await transact({"dnsbl": {"zones": ["bl.test"], **options}}, dns_server.address,
                          sender, rcpts or [RCPT], message(sender), client_ip=client_ip, **kw)


async def test_listed_client_refused_at_rcpt_naming_the_list(dns_server):
    tx, out = await run(dns_server, {}, LISTED_IP, rcpts=[RCPT, OTHER])
    assert out.stage == "rcpt" and out.verdict is None
    for rcpt in (RCPT, OTHER):
        reply = out.recipients[rcpt]
        assert (reply.code, reply.status) == (554, "5.7.1")
        assert f"{LISTED_IP} is listed in the spam blocklist bl.test" in reply.render()
    assert codes(tx) == ["dnsbl.listed", "dnsbl.listed"]
    assert tx.decisions[0].finding.details["answers"] == ["127.0.0.2"]
    # one question for both recipients
    assert dns_server.queries[f"{'.'.join(reversed(LISTED_IP.split('.')))}.bl.test. A"] == 1


async def test_listed_client_refused_at_connect(dns_server):
    tx, out = await run(dns_server, {"stage": "connect"}, LISTED_IP)
    assert out.stage == "connect" and out.reply.code == 554
    assert "bl.test" in out.reply.render()


@pytest.mark.parametrize("kind", ["submission", "smtps"])
async def test_connect_stage_leaves_the_login_listeners_alone(dns_server, kind):
    """Like postscreen, which guards port 25 only: on submission a user on a listed
    address (home and mobile ranges are listed, Spamhaus PBL) logs in after the
    greeting; refusing the connection would lock them out."""
    tx, out = await run(dns_server, {"stage": "connect"}, LISTED_IP, listener_kind=kind)
    assert out.stage != "connect" and out.reply.positive
    assert not any(q.endswith(".bl.test. A") for q in dns_server.queries)


async def test_clean_client_accepted(dns_server):
    tx, out = await run(dns_server, {}, GOOD_IP)
    assert out.verdict.outcome == "accept" and codes(tx) == []


async def test_ipv6_client(dns_server):
    tx, out = await run(dns_server, {}, LISTED_V6)
    assert codes(tx) == ["dnsbl.listed"]


async def test_answer_filter(dns_server):
    tx, out = await run(dns_server, {"zones": ["bl.test=127.0.0.3,127.0.0.4"]}, LISTED_IP)
    assert codes(tx) == []  # it answers 127.0.0.2, not one we count
    tx, out = await run(dns_server, {"zones": ["bl.test=127.0.0.4"]}, LISTED_V6)
    assert codes(tx) == ["dnsbl.listed"]


async def test_list_error_code_is_temperror_not_a_listing(dns_server):
    tx, out = await run(dns_server, {}, ERROR_IP)
    assert codes(tx) == ["dnsbl.temperror"]
    assert out.recipients[RCPT].code == 451
    assert "127.255.255.254" in tx.decisions[0].finding.details["error"]


async def test_timeout_tempfails_and_log_lets_mail_through(dns_server):
    tx, out = await run(dns_server, {"zones": ["silent.test"]}, GOOD_IP, timeout=0.5)
    assert out.recipients[RCPT].code == 451 and codes(tx) == ["dnsbl.temperror"]
    tx, out = await run(dns_server, {"zones": ["silent.test"],
                                     "actions": {"dnsbl.temperror": "log"}},
                        GOOD_IP, timeout=0.5)
    assert out.verdict.outcome == "accept"


async def test_rhsbl_sender_and_helo(dns_server):
    tx, out = await run(dns_server, {"zones": [], "rhsbl_zones": ["dbl.test"]}, GOOD_IP,
                        sender="x@spammer.test")
    assert codes(tx) == ["dnsbl.listed"]
    assert "spammer.test is listed in the spam blocklist dbl.test" in \
        out.recipients[RCPT].render()
    tx, out = await run(dns_server, {"zones": [], "rhsbl_zones": ["dbl.test"]}, GOOD_IP,
                        helo="spammer.test")
    assert codes(tx) == ["dnsbl.listed"]


@pytest.mark.parametrize("who", ["auth", "trusted"])
async def test_authenticated_and_trusted_are_not_asked(dns_server, who):
    kw = ({"auth": f"annv@{LOCAL}"} if who == "auth"
          else {"settings": {"server": {"trusted_networks": ["198.51.100.0/24"]}}})
    tx, out = await run(dns_server, {}, LISTED_IP, sender=f"annv@{LOCAL}",
                        rcpts=["x@example.test"], **kw)
    assert out.verdict.outcome == "accept" and not dns_server.queries


def test_bad_zone_names_the_key():
    from relay.config import ConfigError, from_dict
    from relay.policyset import configure

    with pytest.raises(ConfigError, match=r"policies\.dnsbl\.zones: expected a zone"):
        configure(from_dict({"policies": {"dnsbl": {"zones": ["bl.test=not-an-ip"]}}}))

"""SPF, DKIM, DMARC and the DNS blocklist inside a real Postfix through the milter: the
same verdicts as the SMTP front. Clients connect from different loopback addresses
(127.0.0.1, .2, .3) so that SPF and the blocklist see different clients; the DNS
server is the loopback one of tests/fixtures/dns.py."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import load
from tests.antispam_helpers import message, sign, zone_with_key
from tests.fixtures.dns import DnsServer
from tests.fixtures.relayproc import free_port, to_toml, wait_for
from tests.milter_helpers import MilterThread

DOMAIN = "dienbien.gov.vn"
INTAKE = f"tiepdan@{DOMAIN}"
ZONE = zone_with_key() + """
partner         TXT   "v=spf1 ip4:127.0.0.1 -all"
3.0.0.127.bl    A     127.0.0.2
"""


@pytest.fixture
def stack(tmp_path: Path, postfix_factory, sink) -> Iterator:
    dns_server = DnsServer(ZONE).start()
    bind = f"127.0.0.1:{free_port()}"
    config_path = tmp_path / "relay.toml"
    config_path.write_text(to_toml({
        "server": {"state_dir": "var", "local_domains": [DOMAIN],
                   "hostname": "mx.dienbien.gov.vn"},  # nobody trusted: all of it judged
        "milter": {"bind": bind},
        "dns": {"nameservers": [dns_server.address], "timeout": "2s"},
        "archive": {"enabled": False},
        "policies": {"headers": {}, "spf": {}, "dkim": {}, "dmarc": {},
                     "dnsbl": {"zones": ["bl.test"]}},
    }))
    try:
        with MilterThread(load(config_path)):
            yield postfix_factory(milter=f"inet:{bind}"), sink
    finally:
        dns_server.stop()


def send(postfix, source: str, sender: str, data: bytes) -> dict[str, tuple[int, str]]:
    """MAIL, RCPT, DATA from SOURCE (a loopback address); each step's answer."""
    out: dict[str, tuple[int, str]] = {}
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30,
                      source_address=(source, 0)) as client:
        client.ehlo("client.example.org")
        code, text = client.mail(sender)
        out["mail"] = (code, text.decode())
        if code >= 400:
            return out
        code, text = client.rcpt(INTAKE)
        out["rcpt"] = (code, text.decode())
        if code >= 400:
            return out
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error
        out["data"] = (code, text.decode())
    return out


def test_spf_fail_is_refused_at_mail(stack):
    postfix, sink = stack
    got = send(postfix, "127.0.0.2", "a@partner.test", message("a@partner.test", INTAKE))
    code, text = got["mail"]
    assert code == 550 and "5.7.23" in text
    assert "127.0.0.2 is not allowed to send mail for partner.test (SPF)" in text


def test_listed_client_is_refused_at_rcpt_naming_the_list(stack):
    postfix, sink = stack
    got = send(postfix, "127.0.0.3", "a@company.test", message("a@company.test", INTAKE))
    code, text = got["rcpt"]
    assert code == 554 and "127.0.0.3 is listed in the spam blocklist bl.test" in text


def test_dmarc_reject_with_broken_signature_is_refused(stack):
    postfix, sink = stack
    raw = sign(message("ceo@signed.test", INTAKE)).replace(b"Xin ch", b"Xin CH")
    got = send(postfix, "127.0.0.1", "bounce@company.test", raw)
    code, text = got["data"]
    assert code == 550 and "5.7.1" in text and "signed.test" in text
    # a clean message after it: once that one is through, the refused one would be too
    clean = send(postfix, "127.0.0.1", "a@partner.test", sign(message("ceo@signed.test",
                                                                      INTAKE)))
    assert clean["data"][0] == 250, clean
    arrived = wait_for(lambda: sink.messages, timeout=30)
    time.sleep(1)
    assert len(sink.messages) == 1 and b"Xin CH" not in arrived[0].data


def test_pass_reaches_the_next_hop_with_our_authentication_results_only(stack):
    postfix, sink = stack
    forged = b"Authentication-Results: mx.dienbien.gov.vn; spf=pass smtp.mailfrom=x@evil.test\r\n"
    raw = forged + sign(message("ceo@signed.test", INTAKE))
    got = send(postfix, "127.0.0.1", "a@partner.test", raw)
    assert got["data"][0] == 250, got
    [received] = wait_for(lambda: sink.messages, timeout=20)
    head = received.data.split(b"\r\n\r\n")[0]
    assert b"evil.test" not in head
    assert head.count(b"Authentication-Results: mx.dienbien.gov.vn") == 1
    unfolded = head.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    assert b"spf=pass smtp.mailfrom=a@partner.test; dkim=pass header.d=signed.test" in unfolded
    assert b"dmarc=pass header.from=signed.test" in unfolded

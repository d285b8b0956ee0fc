"""`relay test-message` as the MX would judge a client: `--client-ip` and `--helo` feed
SPF, DNSBL and DMARC (against a real DNS server on loopback); without an address they
have nothing to judge."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.antispam_helpers import BAD_IP, GOOD_IP, LISTED_IP, LOCAL, message, sign, zone_with_key
from tests.content_helpers import run_cli
from tests.fixtures.dns import DnsServer

RCPT = f"annv@{LOCAL}"


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(zone_with_key()).start()
    yield server
    server.stop()


def toml(server: DnsServer) -> str:
    return f"""
[server]
hostname = "mx.dienbien.gov.vn"
local_domains = ["{LOCAL}"]
state_dir = "var"

[dns]
nameservers = ["{server.address}"]
timeout = "2s"

[policies.dnsbl]
zones = ["bl.test"]

[policies.spf]
[policies.dkim]
[policies.dmarc]
"""


def test_spf_fail_at_mail_as_the_mx_would(tmp_path, dns_server):
    sender = "boss@pass-domain.test"
    rc, out = run_cli(tmp_path, toml(dns_server), message(sender), sender, [RCPT],
                      "--client-ip", BAD_IP, "--helo", "mail.example.test")
    assert (rc, out["action"], out["stage"]) == (1, "reject", "mail")
    assert out["findings"][0]["code"] == "spf.fail"
    assert out["reply"].startswith("550-5.7.23 ")


def test_without_a_client_ip_nothing_judges_the_address(tmp_path, dns_server):
    sender = "boss@pass-domain.test"
    rc, out = run_cli(tmp_path, toml(dns_server), message(sender), sender, [RCPT])
    assert rc == 0 and out["findings"] == []
    assert not any("bl.test" in q for q in dns_server.queries)


def test_listed_client_names_the_list(tmp_path, dns_server):
    rc, out = run_cli(tmp_path, toml(dns_server), message("a@company.test"), "a@company.test",
                      [RCPT], "--client-ip", LISTED_IP)
    assert rc == 1 and out["stage"] == "rcpt"
    assert "bl.test" in out["recipients"][RCPT]


def test_dmarc_reject_and_the_authentication_results_in_output(tmp_path, dns_server):
    raw = sign(message("ceo@signed.test")).replace(b"Xin ch", b"Xin CH")
    toml_text = toml(dns_server).replace("[policies.spf]", '[policies.spf]\nactions = '
                                         '{"spf.fail" = "log"}')
    rc, out = run_cli(tmp_path, toml_text, raw, "ceo@signed.test", [RCPT],
                      "--client-ip", BAD_IP)
    assert rc == 1 and [f["code"] for f in out["findings"]] == [
        "spf.fail", "dkim.fail", "dmarc.reject"]
    good = sign(message("ceo@signed.test"))
    out_path = tmp_path / "out.eml"
    rc, out = run_cli(tmp_path, toml(dns_server), good, "bounce@company.test", [RCPT],
                      "--client-ip", GOOD_IP, "--output", str(out_path))
    assert rc == 0, out
    head = out_path.read_bytes().split(b"\r\n\r\n")[0]
    assert head.startswith(b"Authentication-Results: mx.dienbien.gov.vn;")
    assert b"dmarc=pass header.from=signed.test" in head

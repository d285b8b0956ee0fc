"""DKIM signing of outbound mail: `relay dkim keygen` writes the key and prints the
record; mail the relay sends to another domain verifies with dkimpy against exactly
that record, served by a real DNS server on loopback, also after tcvn6909 converted
its body; mail that is not ours is not signed; a missing key defers, never sends
unsigned."""

from __future__ import annotations

import email
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest

from relay.config import from_dict
from relay.delivery import Router
from relay.mailauth.signing import Signer, SigningError
from relay.spool import QueueEnvelope
from tests.fixtures.dns import DnsServer
from tests.fixtures.relayproc import run_cli, to_toml, wait_for

DOMAIN = "dienbien.gov.vn"
AN = f"annv@{DOMAIN}"
OUTSIDE = "doitac@example.org"
TEXT = "Kính gửi các cơ quan, đơn vị trên địa bàn tỉnh Điện Biên về việc triển khai thư."
ZONE = f"""
$TTL 300
@  SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 300
@  NS  ns.{DOMAIN}.
"""


def keygen(config_path: Path, selector: str = "relay2026") -> str:
    out = run_cli("dkim", "keygen", "--domain", DOMAIN, "--selector", selector, "-c",
                  str(config_path))
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def published(*records: str) -> DnsServer:
    """An authoritative server for the province's zone with the records keygen printed."""
    return DnsServer(ZONE + "\n".join(records), origin=f"{DOMAIN}.").start()


def dnsfunc(server: DnsServer):
    """dkimpy's DNS hook, asking our server (TCP: the record is long)."""
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        name = name.decode() if isinstance(name, bytes) else name
        reply = dns.query.tcp(dns.message.make_query(name, "TXT"), "127.0.0.1",
                              port=server.port, timeout=timeout)
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None
    return lookup


def legacy_message(sender: str, to: str) -> bytes:
    from relay.tcvn.tables import encode_legacy

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Báo cáo"
    msg["Date"] = "Sat, 05 Dec 2026 09:00:00 +0700"
    msg["Message-ID"] = f"<legacy@{DOMAIN}>"
    msg.set_payload(encode_legacy(TEXT + "\n", "tcvn3"), charset=None)
    msg["Content-Type"] = "text/plain; charset=windows-1252"
    msg["Content-Transfer-Encoding"] = "8bit"
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def relay_dir(tmp_path: Path, sink) -> Iterator[tuple[Path, object]]:
    yield tmp_path, sink


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"server": {"state_dir": "var"}}))
    record = keygen(cfg)
    key = tmp_path / "var" / "dkim" / f"{DOMAIN}.relay2026.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert record.startswith(f"relay2026._domainkey.{DOMAIN}. IN TXT (")
    assert all(len(s) <= 255 for s in record.split('"')[1::2])
    again = run_cli("dkim", "keygen", "--domain", DOMAIN, "--selector", "relay2026", "-c",
                    str(cfg))
    assert again.returncode == 1 and b"exists" in again.stderr
    shown = run_cli("dkim", "record", "--domain", DOMAIN, "--selector", "relay2026", "-c",
                    str(cfg))
    assert shown.stdout.decode() == record
    bad = run_cli("dkim", "keygen", "--domain", "not a domain", "-c", str(cfg))
    assert bad.returncode == 2
    # the selector names the key file: no path in it, for keygen as for record
    for command in ("keygen", "record"):
        for selector in ("../../outside", "a/b", ".hidden", "x" * 64, "s\x1b[2J"):
            bad = run_cli("dkim", command, "--domain", DOMAIN, "--selector", selector, "-c",
                          str(cfg))
            assert bad.returncode == 2 and b"--selector" in bad.stderr, (command, selector)
    assert sorted(p.name for p in (tmp_path / "var").rglob("*.key")) == [key.name]
    assert not (tmp_path / "outside.key").exists()


def test_relay_signs_outbound_after_tcvn_conversion_and_it_verifies(relay_factory, sink):
    relay = relay_factory(
        start=False,
        server={"trusted_networks": ["127.0.0.0/8"]},  # an agency server relays through us
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        dkim_signing={"enabled": True, "selector": "relay2026"},
        policies={"headers": {}, "tcvn6909": {}})
    record = keygen(relay.config_path)
    server = published(record)
    try:
        relay.start()
        with smtplib.SMTP("127.0.0.1", relay.mx, timeout=30) as client:
            client.sendmail(AN, [OUTSIDE], legacy_message(AN, OUTSIDE))
        [got] = wait_for(lambda: sink.messages, timeout=30)
        data = got.data
        parsed = email.message_from_bytes(data)
        assert parsed["X-TCVN-Converted"] == "part 1 tcvn3->utf-8"
        assert parsed.get_payload(decode=True).decode("utf-8").strip() == TEXT
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d="
                               + DOMAIN.encode())
        assert b"s=relay2026" in data
        assert dkim.verify(data, dnsfunc=dnsfunc(server))
        # and a change on the way breaks it: the check is real
        tampered = data.replace(b"To: doitac@example.org", b"To: doitac@example.net")
        assert tampered != data and not dkim.verify(tampered, dnsfunc=dnsfunc(server))
    finally:
        server.stop()


def test_two_selectors_coexist_during_rotation(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"server": {"state_dir": "var"}}))
    old, new = keygen(cfg, "relay2026"), keygen(cfg, "relay2027")
    server = published(old, new)
    try:
        for selector in ("relay2026", "relay2027"):
            config = from_dict({"server": {"state_dir": str(tmp_path / "var")},
                                "dkim_signing": {"enabled": True, "selector": selector,
                                                 "key": str(tmp_path / "var" / "dkim" /
                                                            "{domain}.{selector}.key")}})
            signed = Signer(config).sign(legacy_message(AN, OUTSIDE), True, "")
            assert f"s={selector}".encode() in signed
            assert dkim.verify(signed, dnsfunc=dnsfunc(server))
    finally:
        server.stop()


def signer(tmp_path: Path, **kw: object) -> Signer:
    config = from_dict({"server": {"state_dir": str(tmp_path), "trusted_networks": ["10.0.0.0/8"]},
                        "dkim_signing": {"enabled": True, **kw}})
    return Signer(config)


def test_only_our_mail_from_our_clients_is_signed(tmp_path):
    from relay.mailauth.signing import generate

    s = signer(tmp_path)
    generate(tmp_path / "dkim" / f"{DOMAIN}.relay.key")
    ours = legacy_message(AN, OUTSIDE)
    assert s.sign(ours, True, "192.0.2.1").startswith(b"DKIM-Signature:")
    assert s.sign(ours, False, "10.1.2.3").startswith(b"DKIM-Signature:")  # trusted
    assert s.sign(ours, False, "192.0.2.1") == ours  # neither: inbound, not ours to sign
    theirs = legacy_message("a@example.org", AN)
    assert s.sign(theirs, True, "192.0.2.1") == theirs
    two_from = b"From: a@example.org\r\n" + ours
    assert s.sign(two_from, True, "192.0.2.1") == two_from
    off = from_dict({"server": {"state_dir": str(tmp_path)}})
    assert Signer(off).sign(ours, True, "") == ours


async def test_missing_key_defers_the_delivery(tmp_path, sink):
    config = from_dict({"server": {"state_dir": str(tmp_path)},
                        "outbound": {"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
                        "dkim_signing": {"enabled": True}})
    with pytest.raises(SigningError, match="No such file"):
        Signer(config).sign(legacy_message(AN, OUTSIDE), True, "")
    router = Router(config)
    env = QueueEnvelope(queue_id="Q1", sender=AN, recipients=[OUTSIDE], auth_login=AN)
    results = await router.deliver(env, legacy_message(AN, OUTSIDE), [OUTSIDE])
    await router.close()
    assert results[OUTSIDE].status == "temporary"
    assert "DKIM key" in results[OUTSIDE].reply
    assert sink.messages == []


def test_test_message_shows_the_signed_message(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"server": {"state_dir": "var", "local_domains": [DOMAIN]},
                            "dkim_signing": {"enabled": True, "selector": "relay2026"},
                            "policies": {"tcvn6909": {}}}))
    record = keygen(cfg)
    eml = tmp_path / "m.eml"
    eml.write_bytes(legacy_message(AN, OUTSIDE))
    out_path = tmp_path / "out.eml"
    out = run_cli("test-message", "-c", str(cfg), "--from", AN, "--to", OUTSIDE, "--auth", AN,
                  "--output", str(out_path), str(eml))
    assert out.returncode == 0, out.stderr.decode()
    assert b"DKIM-signed d=dienbien.gov.vn s=relay2026" in out.stdout
    server = published(record)
    try:
        assert dkim.verify(out_path.read_bytes(), dnsfunc=dnsfunc(server))
    finally:
        server.stop()


def test_openssl_rsa_gives_dkimpys_answers():
    import hashlib

    from dkim import crypto

    from relay.mailauth import rsa
    from tests.antispam_helpers import dkim_key

    key = crypto.parse_pem_private_key(dkim_key()[0])
    public = {"modulus": key["modulus"], "publicExponent": key["publicExponent"]}
    for text in (b"the canonicalised header fields", b""):
        digest = hashlib.sha256(text)
        signature = rsa.sign(digest, key)
        assert signature == crypto.RSASSA_PKCS1_v1_5_sign(digest, key)
        assert rsa.verify(digest, signature, public) is True
        assert crypto.RSASSA_PKCS1_v1_5_verify(digest, signature, public) is True
        broken = bytes([signature[0] ^ 1]) + signature[1:]
        assert rsa.verify(digest, broken, public) is False
        assert crypto.RSASSA_PKCS1_v1_5_verify(digest, broken, public) is False
        assert rsa.verify(hashlib.sha256(text + b"x"), signature, public) is False
        assert rsa.verify(digest, signature[:-1], public) is False


def test_check_config_warns_about_a_missing_key(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"server": {"state_dir": "var", "local_domains": [DOMAIN]},
                            "dkim_signing": {"enabled": True}}))
    out = run_cli("check-config", "-c", str(cfg))
    assert out.returncode == 0
    assert f"warning: dkim_signing: no key {tmp_path}/var/dkim/{DOMAIN}.relay.key".encode() \
        in out.stderr
    keygen(cfg, "relay")
    assert b"warning" not in run_cli("check-config", "-c", str(cfg)).stderr

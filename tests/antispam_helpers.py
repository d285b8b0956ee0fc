"""What the anti-spam tests share: a zone with SPF, DKIM, DMARC and blocklist records
served by the loopback DNS server (tests/fixtures/dns.py), a DKIM key, and a way to
run one transaction through the engine as a client at a given IP would."""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.config import from_dict
from relay.model import Transaction
from relay.runtime import Runtime
from relay.transaction import Conversation, Hub, Walk, walk
from tests.fixtures.dns import ZONE

GOOD_IP = "192.0.2.10"  # allowed by the SPF records below
BAD_IP = "198.51.100.9"  # allowed by none
LISTED_IP = "198.51.100.66"  # on bl.test
LISTED_V6 = "2001:db8:bad::1"  # on bl.test, IPv6 nibbles
ERROR_IP = "198.51.100.67"  # bl.test answers a Spamhaus-style error code
LOCAL = "dienbien.gov.vn"

ANTISPAM_ZONE = ZONE + """
; --- SPF
pass-domain     TXT   "v=spf1 ip4:192.0.2.0/24 -all"
soft-domain     TXT   "v=spf1 ip4:192.0.2.0/24 ~all"
neutral-domain  TXT   "v=spf1 ?all"
include-domain  TXT   "v=spf1 include:pass-domain.test -all"
redirect-domain TXT   "v=spf1 redirect=pass-domain.test"
mx-domain       TXT   "v=spf1 mx -all"
mx-domain       MX    10 mail.mx-domain.test.
mail.mx-domain  A     192.0.2.25
a-domain        TXT   "v=spf1 a:host.a-domain.test/24 -all"
host.a-domain   A     192.0.2.200
v6-domain       TXT   "v=spf1 ip6:2001:db8:1::/48 -all"
exists-domain   TXT   "v=spf1 exists:%{i}.allow.test -all"
192.0.2.77.allow A    127.0.0.2
two-records     TXT   "v=spf1 -all"
two-records     TXT   "v=spf1 +all"
broken-domain   TXT   "v=spf1 ip4:192.0.2.0/24 frobnicate -all"
loop-domain     TXT   "v=spf1 include:loop-domain.test -all"
void-domain     TXT   "v=spf1 a:v1.test a:v2.test a:v3.test -all"
dnsfail-domain  TXT   "v=spf1 include:x.servfail.test -all"
exp-domain      TXT   "v=spf1 -all exp=explain.exp-domain.test"
explain.exp-domain TXT "%{i} is not one of %{d}'s designated mail servers"
long-domain     TXT   "v=spf1 ip4:192.0.2.1 ip4:192.0.2.2 ip4:192.0.2.3 ip4:192.0.2.4 ip4:192.0.2.5 ip4:192.0.2.6 ip4:192.0.2.7 ip4:192.0.2.8 ip4:192.0.2.9 ip4:192.0.2.10 " "ip4:192.0.2.11 ip4:192.0.2.12 ip4:192.0.2.13 ip4:192.0.2.14 ip4:192.0.2.15 ip4:192.0.2.16 ip4:192.0.2.17 ip4:192.0.2.18 ip4:192.0.2.19 ip4:192.0.2.20 -all"
helo.example-helo TXT "v=spf1 ip4:192.0.2.10 -all"
; --- DMARC
strict          TXT   "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.strict   TXT   "v=DMARC1; p=reject; adkim=s; aspf=s"
quarantined     TXT   "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.quarantined TXT "v=DMARC1; p=quarantine"
monitor         TXT   "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.monitor  TXT   "v=DMARC1; p=none; rua=mailto:d@monitor.test"
org             TXT   "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.org      TXT   "v=DMARC1; p=reject; sp=quarantine"
sub.org         TXT   "v=spf1 ip4:192.0.2.0/24 -all"
signed          TXT   "v=spf1 -all"
_dmarc.signed   TXT   "v=DMARC1; p=reject"
; --- blocklists
66.100.51.198.bl IN A 127.0.0.2
66.100.51.198.bl IN TXT "listed: see https://bl.test/198.51.100.66"
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.a.b.0.8.b.d.0.1.0.0.2.bl A 127.0.0.4
67.100.51.198.bl A   127.255.255.254
spammer.test.dbl A   127.0.1.2
"""

SELECTOR = "sel1"


@dataclass
class Result(Walk):
    """The walk, and the message as it would be delivered (None unless accepted)."""

    data: bytes | None = None


@lru_cache(maxsize=1)
def dkim_key() -> tuple[bytes, str]:
    """(PEM private key, the p= value of its DNS record): made once per test run."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def key_record(name: str, public: str) -> str:
    """A zone line for a DKIM key, split into 255-byte strings (RFC 1035 3.3.14)."""
    text = f"v=DKIM1; k=rsa; p={public}"
    chunks = " ".join(f'"{text[i:i + 250]}"' for i in range(0, len(text), 250))
    return f"{name} TXT {chunks}"


def zone_with_key() -> str:
    return ANTISPAM_ZONE + "\n" + key_record(f"{SELECTOR}._domainkey.signed", dkim_key()[1])


def message(sender: str, to: str = f"annv@{LOCAL}", body: str = "Xin chào.\n",
            extra: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Thư thử"
    msg["Date"] = format_datetime(datetime(2026, 12, 5, 9, 0, tzinfo=UTC))
    msg["Message-ID"] = "<t1@example.test>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def sign(raw: bytes, domain: str = "signed.test", selector: str = SELECTOR) -> bytes:
    import dkim

    header = dkim.sign(raw, selector.encode(), domain.encode(), dkim_key()[0],
                       canonicalize=(b"relaxed", b"relaxed"))
    return header + raw


async def transact(policies: dict[str, dict[str, Any]], dns_address: str, sender: str,
                   recipients: list[str], raw: bytes, client_ip: str = GOOD_IP,
                   helo: str = "mail.example.test", auth: str | None = None,
                   settings: dict[str, Any] | None = None, timeout: float = 2.0,
                   inline: bool = True, listener_kind: str | None = None
                   ) -> tuple[Transaction, Result]:
    """One transaction through every stage (`relay.transaction.walk`), from CLIENT_IP."""
    state = tempfile.mkdtemp(prefix="relay-antispam-")
    settings = settings or {}
    config = from_dict({
        **settings,
        "server": {"state_dir": state, "hostname": "mx.dienbien.gov.vn",
                   "local_domains": [LOCAL], **settings.get("server", {})},
        "dns": {"nameservers": [dns_address], "timeout": timeout},
        "policies": policies})
    runtime = await Runtime.build(config, archive=False, inline=inline)
    tx = Transaction(client_ip=client_ip, helo=helo, auth_login=auth,
                     listener_kind=listener_kind or ("submission" if auth else "mx"),
                     trusted=config.is_trusted(client_ip))
    conversation = Conversation(Hub(runtime), tx)
    try:
        result = await walk(conversation, sender, recipients, raw)
    finally:
        conversation.close()
        await runtime.aclose()
        shutil.rmtree(state, ignore_errors=True)
    accepted = result.verdict is not None and result.verdict.outcome == "accept"
    return tx, Result(**vars(result),
                      data=result.verdict.delivered(raw) if accepted else None)


def codes(tx: Transaction) -> list[str]:
    return [d.finding.code for d in tx.decisions]

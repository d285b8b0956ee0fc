"""Over the wire: SMTP AUTH against the directory, lockout, the directory policies in the
real relay process, and how fast a suspension reaches running relays (also two relays
sharing one PostgreSQL)."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from relay.config import load
from relay.directory import Directory
from tests.fixtures.relayproc import Relay

DOMAIN = "dienbien.gov.vn"
PASSWORD = "mat-khau-rat-dai"
POLICIES = {"headers": {}, "sender_registered": {}, "recipient_exists": {},
            "sender_login_match": {}, "no_local_spoofing": {}}
MSG = (f"From: Nguyễn Văn An <annv@{DOMAIN}>\r\nTo: partner@example.org\r\n"
       "Subject: test\r\nDate: Sun, 29 Nov 2026 10:00:00 +0700\r\n"
       f"Message-ID: <w1@{DOMAIN}>\r\n\r\nNội dung.\r\n").encode()




def submission(relay: Relay) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", relay.submission, timeout=15)
    client.ehlo("client.example.org")
    client.starttls(context=Relay.client_tls())
    client.ehlo("client.example.org")
    return client


def seed(relay: Relay) -> Directory:
    d = Directory(load(relay.config_path))
    with d.write("test", "QĐ số 1/QĐ-UBND") as w:
        w.add_agency("stttt", "Sở Thông tin và Truyền thông")
        an = w.add_person("Nguyễn Văn An", "stttt", hr_id="NV1")
        binh = w.add_person("Trần Thị Bình", "stttt", hr_id="NV2")
        w.add_mailbox(f"annv@{DOMAIN}", "personal", "stttt", an, PASSWORD)
        w.add_mailbox(f"binhtt@{DOMAIN}", "personal", "stttt", binh, PASSWORD)
    return d


def test_auth_after_starttls_policies_and_lockout(relay_factory: Any):
    relay = relay_factory(start=False, policies=POLICIES,
                          directory={"auth_max_failures": 3, "auth_lockout": 60,
                                     "auth_failure_delay": 0})
    seed(relay).close()
    relay.start()
    with smtplib.SMTP("127.0.0.1", relay.submission, timeout=15) as client:
        client.ehlo("client.example.org")
        assert not client.has_extn("auth")  # never before TLS
    with submission(relay) as client:
        assert "PLAIN" in client.esmtp_features["auth"]
        assert "LOGIN" in client.esmtp_features["auth"]
        client.login(f"annv@{DOMAIN}", PASSWORD)
        assert client.sendmail(f"annv@{DOMAIN}", ["partner@example.org"], MSG) == {}
        # sending as someone else (Điều 7.3)
        code, text = client.mail(f"binhtt@{DOMAIN}")
        assert code == 550 and b"(Article 7.3)" in text  # ASCII: no SMTPUTF8
    # AUTH LOGIN works too
    with submission(relay) as client:
        client.user, client.password = f"binhtt@{DOMAIN}", PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
    # three failures lock the login; then even the right password is refused
    for _ in range(3):
        with submission(relay) as client, pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(f"annv@{DOMAIN}", "wrong-password")
    with submission(relay) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(f"annv@{DOMAIN}", PASSWORD)
    log = relay.log.read_text()
    assert "locked out" in log and PASSWORD not in log and "wrong-password" not in log
    # an outside client claiming a provincial sender on the MX (Điều 7.3)
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=15) as client:
        client.ehlo("mx.example.org")
        code, text = client.mail(f"annv@{DOMAIN}")
        assert code == 550 and b"5.7.1" in text
        client.rset()
        client.mail("partner@example.org")
        code, text = client.rcpt(f"nobody@{DOMAIN}")
        assert code == 550 and b"5.1.1" in text


def rcpt_code(relay: Relay, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=15) as client:
        client.ehlo("mx.example.org")
        client.mail("partner@example.org")
        return client.rcpt(address)[0]


def wait_refused(relays: list[Relay], address: str, since: float, timeout: float = 40,
                 ) -> list[float]:
    """Seconds from SINCE until each relay refuses RCPT TO:<address> (a new session per
    probe: the relay caps RSETs per session)."""
    delays: dict[int, float] = {}
    while len(delays) < len(relays) and time.monotonic() - since < timeout:
        for n, relay in enumerate(relays):
            if n not in delays and rcpt_code(relay, address) >= 500:
                delays[n] = time.monotonic() - since
        time.sleep(0.02)
    assert len(delays) == len(relays), f"{address} still accepted after {timeout} s"
    return [delays[n] for n in range(len(relays))]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_suspension_reaches_running_relays(relay_factory: Any, request: pytest.FixtureRequest,
                                           backend: str, tmp_path: Path):
    url = "" if backend == "sqlite" else request.getfixturevalue("pg_url")
    directory: dict[str, Any] = {"url": url, "cache_ttl": 30, "poll_interval": 2}
    if backend == "sqlite":  # two relays on one SQLite file: point the second at the first's
        directory["url"] = f"sqlite:///{tmp_path / 'shared' / 'directory.db'}"
    first = relay_factory(start=False, policies=POLICIES, directory=directory)
    (tmp_path / "relay1").mkdir()  # relay_factory creates only the first relay's directory
    second = relay_factory(start=False, policies=POLICIES, directory=directory)
    d = seed(first)
    first.start()
    second.start()
    for relay in (first, second):  # warm both caches: the mailbox is known and active
        assert rcpt_code(relay, f"binhtt@{DOMAIN}") == 250
    with d.write("admin", "QĐ tạm đình chỉ số 5") as w:
        w.set_status(f"binhtt@{DOMAIN}", "suspended")
    committed = time.monotonic()
    d.close()
    delays = wait_refused([first, second], f"binhtt@{DOMAIN}", committed)
    print(f"\nsuspension took effect after {delays[0]:.2f} s and {delays[1]:.2f} s "
          f"({backend}, poll_interval 2 s, cache_ttl 30 s)")
    assert all(delay <= 2 + 1.5 for delay in delays)  # poll_interval + probing slack

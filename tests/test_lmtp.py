"""The LMTP backend against a real Dovecot LMTP server: per-recipient replies after DATA,
bounces for refused recipients, the Unix socket, and retries while Dovecot is down."""

from __future__ import annotations

import json
import smtplib
from email import message_from_bytes
from typing import Any

from relay.dsn import parse_dsn_recipients
from tests.fixtures.dovecot import FULL_MAILBOX, Dovecot
from tests.fixtures.relayproc import wait_for

UBND, AN = "ubnd@dienbien.gov.vn", "an@dienbien.gov.vn"
TRUSTED = {"trusted_networks": ["127.0.0.0/8"]}  # lets a local sender in on the MX port


def message(subject: str, to: str = UBND) -> bytes:
    return (f"From: {AN}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Sun, 29 Nov 2026 10:00:00 +0700\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@dienbien.gov.vn>\r\n\r\n"
            "Kính gửi UBND tỉnh.\r\n.leading dot line\r\n").encode()


def send(relay: Any, sender: str, recipients: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail(sender, recipients, data)


def queue(relay: Any) -> list[dict[str, Any]]:
    out = relay.cli("queue", "list", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def lmtp_relay(relay_factory: Any, host: str, port: int = 0) -> Any:
    return relay_factory(backend={"kind": "lmtp", "host": host, "port": port}, server=TRUSTED)


def test_two_local_recipients_land_in_both_dovecot_maildirs(relay_factory, dovecot: Dovecot):
    relay = lmtp_relay(relay_factory, "127.0.0.1", dovecot.port)
    send(relay, "sender@example.org", [UBND, AN], message("two recipients"))

    stored = wait_for(lambda: dovecot.messages(UBND) and dovecot.messages(AN))
    assert stored, f"not delivered:\n{dovecot.log}"
    for address in (UBND, AN):
        [raw] = dovecot.messages(address)
        msg = message_from_bytes(raw)
        assert msg["Subject"] == "two recipients"
        assert msg["Return-Path"] == "<sender@example.org>"  # written by Dovecot
        assert "with LMTP" in msg["Received"]  # Dovecot omits Delivered-To for 2 rcpts
        assert b"\n.leading dot line" in raw, "a line starting with a dot must arrive intact (dot-stuffing)"
        assert "Kính gửi".encode() in raw
    assert "saved mail to INBOX" in dovecot.log
    assert wait_for(lambda: queue(relay) == [], timeout=5)


def test_unknown_recipient_bounces_known_one_is_delivered(relay_factory, dovecot: Dovecot):
    relay = lmtp_relay(relay_factory, "127.0.0.1", dovecot.port)
    send(relay, AN, ["khongco@dienbien.gov.vn", UBND], message("one unknown", "khongco"))

    assert wait_for(lambda: dovecot.messages(UBND)), dovecot.log
    # the DSN goes back to the (local) sender, through Dovecot as well
    assert wait_for(lambda: dovecot.messages(AN)), dovecot.log
    [dsn] = dovecot.messages(AN)
    assert parse_dsn_recipients(dsn) == [("khongco@dienbien.gov.vn", "5.1.1")]
    assert b"multipart/report" in dsn and b"User doesn't exist" in dsn
    assert message_from_bytes(dsn)["Return-Path"] == "<>"
    assert [message_from_bytes(m)["Subject"] for m in dovecot.messages(UBND)] == ["one unknown"]
    assert wait_for(lambda: queue(relay) == [], timeout=5)


def test_unix_socket(relay_factory, dovecot: Dovecot):
    relay = lmtp_relay(relay_factory, dovecot.socket_path)
    send(relay, "sender@example.org", [AN], message("over the unix socket", AN))
    assert wait_for(lambda: dovecot.messages(AN)), dovecot.log
    [raw] = dovecot.messages(AN)
    assert message_from_bytes(raw)["Subject"] == "over the unix socket"
    assert "Connect from local" in dovecot.log  # not 127.0.0.1: it came over the socket
    assert wait_for(lambda: queue(relay) == [], timeout=5)


def test_dovecot_down_defers_then_delivers_when_it_is_back(relay_factory, dovecot: Dovecot):
    relay = lmtp_relay(relay_factory, "127.0.0.1", dovecot.port)
    send(relay, AN, [UBND], message("before the outage"))
    assert wait_for(lambda: dovecot.messages(UBND)), dovecot.log  # a connection is now cached

    dovecot.stop()
    send(relay, AN, [UBND], message("during the outage"))
    deferred = wait_for(lambda: [e for e in queue(relay) if e["queue_name"] == "deferred"])
    assert deferred, "the message must wait in the queue while Dovecot is down"
    [rcpt] = deferred[0]["recipients"]
    assert rcpt["address"] == UBND and "LMTP" in rcpt["delay_reason"]

    dovecot.start()
    assert wait_for(lambda: len(dovecot.messages(UBND)) == 2), dovecot.log
    subjects = [message_from_bytes(m)["Subject"] for m in dovecot.messages(UBND)]
    assert sorted(subjects) == ["before the outage", "during the outage"]
    assert wait_for(lambda: queue(relay) == [], timeout=5)
    assert not dovecot.messages(AN), "no bounce for a temporary failure"


def test_per_recipient_replies_after_data(relay_factory, dovecot: Dovecot):
    """Dovecot accepts both RCPTs, then refuses the full mailbox only in its reply to the
    final dot (RFC 2033: one reply per recipient). The first reply is the refusal, so a
    client that read a single SMTP-style reply would bounce or retry the delivered one."""
    relay = lmtp_relay(relay_factory, "127.0.0.1", dovecot.port)
    big = message("over quota", FULL_MAILBOX) + (b"x" * 70 + b"\r\n") * 60  # > 1 KiB
    send(relay, AN, [FULL_MAILBOX, UBND], big)

    assert wait_for(lambda: dovecot.messages(UBND) and dovecot.messages(AN)), dovecot.log
    [dsn] = dovecot.messages(AN)
    assert parse_dsn_recipients(dsn) == [(FULL_MAILBOX, "5.2.2")]
    assert b"Quota exceeded" in dsn
    assert [message_from_bytes(m)["Subject"] for m in dovecot.messages(UBND)] == ["over quota"]
    assert not dovecot.messages(FULL_MAILBOX)
    assert "save failed to INBOX: Quota exceeded" in dovecot.log
    assert wait_for(lambda: queue(relay) == [], timeout=5)

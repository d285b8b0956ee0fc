"""Hostile clients against the SMTP front (issue 10 items 2, 4, 7, 8; issue 14 items 2, 4):
each test fails on the relay before these fixes and holds now. Real relay, real sockets."""

from __future__ import annotations

import base64
import json
import smtplib
import socket
import time

import pytest

from tests.fixtures.relayproc import wait_for

RCPT = "an@dienbien.gov.vn"


def lines_until_final(f) -> list[bytes]:
    out = []
    while True:
        line = f.readline()
        out.append(line)
        if line[3:4] != b"-":
            return out


class Raw:
    """A client speaking raw bytes, keeping every byte the server sent."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.f = self.sock.makefile("rb")
        self.received: list[bytes] = lines_until_final(self.f)

    def cmd(self, line: bytes) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        reply = lines_until_final(self.f)
        self.received.extend(reply)
        return reply

    def close(self) -> None:
        self.sock.close()


def test_undecodable_bytes_never_turn_a_queued_message_into_a_500(relay_factory):
    relay = relay_factory()
    c = Raw(relay.mx)
    assert c.cmd(b"EHLO bad\xff\xfe.example")[-1].startswith(b"250")
    assert c.cmd(b"MAIL FROM:<a@example.org>")[-1].startswith(b"250")
    assert c.cmd(b"RCPT TO:<" + RCPT.encode() + b">")[-1].startswith(b"250")
    assert c.cmd(b"DATA")[-1].startswith(b"354")
    reply = c.cmd(b"From: a@example.org\r\nDate: x\r\nMessage-ID: <\xff\xfe@x>\r\n\r\nhi\r\n.")
    c.close()
    assert reply[-1].startswith(b"250 2.0.0 OK queued as"), reply
    [entry] = relay.decisions()
    assert entry["action"] == "accept" and entry["reply"] == reply[-1].decode().strip()
    assert entry["helo"] == "bad\udcff\udcfe.example"  # escaped, not lost
    assert len(wait_for(lambda: relay.maildir(RCPT))) == 1


def test_a_file_name_cannot_inject_a_reply_line(relay_factory):
    relay = relay_factory(policies={"headers": {}, "attachments": {}})
    evil = "x\r\n250 2.0.0 OK queued as FAKE\r\nreport.exe"
    word = "=?utf-8?b?" + base64.b64encode(evil.encode()).decode() + "?="
    raw = (b"From: a@example.org\r\nDate: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain"
           b"\r\n\r\nhi\r\n--B\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename=\"" + word.encode() + b"\"\r\n\r\n"
           b"MZ\r\n--B--\r\n")
    c = Raw(relay.mx)
    c.cmd(b"EHLO x")
    c.cmd(b"MAIL FROM:<a@example.org>")
    c.cmd(b"RCPT TO:<" + RCPT.encode() + b">")
    c.cmd(b"DATA")
    reply = c.cmd(raw + b".")
    c.sock.sendall(b"NOOP\r\n")
    after = lines_until_final(c.f)
    c.close()
    assert all(line.startswith(b"554") for line in reply), reply
    assert b"queued as FAKE" not in b"".join(line for line in reply if line[:3] != b"554")
    assert after[-1].startswith(b"250")  # the next reply is the NOOP's, in step
    assert not relay.maildir(RCPT)


def test_every_reply_to_a_client_without_smtputf8_is_ascii(relay_factory):
    relay = relay_factory(server={"bare_newline": "reject", "max_message_size": 2048,
                                  "max_errors": 6})
    c = Raw(relay.mx)
    c.cmd(b"EHLO x")
    c.cmd(b"AUTH PLAIN AGFAAGI=")  # 502 on the MX
    c.cmd(b"MAIL FROM:<a@example.org> SIZE=99999")  # 552
    c.cmd(b"MAIL FROM:<a@example.org>")
    c.cmd(b"RCPT TO:<x@gmail.com>")  # 554 relay denied
    c.cmd(b"RCPT TO:<bad\x01@dienbien.gov.vn>")  # 501
    c.cmd(b"RCPT TO:<" + RCPT.encode() + b">")
    c.cmd(b"DATA")
    c.cmd(b"From: a@example.org\r\n\r\nbare\nnewline\r\n.")  # 554 5.6.0
    c.cmd(b"MAIL FROM:<a@example.org>")
    for _ in range(10):  # up to the error cap: 421, and the server hangs up
        if c.cmd(b"RCPT TO:<y@gmail.com>")[-1].startswith(b"421"):
            break
    c.close()
    sub = Raw(relay.submission)
    sub.cmd(b"EHLO x")
    sub.cmd(b"MAIL FROM:<a@dienbien.gov.vn>")  # 530
    sub.close()
    everything = b"".join(c.received + sub.received)
    assert b"421" in everything and b"530" in everything and b"5.6.0" in everything
    assert all(byte < 0x80 for byte in everything), [
        line for line in c.received + sub.received if any(b >= 0x80 for b in line)]
    # and the log records what was sent
    assert all(d["reply"].isascii() for d in relay.decisions())


def test_refused_recipients_end_the_session_and_the_log_line_stays_small(relay_factory):
    relay = relay_factory()
    c = Raw(relay.mx)
    c.cmd(b"EHLO x")
    c.cmd(b"MAIL FROM:<a@example.org>")
    codes = []
    for i in range(200):
        try:
            codes.append(c.cmd(b"RCPT TO:<u%d@gmail.com>" % i)[-1][:3])
        except (OSError, ValueError):
            break
        if codes[-1] == b"421":
            break
    c.close()
    assert codes[-1] == b"421" and len(codes) == 20, codes
    time.sleep(0.5)
    [entry] = relay.decisions()
    assert len(json.dumps(entry)) < 50_000
    with Raw(relay.mx).sock:  # the relay serves on
        pass


def test_one_client_cannot_take_every_slot(relay_factory):
    relay = relay_factory(server={"max_connections": 60, "max_connections_per_ip": 20})
    held = [socket.create_connection(("127.0.0.1", relay.mx), timeout=10) for _ in range(40)]
    try:
        greetings = [s.makefile("rb").readline()[:3] for s in held]
        assert greetings.count(b"220") == 20 and greetings.count(b"421") == 20
        for port in (relay.mx, relay.submission):  # another client, on both listeners
            other = Raw(port, source="127.0.0.2")
            assert other.received[-1].startswith(b"220")
            other.close()
    finally:
        for s in held:
            s.close()


def test_a_command_flood_does_not_extend_the_idle_timer(relay_factory):
    relay = relay_factory(server={"idle_timeout": 2, "max_noop": 1000})
    c = Raw(relay.mx)
    c.cmd(b"EHLO x")
    t0 = time.monotonic()
    closed = None
    while time.monotonic() - t0 < 8:
        try:
            reply = c.cmd(b"NOOP")
        except (OSError, ValueError):
            reply = [b""]
        if not reply[-1]:
            closed = time.monotonic() - t0
            break
        time.sleep(0.3)
    c.close()
    assert closed is not None and closed < 4, closed


def test_a_busy_client_that_makes_progress_keeps_its_session(relay_factory):
    relay = relay_factory(server={"idle_timeout": 2})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        for i in range(4):
            client.sendmail("a@example.org", [RCPT], b"From: a@example.org\r\nDate: x\r\n"
                            b"Subject: %d\r\n\r\nhi\r\n" % i)
            time.sleep(1.2)
    assert len(wait_for(lambda: len(relay.maildir(RCPT)) == 4 and relay.maildir(RCPT))) == 4


@pytest.mark.parametrize("trusted", [True, False])
def test_the_msa_adds_date_and_message_id(relay_factory, trusted):
    relay = relay_factory(server={"trusted_networks": ["127.0.0.0/8"] if trusted else []})
    raw = b"From: a@example.org\r\nSubject: no date\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        if not trusted:  # on the MX, for the world, the headers policy decides
            with pytest.raises(smtplib.SMTPDataError) as err:
                client.sendmail("a@example.org", [RCPT], raw)
            assert err.value.smtp_code == 550 and b"Date" in err.value.smtp_error
            return
        client.sendmail("a@example.org", [RCPT], raw)
    [got] = wait_for(lambda: relay.maildir(RCPT))
    head = got.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head
    assert head.index(b"Subject: no date") < head.index(b"Date: ")  # added at the end

"""Over the wire: the relay process, a real SMTP client, Maildir and an SMTP sink."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from tests.fixtures.relayproc import Relay, wait_for

MSG = (
    "From: Nguyễn Văn An <an@dienbien.gov.vn>\r\n"
    "To: ubnd@dienbien.gov.vn\r\n"
    "Subject: =?utf-8?b?QsOhbyBjw6Fv?=\r\n"
    "Date: Sun, 29 Nov 2026 10:00:00 +0700\r\n"
    "Message-ID: <t1@dienbien.gov.vn>\r\n"
    "\r\n"
    "Kính gửi Ủy ban nhân dân tỉnh.\r\n"
).encode()


def smtp(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.ehlo("client.example.org")
    return client


def test_local_mail_lands_in_maildir_with_trace_header(relay_factory):
    relay = relay_factory()
    with smtp(relay.mx) as client:
        refused = client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], MSG)
    assert refused == {}
    boxes = wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    assert len(boxes) == 1
    delivered = boxes[0]
    assert delivered.startswith(b"Return-Path: <an@example.org>\r\nDelivered-To: ubnd@")
    assert b"Received: from client.example.org ([127.0.0.1])" in delivered
    assert delivered.endswith(MSG)
    [entry] = [d for d in relay.decisions() if d["action"] == "accept"]
    assert entry["message_id"] == "<t1@dienbien.gov.vn>"
    assert entry["rcpt_to"] == ["ubnd@dienbien.gov.vn"]
    assert entry["client_ip"] == "127.0.0.1" and entry["queue_id"]


def test_smtp_backend_delivers_to_sink(relay_factory, sink):
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1", "port": sink.port})
    with smtp(relay.mx) as client:
        client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn", "tiepdan@dienbien.gov.vn"],
                        MSG)
    wait_for(lambda: sink.messages)
    [got] = sink.messages
    assert got.sender == "an@example.org"
    assert sorted(got.recipients) == ["tiepdan@dienbien.gov.vn", "ubnd@dienbien.gov.vn"]
    assert got.data.endswith(MSG)


@pytest.mark.parametrize("listener", ["mx", "submission"])
def test_no_open_relay(relay_factory, listener):
    relay = relay_factory()
    with smtp(getattr(relay, listener)) as client:
        if listener == "submission":
            client.starttls(context=Relay.client_tls())
            client.ehlo("client.example.org")
        client.mail("an@example.org") if listener == "mx" else None
        if listener == "mx":
            code, text = client.rcpt("victim@gmail.com")
            assert code == 554 and b"5.7.1" in text and b"Relay access denied" in text
            # and the server keeps serving the same session
            assert client.rcpt("ubnd@dienbien.gov.vn")[0] == 250
        else:
            code, text = client.mail("an@dienbien.gov.vn")
            assert code == 530 and b"Authentication required" in text
    with smtp(relay.mx) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("an@dienbien.gov.vn", ["victim@gmail.com"], MSG)
    assert not (relay.state / "queue" / "active").exists() or not any(
        p for p in (relay.state / "queue" / "active").iterdir())


def test_trusted_network_may_relay(relay_factory, sink):
    relay = relay_factory(server={"trusted_networks": ["127.0.0.0/8"]},
                          outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"})
    with smtp(relay.mx) as client:
        client.sendmail("an@dienbien.gov.vn", ["partner@example.org"], MSG)
    wait_for(lambda: sink.messages)
    assert sink.messages[0].recipients == ["partner@example.org"]


@pytest.mark.parametrize("case", ["verified", "no starttls", "wrong name"])
def test_outbound_starttls_required(relay_factory, tmp_path, case):
    """starttls = "required": mail leaves only over TLS to a relayhost whose certificate
    verifies (against outbound.ca_file); otherwise it stays deferred, saying why."""
    from tests.fixtures.sink import Sink
    from tests.fixtures.tls import ca_file, server_context

    names = {"verified": ("127.0.0.1",), "wrong name": ("relay.example.net",)}
    sink = Sink(tls=server_context(tmp_path, *names[case]) if case in names else None).start()
    try:
        relay = relay_factory(server={"trusted_networks": ["127.0.0.0/8"]},
                              outbound={"relayhost": f"127.0.0.1:{sink.port}",
                                        "starttls": "required", "ca_file": str(ca_file(tmp_path))})
        with smtp(relay.mx) as client:
            client.sendmail("an@dienbien.gov.vn", ["partner@example.org"], MSG)
        if case == "verified":
            wait_for(lambda: sink.messages)
            assert sink.messages[0].recipients == ["partner@example.org"]
            return
        reason = {"no starttls": b"STARTTLS required but not offered",
                  "wrong name": b"certificate verify failed"}[case]
        wait_for(lambda: reason in relay.log.read_bytes(), timeout=15)
        assert not sink.messages
    finally:
        sink.stop()


def test_auth_is_not_offered_on_mx_or_before_tls(relay_factory):
    relay = relay_factory()
    with smtp(relay.mx) as client:
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN AGFuAHNlY3JldA==")[0] >= 500
    with smtp(relay.submission) as client:
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN AGFuAHNlY3JldA==")[0] == 538
        client.starttls(context=Relay.client_tls())
        client.ehlo("client.example.org")
        assert "PLAIN" in client.esmtp_features["auth"]
    # implicit TLS (465): AUTH is offered at once (aiosmtpd #281 would have refused it)
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps, context=Relay.client_tls(), timeout=10) as client:
        client.ehlo("client.example.org")
        assert "PLAIN" in client.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("an@dienbien.gov.vn", "wrong")


def test_size_is_advertised_and_enforced(relay_factory):
    relay = relay_factory(server={"max_message_size": 4096})
    with smtp(relay.mx) as client:
        assert client.esmtp_features["size"] == "4096"
        code, text = client.mail("an@example.org", ["SIZE=10000"])
        assert code == 552 and b"5.3.4" in text
        client.rset()
        big = MSG + (b"x" * 70 + b"\r\n") * 80
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # smtplib declares SIZE=
            client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], big)
        assert refused.value.smtp_code == 552 and b"Message too large" in refused.value.smtp_error
        client.rset()
        client.mail("an@example.org")  # a client that does not declare the size
        client.rcpt("ubnd@dienbien.gov.vn")
        assert client.data(big)[0] == 552
        # still serving
        assert client.noop()[0] == 250


def test_recipient_cap_answers_452(relay_factory):
    relay = relay_factory(server={"max_recipients": 3})
    with smtp(relay.mx) as client:
        client.mail("an@example.org")
        codes = [client.rcpt(f"u{i}@dienbien.gov.vn")[0] for i in range(5)]
        assert codes == [250, 250, 250, 452, 452]
        client.data(MSG)
    wait_for(lambda: relay.maildir("u2@dienbien.gov.vn"))
    assert not relay.maildir("u3@dienbien.gov.vn")


SMUGGLE = [
    # a bare-LF "end of data" followed by a second transaction
    b"Subject: x\r\nFrom: a@example.org\r\nDate: x\r\n\r\nline\n.\nMAIL FROM:<x@y>\r\n"
    b"RCPT TO:<victim@dienbien.gov.vn>\r\nDATA\r\nsmuggled\r\n",
    # the same with bare CR
    b"Subject: x\r\nFrom: a@example.org\r\nDate: x\r\n\r\nline\r.\rMAIL FROM:<x@y>\r\n"
    b"RCPT TO:<victim@dienbien.gov.vn>\r\nDATA\r\nsmuggled\r\n",
]


def raw_data(port: int, body: bytes) -> tuple[bytes, socket.socket, object]:
    """EHLO, MAIL, RCPT, DATA and BODY + <CRLF>.<CRLF> on a raw socket; the last reply line."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    for line in (b"EHLO x\r\n", b"MAIL FROM:<a@example.org>\r\n",
                 b"RCPT TO:<ubnd@dienbien.gov.vn>\r\n", b"DATA\r\n"):
        s.sendall(line)
        while (reply := f.readline())[3:4] == b"-":
            pass
    assert reply.startswith(b"354")
    s.sendall(body + b".\r\n")
    while (reply := f.readline())[3:4] == b"-":
        pass
    return reply, s, f


@pytest.mark.parametrize("body", SMUGGLE)
def test_bare_cr_or_lf_is_refused_when_configured(relay_factory, body):
    relay = relay_factory(server={"bare_newline": "reject"})
    reply, s, f = raw_data(relay.mx, body)
    with s:
        assert reply.startswith(b"554 5.6.0"), reply
        s.sendall(b"NOOP\r\n")
        assert f.readline().startswith(b"250")
    assert not relay.maildir("ubnd@dienbien.gov.vn")
    assert [d["action"] for d in relay.decisions()] == ["reject"]


@pytest.mark.parametrize("body", SMUGGLE)
def test_bare_newlines_are_normalised_and_never_end_data(relay_factory, body):
    """Postfix >= 3.9's default: lines may end in bare LF (or CR), DATA ends only at
    <CR><LF>.<CR><LF>, so nothing is smuggled; what is stored has CRLF only."""
    relay = relay_factory()
    reply, s, f = raw_data(relay.mx, body)
    with s:
        assert reply.startswith(b"250 2.0.0"), reply
        s.sendall(b"NOOP\r\n")
        assert f.readline().startswith(b"250")  # no smuggled command was answered
    [got] = wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    # the lone "." line ended nothing; like any line starting with a dot it lost that dot
    assert got.endswith(b"\r\nline\r\n\r\nMAIL FROM:<x@y>\r\n"
                        b"RCPT TO:<victim@dienbien.gov.vn>\r\nDATA\r\nsmuggled\r\n")
    assert got.count(b"\n") == got.count(b"\r\n") and got.count(b"\r") == got.count(b"\r\n")
    assert not relay.maildir("victim@dienbien.gov.vn")
    assert [d["action"] for d in relay.decisions()] == ["accept"]


def test_python_smtplib_with_lf_only_bytes_is_delivered_with_crlf(relay_factory):
    relay = relay_factory()
    lf = MSG.replace(b"\r\n", b"\n") + b".leading dot line\n"
    with smtp(relay.mx) as client:
        assert client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], lf) == {}
    [got] = wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    # (smtplib ends LF-only data with an extra CRLF, which becomes an empty last line)
    assert got.endswith(MSG + b".leading dot line\r\n\r\n")
    assert got.count(b"\n") == got.count(b"\r\n")


@pytest.mark.parametrize("address", ["<a\x00b@dienbien.gov.vn>", "<a<b@dienbien.gov.vn>",
                                     "<@dienbien.gov.vn>", "<" + "a" * 70 + "@dienbien.gov.vn>"])
def test_malformed_addresses_get_501_and_the_server_keeps_serving(relay_factory, address):
    relay = relay_factory()
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO x\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"MAIL FROM:<a@example.org>\r\n")
        assert f.readline().startswith(b"250")
        s.sendall(b"RCPT TO:" + address.encode() + b"\r\n")
        assert read_reply(f)[:1] == b"5"
        s.sendall(b"RCPT TO:<ubnd@dienbien.gov.vn>\r\n")
        assert read_reply(f).startswith(b"250")


def test_garbage_and_noop_flood(relay_factory):
    relay = relay_factory(server={"max_noop": 5})
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"\xff\xfe GARBAGE\r\n")
        assert f.readline()[:1] == b"5"
        s.sendall(b"X" * 5000 + b"\r\n")
        assert f.readline()[:1] == b"5"
        replies = []
        for _ in range(6):
            s.sendall(b"NOOP\r\n")
            replies.append(f.readline()[:3])
        assert replies == [b"250"] * 5 + [b"421"]
        assert f.readline() == b""  # and the connection is closed
    # the server still takes new sessions
    with smtp(relay.mx) as client:
        assert client.noop()[0] == 250


def test_connection_cap(relay_factory):
    relay = relay_factory(server={"max_connections": 2})
    held = [socket.create_connection(("127.0.0.1", relay.mx), timeout=10) for _ in range(2)]
    try:
        for s in held:
            assert s.makefile("rb").readline().startswith(b"220")
        with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as extra:
            assert extra.makefile("rb").readline().startswith(b"421")
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    with smtp(relay.mx) as client:
        assert client.noop()[0] == 250


def test_smtputf8_and_8bitmime(relay_factory):
    relay = relay_factory()
    with smtp(relay.mx) as client:
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        client.sendmail("người.gửi@example.org", ["ubnd@dienbien.gov.vn"], MSG,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [got] = wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    assert "người.gửi@example.org".encode() in got


def test_rejection_is_bilingual_and_ascii_without_smtputf8(relay_factory):
    relay = relay_factory()
    with smtp(relay.mx) as client:
        client.mail("an@example.org")
        code, text = client.rcpt("x@gmail.com")
    assert text.isascii()
    assert b"Khong cho phep chuyen tiep thu" in text and b"Relay access denied" in text


def read_reply(f) -> bytes:
    """A whole (possibly multi-line) reply; returns its last line."""
    while (line := f.readline())[3:4] == b"-":
        pass
    return line




def test_idle_and_data_timeouts_close_the_session(relay_factory):
    relay = relay_factory(server={"idle_timeout": 1, "data_timeout": 2})
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        start = time.monotonic()
        rest = f.read()  # a silent client: the server ends the session
        assert time.monotonic() - start < 5
        assert rest == b"" or rest.startswith(b"421")
    # a slow DATA (slowloris) is cut at data_timeout even though bytes keep coming
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        for line in (b"EHLO x\r\n", b"MAIL FROM:<a@example.org>\r\n",
                     b"RCPT TO:<ubnd@dienbien.gov.vn>\r\n", b"DATA\r\n"):
            s.sendall(line)
            read_reply(f)
        start = time.monotonic()
        with pytest.raises(OSError):
            for _ in range(100):
                s.sendall(b"Subject: slow\r\n")
                time.sleep(0.1)
        assert 1.5 < time.monotonic() - start < 6
    assert not relay.maildir("ubnd@dienbien.gov.vn")


def test_decision_log_has_one_line_per_transaction(relay_factory):
    relay = relay_factory()
    with smtp(relay.mx) as client:
        client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], MSG)
        client.mail("an@example.org")
        client.rcpt("victim@gmail.com")  # refused: the transaction ends at RSET
        client.rset()
        client.mail("an@example.org")
        client.rcpt("ubnd@dienbien.gov.vn")  # accepted, then the client quits before DATA
    wait_for(lambda: len(relay.decisions()) >= 3)
    time.sleep(0.3)
    assert [d["action"] for d in relay.decisions()] == ["accept", "reject", "abandoned"]
    reject = relay.decisions()[1]
    assert "Relay access denied" in reject["reply"] and reject["queue_id"] is None

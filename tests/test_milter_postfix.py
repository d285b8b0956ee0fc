"""The milter inside a real (private) Postfix: SMTP in, our replies out, the sink as next hop."""

from __future__ import annotations

import shutil
import smtplib
import tempfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.fixtures.relayproc import free_port, wait_for
from tests.milter_helpers import MilterThread, milter_config

SENDER = "nguyenvana@dienbien.gov.vn"


def message(subject: str, body: str = "Xin chao\n", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "tiepdan@dienbien.gov.vn"
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0700"
    msg["Message-ID"] = "<probe@dienbien.gov.vn>"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


@pytest.fixture
def stack(tmp_path: Path, postfix_factory, sink):
    """Postfix with `smtpd_milters` pointing at our milter; mail goes on to the sink."""
    bind = f"127.0.0.1:{free_port()}"
    config = milter_config(bind, tmp_path / "state",
                           server={"max_recipients": 3, "max_message_size": 100_000})
    with MilterThread(config):
        postfix = postfix_factory(milter=f"inet:{bind}")
        yield postfix, sink


def delivered(sink, count: int) -> list:
    """The messages Postfix handed on to its next hop, once there are `count`."""
    assert wait_for(lambda: len(sink.messages) >= count, timeout=20), sink.messages
    return list(sink.messages)


def smtp(postfix) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", postfix.port, timeout=30)
    client.ehlo("client.example")
    return client


def send(postfix, data: bytes, rcpts: tuple[str, ...] = ("tiepdan@dienbien.gov.vn",),
         mail_options: tuple[str, ...] = ()) -> tuple[int, str, dict[str, tuple[int, str]]]:
    """(DATA code, DATA text, {rcpt: (code, text)}), without raising on refusals."""
    with smtp(postfix) as client:
        code, text = client.mail(SENDER, list(mail_options))
        if code >= 400:
            return code, text.decode(), {}
        answers = {r: client.rcpt(r) for r in rcpts}
        answers = {r: (c, t.decode()) for r, (c, t) in answers.items()}
        if not any(c < 400 for c, _ in answers.values()):
            return 0, "", answers
        code, text = client.data(data)
        return code, text.decode(), answers


def test_clean_message_reaches_the_next_hop_with_tag_header(stack):
    postfix, sink = stack
    code, text, _ = send(postfix, message("TAG: hello"))
    assert code == 250, text
    (got,) = delivered(sink, 1)
    assert got.recipients == ["tiepdan@dienbien.gov.vn"]
    assert b"X-Probe: tagged; auth=-\r\n" in got.data
    assert b"Subject: TAG: hello\r\n" in got.data
    assert got.data.endswith(b"Xin chao\r\n")


def test_rejected_message_gets_our_bilingual_reply(stack):
    postfix, sink = stack
    code, text, _ = send(postfix, message("REJECT this"))
    assert code == 550
    assert "5.7.1 Tham do REJECT (Dieu 9)" in text
    assert "5.7.1 Probe REJECT (Article 9)" in text
    assert sink.messages == []


def test_smtputf8_client_gets_the_vietnamese_text(stack):
    postfix, _ = stack
    code, text, _ = send(postfix, message("REJECT"), mail_options=("SMTPUTF8",))
    assert code == 550
    assert "Thăm dò REJECT (Điều 9)" in text


def test_tempfail(stack):
    postfix, sink = stack
    code, text, _ = send(postfix, message("TEMPFAIL"))
    assert code == 451
    assert "4.7.1 Probe TEMPFAIL (Article 9)" in text


def test_policy_dependency_down_is_a_temporary_failure(stack):
    postfix, sink = stack
    code, text, _ = send(postfix, message("DEPENDENCY-DOWN"))
    assert code == 451
    assert "4.3.0 Temporary error while checking the message" in text


def test_per_recipient_rejection_rejects_only_that_recipient(stack):
    postfix, sink = stack
    rcpts = ("tiepdan@dienbien.gov.vn", "blocked@dienbien.gov.vn")
    code, text, answers = send(postfix, message("hello"), rcpts)
    assert answers["tiepdan@dienbien.gov.vn"][0] == 250
    assert answers["blocked@dienbien.gov.vn"][0] == 550
    assert "Recipient blocked@dienbien.gov.vn blocked (Article 9)" in answers[
        "blocked@dienbien.gov.vn"][1]
    assert code == 250
    (got,) = delivered(sink, 1)
    assert got.recipients == ["tiepdan@dienbien.gov.vn"]


def test_converted_message_reaches_the_next_hop_converted(stack):
    postfix, sink = stack
    data = message("CONVERT me", "Tieng Viet\n").replace(b"charset=\"utf-8\"",
                                                          b"charset=\"x-probe\"")
    assert b"x-probe" in data
    code, text, _ = send(postfix, data)
    assert code == 250, text
    (got,) = delivered(sink, 1)
    assert b"Subject: converted me\r\n" in got.data
    assert b"x-probe" not in got.data
    assert "Tiếng Việt\r\n".encode() in got.data


def test_size_policy_refuses_declared_size(stack):
    postfix, _ = stack
    code, text, _ = send(postfix, message("big"), mail_options=("SIZE=200000",))
    assert code == 552
    assert "5.3.4 Message too large: 200000 bytes, limit 100000 bytes (Article 5.1)" in text


def test_recipients_policy_refuses_past_the_cap(stack):
    postfix, sink = stack
    rcpts = tuple(f"r{i}@dienbien.gov.vn" for i in range(4))
    code, _, answers = send(postfix, message("hello"), rcpts)
    assert [answers[r][0] for r in rcpts] == [250, 250, 250, 452]
    assert "Too many recipients: at most 3" in answers["r3@dienbien.gov.vn"][1]
    assert code == 250
    assert sorted(delivered(sink, 1)[0].recipients) == sorted(rcpts[:3])


def test_headers_policy_refuses_duplicate_subject(stack):
    postfix, _ = stack
    data = message("one").replace(b"Subject: one\r\n", b"Subject: one\r\nSubject: two\r\n")
    code, text, _ = send(postfix, data)
    assert code == 550
    assert "5.6.0 Header field Subject: appears more than once (Article 5.1)" in text


def test_milter_down_postfix_tempfails(postfix_factory, sink):
    postfix = postfix_factory(milter=f"inet:127.0.0.1:{free_port()}")  # nobody listens
    code, text, _ = send(postfix, message("hello"))
    assert (code, text) == (451, "4.7.1 Service unavailable - try again later")
    assert sink.messages == []


def test_slow_milter_postfix_tempfails_and_milter_keeps_serving(tmp_path, postfix_factory,
                                                                sink):
    bind = f"127.0.0.1:{free_port()}"
    with MilterThread(milter_config(bind, tmp_path)):
        postfix = postfix_factory(milter=f"inet:{bind}", milter_command_timeout="1s")
        with smtp(postfix) as client:
            code, text = client.mail("slow@dienbien.gov.vn")  # the probe takes 3 s
        assert code == 451, text
        assert "4.7.1" in text.decode()
        code, text, _ = send(postfix, message("hello"))  # the next session is served
        assert code == 250, text
    assert len(delivered(sink, 1)) == 1


def test_postfix_over_a_unix_socket(tmp_path, postfix_factory, sink):
    # not tmp_path itself: pytest makes it 0700 and Postfix's smtpd runs as `postfix`
    directory = Path(tempfile.mkdtemp(prefix="relay-milter-sock-"))
    try:
        directory.chmod(0o755)
        path = directory / "milter.sock"
        config = milter_config(f"unix:{path}", tmp_path)
        config.milter.socket_mode = 0o666
        with MilterThread(config):
            postfix = postfix_factory(milter=f"unix:{path}")
            code, text, _ = send(postfix, message("REJECT"))
            assert code == 550 and "Probe REJECT (Article 9)" in text
            code, text, _ = send(postfix, message("TAG"))
            assert code == 250, text
        assert b"X-Probe: tagged" in delivered(sink, 1)[0].data
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_postfix_sasl_login_reaches_the_policies(tmp_path, postfix_factory, dovecot_sasl, sink):
    """{auth_authen} from a real Postfix SASL login becomes tx.auth_login; relay control
    is Postfix's: the milter does not refuse what Postfix let the login relay."""
    dovecot_sasl.add_user(SENDER, "mat-khau-rat-dai")
    bind = f"127.0.0.1:{free_port()}"
    with MilterThread(milter_config(bind, tmp_path)):
        postfix = postfix_factory(milter=f"inet:{bind}", mynetworks="127.0.0.2/32",
                                  **dovecot_sasl.postfix_params)
        with smtp(postfix) as client:
            client.mail(SENDER)
            code, text = client.rcpt("someone@example.org")
            # Postfix itself (defer_unauth_destination), before the login
            assert code == 454 and b"Relay access denied" in text
            client.rset()
            client.login(SENDER, "mat-khau-rat-dai")
            assert client.sendmail(SENDER, ["someone@example.org"], message("TAG")) == {}
    assert f"X-Probe: tagged; auth={SENDER}\r\n".encode() in delivered(sink, 1)[0].data

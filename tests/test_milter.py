"""The milter front, driven by a client on the kilter.protocol codec (MTA side)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from kilter.protocol import (
    AddHeader,
    Body,
    ChangeHeader,
    Close,
    Connect,
    Continue,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    ProtocolFlags,
    ReplaceBody,
    ReplyCode,
)

from relay.config import ConfigError, from_dict
from relay.milter import message_edits
from tests.fixtures.relayproc import free_port
from tests.milter_helpers import (
    HEADERS,
    MilterClient,
    MilterThread,
    milter_config,
    open_session,
    reply_text,
    send_message,
)


@pytest.fixture
def milter(tmp_path: Path):
    bind = f"127.0.0.1:{free_port()}"
    with MilterThread(milter_config(bind, tmp_path / "state")) as thread:
        yield bind, thread


def test_debian_miltertest_client(milter):
    """An independent MTA side: libmilter's miltertest running tests/miltertest/probe.lua."""
    if shutil.which("miltertest") is None:
        pytest.skip("miltertest is not installed (Debian package miltertest)")
    bind, _ = milter
    script = Path(__file__).parent / "miltertest" / "probe.lua"
    port = bind.rpartition(":")[2]
    result = subprocess.run(["miltertest", "-D", f"port={port}", "-s", str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout


def test_negotiation_asks_for_edits_and_fewer_round_trips(milter):
    bind, _ = milter
    with MilterClient(bind) as client:
        reply = client.negotiate()
    assert reply.version == 6
    for flag in ("NR_CONNECT", "NR_HELO", "NR_HEADER", "NR_BODY", "NO_DATA", "NO_EOH"):
        assert ProtocolFlags[flag] in reply.protocol_flags
    assert ProtocolFlags.HEADER_LEADING_SPACE in reply.protocol_flags
    assert reply.macros  # {auth_authen} asked for at MAIL, "i" at end of message


def test_an_mta_without_no_reply_options_gets_an_answer_to_every_event(milter):
    with MilterClient(milter[0]) as client:
        reply = client.negotiate(ProtocolFlags.HEADER_LEADING_SPACE)
        assert reply.protocol_flags == ProtocolFlags.HEADER_LEADING_SPACE
        for event in (Connect("mx.example", IPv4Address("192.0.2.7"), 4567),
                      Helo("mx.example"), EnvelopeFrom(b"<a@dienbien.gov.vn>"),
                      EnvelopeRecipient(b"<b@dienbien.gov.vn>"),
                      *(Header(n, v.encode()) for n, v in HEADERS), Body(b"Hi\r\n")):
            assert isinstance(client.answer(event), Continue), event
        assert isinstance(client.answer(EndOfMessage(b"")), Continue)


def test_clean_message_is_accepted_unchanged(milter):
    with open_session(milter[0]) as client:
        answers = send_message(client, "hello")
    assert [type(a) for a in answers] == [Continue]


def test_reject_at_end_of_message_carries_bilingual_reply(milter):
    with open_session(milter[0]) as client:
        answers = send_message(client, "please REJECT")
    text = reply_text(answers[-1])
    assert text.startswith("550-5.7.1 ")
    assert "Probe REJECT (Article 9)" in text
    assert "Tham do REJECT (Dieu 9)" in text  # ASCII: the client did not ask for SMTPUTF8


def test_smtputf8_client_gets_vietnamese_with_diacritics(milter):
    with MilterClient(milter[0]) as client:
        client.negotiate()
        client.answer(Connect("mx.example", IPv4Address("192.0.2.7"), 4567))
        client.answer(EnvelopeFrom(b"<a@dienbien.gov.vn>", [b"SMTPUTF8"]))
        answers = send_message(client, "TEMPFAIL")
    text = reply_text(answers[-1])
    assert text.startswith("451-4.7.1 Thăm dò TEMPFAIL (Điều 9)")


def test_tag_becomes_added_header_with_auth_login(milter):
    with open_session(milter[0], auth="nguyenvana") as client:
        answers = send_message(client, "TAG me")
    assert isinstance(answers[-1], Continue)
    added = [a for a in answers if isinstance(a, AddHeader)]
    assert [(a.name, bytes(a.value)) for a in added] == [
        ("X-Probe", b" tagged; auth=nguyenvana")]


def test_convert_replaces_body_and_changes_headers(milter):
    with open_session(milter[0]) as client:
        answers = send_message(client, "CONVERT me", b"Tieng Viet\r\n",
                               [("Content-Type", " text/plain; charset=x-probe")])
    edits = {type(a): a for a in answers}
    assert isinstance(answers[-1], Continue)
    assert bytes(edits[ReplaceBody].content) == "Tiếng Việt\r\n".encode()
    changes = [(c.index, c.name, bytes(c.value)) for c in answers if isinstance(c, ChangeHeader)]
    assert (1, "Subject", b" converted me") in changes
    assert (1, "Content-Type", b" text/plain; charset=utf-8") in changes


def test_per_recipient_rejection_keeps_the_others(milter):
    with open_session(milter[0]) as client:
        blocked = client.answer(EnvelopeRecipient(b"<blocked1@dienbien.gov.vn>"))
        assert "Recipient blocked1@dienbien.gov.vn blocked" in reply_text(blocked)
        answers = send_message(client, "hello")  # b@ is accepted, the message goes on
    assert isinstance(answers[-1], Continue)


def test_reject_at_mail(milter):
    with MilterClient(milter[0]) as client:
        client.negotiate()
        client.answer(Connect("mx.example", IPv4Address("192.0.2.7"), 4567))
        answer = client.answer(EnvelopeFrom(b"<reject-mail@example.org>"))
    assert reply_text(answer).startswith("550-5.7.1 Nguoi gui bi chan (Dieu 9)")


def test_refusal_at_connect_is_given_with_our_text_at_every_command(milter):
    with MilterClient(milter[0]) as client:
        client.negotiate()
        assert client.answer(Connect("bad.example", IPv4Address("192.0.2.66"), 4567)) is None
        for event in (EnvelopeFrom(b"<a@example.org>"), EnvelopeRecipient(b"<b@example.org>")):
            assert reply_text(client.answer(event)).startswith("550-5.7.1 May khach bi chan")


def test_slow_check_keeps_postfix_waiting_with_progress(tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    config = milter_config(bind, tmp_path)
    config.milter.progress_interval = 0.1
    with MilterThread(config), open_session(bind) as client:
        assert isinstance(send_message(client, "SLOW")[-1], Continue)  # the check takes 0.5 s
        assert client.progress >= 3


def test_connections_past_max_connections_are_closed(tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    config = milter_config(bind, tmp_path)
    config.milter.max_connections = 1
    with MilterThread(config), open_session(bind) as first:
        with MilterClient(bind) as second:
            with pytest.raises(ConnectionError):
                second.negotiate()
        assert isinstance(send_message(first, "hello")[-1], Continue)


def test_policy_dependency_down_is_a_tempfail(milter):
    with open_session(milter[0]) as client:
        answers = send_message(client, "DEPENDENCY-DOWN")
    assert reply_text(answers[-1]).startswith("451-4.3.0 ")


def test_size_policy_sees_declared_size(tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    config = milter_config(bind, tmp_path, server={"max_message_size": 2048})
    with MilterThread(config), MilterClient(bind) as client:
        client.negotiate()
        client.answer(Connect("mx.example", IPv4Address("192.0.2.7"), 4567))
        answer = client.answer(EnvelopeFrom(b"<a@dienbien.gov.vn>", [b"SIZE=99999"]))
        assert reply_text(answer).startswith("552-5.3.4 ")
        # and the real size, without SIZE=: refused at end of message, not buffered
        client.answer(EnvelopeFrom(b"<a@dienbien.gov.vn>"))
        client.answer(EnvelopeRecipient(b"<b@dienbien.gov.vn>"))
        client.send(Header("Subject", b" big"), *[Body(b"x" * 1000)] * 4)
        answer = client.answer(EndOfMessage(b""))
        assert reply_text(answer).startswith("552-5.3.4 Thu qua lon")


def test_unix_socket(tmp_path):
    path = tmp_path / "milter.sock"
    config = milter_config(f"unix:{path}", tmp_path)
    with MilterThread(config):
        assert oct(path.stat().st_mode & 0o777) == "0o660"
        with open_session(f"unix:{path}") as client:
            answers = send_message(client, "REJECT")
        assert isinstance(answers[-1], ReplyCode)
    assert not path.exists()


def test_many_connections_at_once(milter):
    clients = [open_session(milter[0]) for _ in range(30)]
    try:
        for client in clients:
            assert isinstance(send_message(client, "hello")[-1], Continue)
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x00",  # zero length
    b"\xff\xff\xff\xffO",  # absurd length
    struct.pack("!L", 3) + b"Zab",  # unknown command
    struct.pack("!L", 4) + b"O\x00\x00\x00",  # truncated negotiation
    struct.pack("!L", 4) + b"C\x00\x00\x00",  # connect without address family
    struct.pack("!L", 3) + b"r\x00\x00",  # a filter's reply sent by the "MTA"
])
def test_malformed_packets_close_that_connection_only(milter, garbage):
    bind, _ = milter
    survivor = open_session(bind)  # a session already open stays usable
    with MilterClient(bind, timeout=5) as bad:
        bad.send_raw(garbage)
        with pytest.raises((ConnectionError, socket.timeout)):
            bad.recv()
    with survivor:
        assert isinstance(send_message(survivor, "hello")[-1], Continue)
    with open_session(bind) as fresh:  # and new connections are served
        assert isinstance(send_message(fresh, "REJECT")[-1], ReplyCode)


def test_silent_or_stalled_connection_is_closed_after_idle_timeout(tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    config = milter_config(bind, tmp_path)
    config.milter.idle_timeout = 0.3
    with MilterThread(config), MilterClient(bind) as client:
        client.send_raw(struct.pack("!L", 13) + b"O")  # half a packet, then nothing
        with pytest.raises(ConnectionError):
            client.recv()


def test_close_ends_the_session(milter):
    with open_session(milter[0]) as client:
        client.send(Close())
        with pytest.raises(ConnectionError):
            client.recv()


def test_message_edits_delete_and_add():
    original = b"A: 1\r\nB: x\r\nB: y\r\nC: folded\r\n  more\r\n\r\nbody\r\n"
    final = b"X-New: t\r\nA: 1\r\nB: x\r\nC: folded\r\n  changed\r\n\r\nbody\r\n"
    edits = message_edits(original, final, leading_space=True)
    assert [(type(e).__name__, getattr(e, "index", None), e.name, bytes(e.value))
            for e in edits] == [
        ("AddHeader", None, "X-New", b" t"),
        ("ChangeHeader", 2, "B", b""),
        ("ChangeHeader", 1, "C", b" folded\n  changed"),
    ]


@pytest.mark.parametrize("bind,error", [
    ("unix:relative.sock", "expected unix:/absolute/path"),
    ("8894", "expected HOST:PORT"),
])
def test_bind_is_validated(bind, error):
    with pytest.raises(ConfigError, match=error):
        from_dict({"milter": {"bind": bind}})


def test_bind_accepts_postfix_spelling():
    assert from_dict({"milter": {"bind": "inet:127.0.0.1:8894"}}).milter.bind == "127.0.0.1:8894"

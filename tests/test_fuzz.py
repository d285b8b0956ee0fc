"""Random command and packet sequences against both fronts, for a bounded time: no
crash, no hang, no reply that breaks the protocol, and the server keeps serving.

hypothesis drives a real relay over a socket (the SMTP front) and a real milter
server in this process (the milter codec and session), with examples kept few
enough for CI (`max_examples`, a deadline per example).
"""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.milter.codec import MalformedPacket, decode_packet
from tests.fixtures.relayproc import Relay, free_port
from tests.milter_helpers import MilterThread, milter_config

REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -][\x20-\x7e]*\r\n$")
UTF8_REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -][^\x00-\x1f\x7f]*\r\n$")

words = st.sampled_from([
    b"EHLO x", b"HELO x", b"MAIL FROM:<a@example.org>", b"MAIL FROM:<>",
    b"MAIL FROM:<a@example.org> SIZE=999999999999", b"MAIL FROM:<a@dienbien.gov.vn> SMTPUTF8",
    b"RCPT TO:<an@dienbien.gov.vn>", b"RCPT TO:<x@gmail.com>", b"RCPT TO:<a\x00b@x>",
    b"RSET", b"NOOP", b"VRFY a", b"HELP", b"AUTH PLAIN AGFAAGI=", b"AUTH LOGIN",
    b"STARTTLS", b"DATA", b"BDAT 10 LAST", b"ETRN x", b"\xff\xfe\x00", b"",
    b"MAIL FROM:<" + b"a" * 600 + b"@x>", b"X" * 2000,
])
bodies = st.sampled_from([
    b"Subject: x\r\n\r\nhi\r\n.\r\n", b"\r\n.\r\n", b".\r\n", b"a\nb\r\n.\r\n",
    b"Subject: =?utf-8?b?DQo=?=\r\n\r\nx\r\n.\r\n", b"..\r\n.\r\n",
])


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    r = Relay(directory, {"server": {"max_errors": 1000, "max_noop": 1000,
                                     "idle_timeout": 10, "max_connections_per_ip": 0},
                          "policies": {"headers": {}, "attachments": {}, "tcvn6909": {},
                                       "webmail": {}}}).start()
    yield r
    r.stop()


def well_formed(line: bytes, utf8: bool) -> bool:
    if REPLY_LINE.match(line):
        return True
    if not utf8 or not UTF8_REPLY_LINE.match(line):
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def replies(f, expect_data: bool = False) -> list[bytes]:
    out = []
    while True:
        line = f.readline()
        if not line:
            return out
        out.append(line)
        if line[3:4] != b"-":
            return out


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(words, st.binary(max_size=80)), min_size=1, max_size=12), bodies)
def test_smtp_front_survives_random_sessions(relay, commands, body):
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=15) as s:
        f = s.makefile("rb")
        greeting = replies(f)
        assert greeting and REPLY_LINE.match(greeting[-1])
        utf8 = False  # RFC 6531: UTF-8 replies only once a MAIL asked for SMTPUTF8
        for command in commands:
            s.sendall(command.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
            utf8 = utf8 or (command[:4].upper() == b"MAIL" and b"SMTPUTF8" in command.upper())
            got = replies(f)
            if not got:
                break  # the server hung up (421 first, or after QUIT-like limits): allowed
            if got[-1].startswith(b"354"):
                s.sendall(body)
                got += replies(f)
            for line in got:
                assert well_formed(line, utf8), line
    # and it serves the next client
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=15) as s:
        f = s.makefile("rb")
        assert replies(f)[-1].startswith(b"220")
        s.sendall(b"EHLO check\r\n")
        assert replies(f)[-1].startswith(b"250")


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=255), st.binary(max_size=200))
def test_milter_packet_decoder_raises_only_malformed(ident, payload):
    try:
        decode_packet(ident, payload)
    except MalformedPacket:
        pass


@pytest.fixture(scope="module")
def milter(tmp_path_factory):
    bind = f"127.0.0.1:{free_port()}"
    state: Path = tmp_path_factory.mktemp("milter-fuzz")
    with MilterThread(milter_config(bind, state)) as thread:
        yield bind, thread


packet_idents = st.sampled_from(list(b"OCHMLRAENDBTUQKX!") + [0, 255])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(packet_idents, st.binary(max_size=120)), min_size=1, max_size=10))
def test_milter_session_survives_random_packets(milter, packets):
    bind, _ = milter
    host, _, port = bind.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        for ident, payload in packets:
            try:
                s.sendall(struct.pack("!LB", len(payload) + 1, ident) + payload)
            except OSError:
                break  # closed by the server: allowed for malformed input
        data = b""
        try:
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):  # every answer is well framed, then EOF (no hang)
                data += chunk
        except OSError:
            pass  # reset by the server after malformed input
    while data:
        (length,) = struct.unpack_from("!L", data)
        assert 1 <= length <= len(data) - 4
        data = data[4 + length:]
    # the server accepts the next connection and negotiates
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(struct.pack("!LBLLL", 13, ord("O"), 6, 0x1FF, 0x1FFFFF))
        assert s.recv(5)[4:5] == b"O"

"""`rspamd`: a running Rspamd (private, on loopback) asked over /checkv2; its action
mapped to findings; Rspamd down, silent or answering nonsense is a temporary failure."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest

from policies.rspamd import RspamdError, parse_answer
from tests.antispam_helpers import LOCAL, codes, message, transact
from tests.fixtures.rspamd import GTUBE

RCPT = f"annv@{LOCAL}"
SENDER = "a@company.test"


HEAD = (f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: Meeting on Monday\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n")
CLEAN = (HEAD + "Date: Sat, 05 Dec 2026 09:00:00 +0000\r\nMessage-ID: <m1@company.test>\r\n"
         "\r\nHello, see you on Monday at nine.\r\n").encode()
# no Date:, no Message-ID: MISSING_DATE + MISSING_MID, 3.5 points: over add_header (3)
SLOPPY = (HEAD + "\r\nHello, see you on Monday at nine.\r\n").encode()


def spam() -> bytes:
    return message(SENDER, RCPT, body=GTUBE.decode() + "\n")


async def run(url: str, raw: bytes, client_ip: str = "", helo: str = "", **options):
    return await transact({"rspamd": {"url": url, **options}}, "127.0.0.1:9", SENDER, [RCPT],
                          raw, client_ip=client_ip, helo=helo)


async def test_gtube_is_rejected_with_rspamds_reason(rspamd):
    tx, out = await run(rspamd.url, spam())
    assert out.verdict.outcome == "reject"
    assert (out.verdict.reply.code, out.verdict.reply.status) == (554, "5.7.1")
    assert "Message classified as spam (Rspamd: 15/15; Gtube pattern)" in \
        out.verdict.reply.render()
    [d] = tx.decisions
    assert d.finding.code == "rspamd.reject" and "GTUBE" in d.finding.details["symbols"]


async def test_clean_message_passes(rspamd):
    tx, out = await run(rspamd.url, CLEAN)
    assert out.verdict.outcome == "accept" and codes(tx) == []


async def test_add_header_is_a_tag(rspamd):
    tx, out = await run(rspamd.url, SLOPPY, client_ip="192.0.2.1", helo="mail.company.test")
    assert out.verdict.outcome == "accept"
    assert [(d.finding.code, d.action.value) for d in tx.decisions] == [
        ("rspamd.add_header", "tag")]
    assert b"\r\nX-Spam: Yes; score=" in b"\r\n" + out.data


async def test_rspamd_down_tempfails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    tx, out = await run(f"http://127.0.0.1:{port}", spam())
    assert out.verdict.outcome == "tempfail" and out.verdict.reply.code == 451
    assert codes(tx) == ["rspamd.temperror"]


async def test_silent_rspamd_tempfails_within_the_timeout():
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        t0 = time.monotonic()
        tx, out = await run(f"http://127.0.0.1:{listener.getsockname()[1]}", spam(),
                            timeout="1s")
    assert time.monotonic() - t0 < 5
    assert codes(tx) == ["rspamd.temperror"]
    assert "within 1s" in tx.decisions[0].finding.details["error"]


def test_hostile_answers_are_errors():
    good = b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"action": "reject"}'
    assert parse_answer(good)["action"] == "reject"
    for bad in (b"HTTP/1.1 500 Oops\r\n\r\n{}", b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
                b"HTTP/1.1 200 OK\r\n\r\nnot json", b"HTTP/1.1 200 OK\r\n\r\n[1]",
                b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}",
                b"HTTP/1.1 200 OK\r\n\r\n" + b" " * (5 * 1024 * 1024)):
        with pytest.raises((RspamdError, ValueError)):
            parse_answer(bad)


async def test_client_values_cannot_split_the_request():
    """A real listener records the request: the HELO's CR/LF never starts a header."""
    got: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:  # read it all: closing on unread bytes sends a RST
            body += conn.recv(65536)
        got.append(data)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{"action": "no action"}')
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        tx, out = await run(f"http://127.0.0.1:{listener.getsockname()[1]}",
                            message(SENDER, RCPT), client_ip="192.0.2.1",
                            helo="evil\r\nRcpt: victim@dienbien.gov.vn")
    finally:
        await asyncio.to_thread(thread.join, 5)
        listener.close()
    assert out.verdict.outcome == "accept"
    head = got[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"Helo: evilRcpt: victim@dienbien.gov.vn" in head
    assert [h for h in head if h.startswith(b"Rcpt:")] == [f"Rcpt: {RCPT}".encode()]

"""The backend client (relay.delivery.StreamBackend) against Postfix's smtp-sink, a real
server that offers PIPELINING: messages arrive whole and once, on a reused session, and
a session the server closed while it was idle costs no message."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.delivery import _LEADING_DOT, _LINE_ENDINGS, StreamBackend, crlf, dot_stuffed
from relay.model import new_id
from relay.spool import QueueEnvelope
from tests.fixtures.relayproc import free_port, wait_for

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


class SmtpSink:
    """`smtp-sink -d`: every transaction dumped to a file (envelope as X-*-Args lines)."""

    def __init__(self, directory: Path) -> None:
        self.dir, self.port = directory, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.chmod(0o777)  # smtp-sink writes as nobody when started as root

    def start(self) -> None:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([SMTP_SINK, *user, "-d", f"{self.dir}/%M.",
                                      f"127.0.0.1:{self.port}", "64"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("smtp-sink did not start")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None

    def dumps(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dir.iterdir())]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    if not Path(SMTP_SINK).exists():
        pytest.skip("smtp-sink (Debian package postfix) is not installed")
    # not under pytest's tmp_path: its parents are closed to the user smtp-sink runs as
    dumps = Path(tempfile.mkdtemp(prefix="relay-smtp-sink-"))
    sink = SmtpSink(dumps)
    sink.start()
    yield sink
    sink.stop()
    shutil.rmtree(dumps, ignore_errors=True)


MESSAGE = (b"From: an@example.org\nSubject: pipelined %d\n\n"
           b".a line that begins with a dot\nbare LF line ends\r\nlast line")


async def test_pipelined_messages_arrive_whole_and_once(smtp_sink: SmtpSink):
    backend = StreamBackend("127.0.0.1", smtp_sink.port, "mail.dienbien.gov.vn", 10, 2,
                            lmtp=False)
    recipients = ["ubnd@dienbien.gov.vn", "vanthu@dienbien.gov.vn"]

    async def send(i: int) -> None:
        env = QueueEnvelope(queue_id=new_id(), sender="an@example.org", recipients=recipients)
        results = await backend.deliver(env, MESSAGE % i, recipients)
        assert [r.status for r in results.values()] == ["delivered", "delivered"], results

    for i in range(3):
        await send(i)
    [session] = backend._idle  # one session carried all three
    assert "PIPELINING" in session.extensions
    # the server goes away and comes back: the idle session is dead; the message is not
    smtp_sink.stop()
    smtp_sink.start()
    await send(3)
    await backend.close()

    dumps = wait_for(lambda: len(smtp_sink.dumps()) == 4 and smtp_sink.dumps(), timeout=10)
    assert sorted(int(d.split(b"Subject: pipelined ")[1][:1]) for d in dumps) == [0, 1, 2, 3]
    for dump in dumps:
        assert dump.count(b"X-Rcpt-Args: ") == 2
        assert b"X-Mail-Args: <an@example.org>" in dump
        # dot-stuffed on the wire: the server's unstuffing gives the line back (the dump
        # has the server's own line ends)
        assert b"\n\n.a line that begins with a dot\nbare LF line ends\nlast line\n" in dump


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"xy"]),
                max_size=40).map(b"".join))
def test_the_wire_form_is_what_the_substitutions_would_make(data: bytes):
    """crlf() and dot_stuffed() skip their substitutions when counting shows nothing to
    change: the result must be the one the substitutions give, for any mix of endings."""
    ended = _LINE_ENDINGS.sub(b"\r\n", data)
    ended = ended if ended.endswith(b"\r\n") else ended + b"\r\n"
    assert crlf(data) == ended
    assert dot_stuffed(ended) == _LEADING_DOT.sub(b"..", ended)


# --- faults a real server cannot be made to show -------------------------------------------
HOSTILE = {
    # greets, then never answers EHLO: the timeout ends it
    "hangs": [b"220 hostile ESMTP\r\n"],
    # a reply that never ends: bounded by line count, not by memory
    "endless": [b"220 hostile ESMTP\r\n"] + [b"250-PIPELINING\r\n"] * 5000,
    # one line longer than the reader's limit
    "long line": [b"220 " + b"x" * 200_000 + b"\r\n"],
    # not SMTP at all, with a terminal escape in it
    "garbage": [b"HTTP/1.1 400 Bad\x1b[2J\r\n"],
}


@pytest.mark.parametrize("mode", list(HOSTILE))
async def test_a_broken_backend_is_a_temporary_failure_bounded_in_time_and_text(mode: str):
    import asyncio

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in HOSTILE[mode]:
            writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(30)  # and then nothing
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = StreamBackend("127.0.0.1", port, "mail.dienbien.gov.vn", 1.0, 1, lmtp=False)
    env = QueueEnvelope(queue_id=new_id(), sender="an@example.org", recipients=["u@x.org"])
    started = time.monotonic()
    results = await backend.deliver(env, MESSAGE % 0, ["u@x.org"])
    elapsed = time.monotonic() - started
    assert elapsed < 5
    [result] = results.values()
    if mode == "endless":  # ended by the bound on lines, before the 1 s timeout
        assert "more than 100 lines" in result.reply and elapsed < 0.9, (elapsed, result)
    assert result.status == "temporary", result
    assert len(result.reply) < 400 and "\x1b" not in result.reply, result.reply
    assert backend._idle == []  # a broken session is not kept
    await backend.close()
    server.close()

"""A hostile message costs one worker, never the relay (issue 9).

The relay runs the DATA stage in worker processes with budgets. These tests run
the real relay process on loopback and show: other clients are served while a
message is being inspected for a long time; a message over the wall-time or
memory budget, or whose worker dies, gets 451 and the relay keeps serving; the
hostile messages that once froze the relay (a quadratic header, zip bombs) get
their reply quickly.
"""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.relayproc import wait_for
from tests.hostile import bzip2_bomb, many_members_zip, quadratic_header

PLUGINS = str(Path(__file__).parent / "plugins")
RCPT = "an@dienbien.gov.vn"


def message(subject: str) -> bytes:
    return (f"From: a@example.org\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
            "Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <m@example.org>\r\n\r\n"
            "Kinh gui.\r\n").encode()


def start(relay_factory, tmp_path: Path, **inspection: object):
    return relay_factory(
        server={"policy_dirs": [PLUGINS]},
        inspection={"workers": 1, "max_workers": 4, **inspection},
        policies={"headers": {}, "attachments": {}, "tcvn6909": {},
                  "budget_probe": {"pid_file": str(tmp_path / "busy.pid")}})


def send(port: int, raw: bytes, timeout: float = 60) -> tuple[int, str, float]:
    """(code, text, seconds) of the reply after DATA."""
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
        client.ehlo("client.example.org")
        client.mail("a@example.org")
        client.rcpt(RCPT)
        code, text = client.data(raw)
    return code, text.decode("utf-8", "replace"), time.monotonic() - t0


def in_background(port: int, raw: bytes) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(send(port, raw)), daemon=True)
    thread.start()
    return thread, out


def test_others_are_served_while_a_message_burns_cpu(relay_factory, tmp_path):
    relay = start(relay_factory, tmp_path, timeout=60)
    burners = [in_background(relay.mx, message("BURN 8")) for _ in range(2)]
    wait_for(lambda: (tmp_path / "busy.pid").exists(), timeout=10)
    for _ in range(3):
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
            greeted = time.monotonic() - t0
            assert client.ehlo("other.example.org")[0] == 250
            ehlo = time.monotonic() - t0
            client.mail("b@example.org")
            client.rcpt(RCPT)
            assert client.data(message("hello"))[0] == 250
            done = time.monotonic() - t0
        assert greeted < 2 and ehlo < 2 and done < 2, (greeted, ehlo, done)
    for thread, out in burners:
        thread.join(30)
        assert out and out[0][0] == 250  # slow, within its budget: accepted


def test_over_the_time_budget_the_worker_is_killed_and_the_message_gets_451(
        relay_factory, tmp_path):
    relay = start(relay_factory, tmp_path, timeout=2)
    code, text, seconds = send(relay.mx, message("BURN 60"))
    assert code == 451 and seconds < 10, (code, text, seconds)
    assert "Checking the message took too long" in text
    pid = int((tmp_path / "busy.pid").read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    assert send(relay.mx, message("hello"))[0] == 250  # and the relay keeps serving
    [entry] = [d for d in relay.decisions() if d["action"] == "tempfail"]
    assert entry["findings"][-1]["code"] == "inspection.timeout"


def test_over_the_memory_budget_gives_451(relay_factory, tmp_path):
    relay = start(relay_factory, tmp_path, max_memory="300MiB")
    code, text, _ = send(relay.mx, message("HOG"))
    assert code == 451 and "needed too much memory" in text, text
    assert send(relay.mx, message("hello"))[0] == 250


def test_budget_action_is_configurable(relay_factory, tmp_path):
    relay = start(relay_factory, tmp_path, timeout=2, actions={"inspection.timeout": "reject"})
    code, _, _ = send(relay.mx, message("BURN 60"))
    assert code == 554


@pytest.mark.parametrize("how", ["killed from outside", "dies by itself"])
def test_a_worker_that_dies_mid_inspection_is_a_451_never_an_accept(
        relay_factory, tmp_path, how):
    relay = start(relay_factory, tmp_path, timeout=60)
    if how == "killed from outside":
        thread, out = in_background(relay.mx, message("BURN 30"))
        wait_for(lambda: (tmp_path / "busy.pid").exists(), timeout=10)
        os.kill(int((tmp_path / "busy.pid").read_text()), signal.SIGKILL)
        thread.join(20)
        code, text, _ = out[0]
    else:
        code, text, _ = send(relay.mx, message("CRASH"))
    assert code == 451 and "4.7.0" in text, text
    assert not relay.maildir(RCPT)
    assert send(relay.mx, message("hello"))[0] == 250
    assert len(wait_for(lambda: relay.maildir(RCPT))) == 1


@pytest.mark.parametrize("build", [quadratic_header, many_members_zip, bzip2_bomb],
                         ids=["quadratic header", "100k-member zip", "bzip2 bomb"])
def test_hostile_messages_get_their_reply_quickly(relay_factory, tmp_path, build):
    """Each of these once froze the relay's only event loop (20-86 s, or 27 s of CPU)."""
    relay = start(relay_factory, tmp_path)
    raw = build()
    thread, out = in_background(relay.mx, raw)
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        assert client.ehlo("other.example.org")[0] == 250
        assert time.monotonic() - t0 < 2
    thread.join(30)
    code, text, seconds = out[0]
    assert code in (250, 550, 554) and seconds < 30, (code, text, seconds)

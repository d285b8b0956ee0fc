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


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mib(pid: int) -> int:
    """Resident memory of a process and all its descendants (fronts, fork server, workers)."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total // 1024


def large_message(seed: int, size: int = 18 * 1024 * 1024) -> bytes:
    """About 25 MB on the wire: an 18 MB attachment (a scanned report, say) in base64."""
    import base64
    import random

    data = base64.encodebytes(random.Random(seed).randbytes(size)).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: an@dienbien.gov.vn\r\nSubject: big\r\n"
            b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nBao cao\r\n--XX\r\n"
            b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64"
            b"\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n" + data + b"--XX--\r\n")


@pytest.mark.slow
def test_four_parallel_25mb_messages_cost_less_than_400mb(relay_factory):
    relay = relay_factory(policies={"headers": {}, "attachments": {}, "tcvn6909": {},
                                    "webmail": {}})
    messages = [large_message(i) for i in range(5)]
    assert all(24_000_000 < len(m) < 26_214_400 for m in messages)
    assert send(relay.mx, messages[4])[0] == 250  # warm: every process has done one
    wait_for(lambda: relay.maildir(RCPT), timeout=30)
    time.sleep(1)
    base = peak = rss_mib(relay.proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mib(relay.proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    senders = [in_background(relay.mx, m) for m in messages[:4]]
    for thread, _ in senders:
        thread.join(120)
    wait_for(lambda: len(relay.maildir(RCPT)) == 5, timeout=60)
    stop.set()
    sampler.join()
    assert [out[0][0] for _, out in senders] == [250] * 4
    assert peak - base < 400, f"RSS grew by {peak - base} MiB (from {base} MiB)"

"""Several front processes on the same listeners (issue 9): every core serves SMTP,
one queue runner delivers, limits and metrics count for the whole relay, a killed
front loses nothing and comes back."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.relayproc import free_port, metrics_page, wait_for

RCPT = "an@dienbien.gov.vn"


def message(n: int) -> bytes:
    return (f"From: a@example.org\r\nTo: {RCPT}\r\nSubject: n{n}\r\n"
            f"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <n{n}@example.org>\r\n\r\n"
            "Kinh gui.\r\n").encode()


def fronts(relay) -> list[int]:
    """The front processes: the supervisor's children started by multiprocessing's spawn."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if (int(stat.rpartition(")")[2].split()[1]) == relay.proc.pid
                and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline):
            out.append(int(entry))
    return sorted(out)


def send_many(port: int, numbers: range, sessions: int = 5) -> set[int]:
    """Send each numbered message; the numbers that got 250 (errors are expected when a
    front is killed under them)."""
    accepted: set[int] = set()
    lock = threading.Lock()

    def session(mine: list[int]) -> None:
        client = None
        for n in mine:
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", port, timeout=20)
                client.sendmail("a@example.org", [RCPT], message(n))
                with lock:
                    accepted.add(n)
            except (smtplib.SMTPException, OSError):
                client = None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass

    threads = [threading.Thread(target=session, args=(list(numbers)[i::sessions],))
               for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return accepted


def delivered(relay) -> list[int]:
    import re

    return [int(m.group(1)) for raw in relay.maildir(RCPT)
            if (m := re.search(rb"Subject: n(\d+)", raw))]


def test_two_fronts_serve_and_one_runner_delivers_each_message_once(relay_factory):
    port = free_port()
    relay = relay_factory(server={"workers": 2, "metrics_bind": f"127.0.0.1:{port}"})
    assert len(fronts(relay)) == 2
    accepted = send_many(relay.mx, range(60), sessions=6)
    assert accepted == set(range(60))
    wait_for(lambda: len(delivered(relay)) >= 60, timeout=30)
    assert sorted(delivered(relay)) == list(range(60))
    log = relay.log.read_text()
    assert "relay.maillog.smtpd[front1]: " in log and "relay.maillog.smtpd[front2]: " in log
    accepted = 'relay_transactions_total{action="accept",listener="mx"} 60.0'
    assert accepted in metrics_page(port, accepted)


def test_sigkill_of_a_front_loses_no_accepted_message(relay_factory):
    relay = relay_factory(server={"workers": 2})
    victim = fronts(relay)[0]
    killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
    killer.start()
    accepted = send_many(relay.mx, range(300), sessions=6)
    killer.join()
    assert len(accepted) > 0
    wait_for(lambda: set(delivered(relay)) >= accepted, timeout=60)
    got = delivered(relay)
    assert set(got) >= accepted, f"accepted, never delivered: {sorted(accepted - set(got))}"
    assert len(got) == len(set(got)), "a message was delivered twice"
    # the supervisor started another front, and the relay serves on
    wait_for(lambda: len(fronts(relay)) == 2 and victim not in fronts(relay), timeout=30)
    assert send_many(relay.mx, range(1000, 1005)) == set(range(1000, 1005))
    assert "front 1 exited" in relay.log.read_text() or "front 2 exited" in relay.log.read_text()


def test_connection_limits_hold_across_fronts(relay_factory):
    relay = relay_factory(server={"workers": 2, "max_connections": 8,
                                  "max_connections_per_ip": 5})
    held = []

    def connect(source: str) -> tuple[socket.socket, bytes]:
        s = socket.create_connection(("127.0.0.1", relay.mx), timeout=10,
                                     source_address=(source, 0))
        held.append(s)
        return s, s.makefile("rb").readline()

    try:
        greetings = [connect("127.0.0.1")[1] for _ in range(12)]
        served = [g for g in greetings if g.startswith(b"220")]
        refused = [g for g in greetings if g.startswith(b"421")]
        assert len(served) == 5 and len(refused) == 7, greetings
        assert refused[0].startswith(b"421-4.7.0 Qua nhieu ket noi dong thoi tu dia chi")
        # another client is still served, up to the relay-wide limit
        other = [connect("127.0.0.2")[1] for _ in range(4)]
        assert [g[:3] for g in other] == [b"220"] * 3 + [b"421"]
    finally:
        for s in held:
            s.close()
    # closed sessions are counted out again, on every front
    time.sleep(1)
    assert send_many(relay.mx, range(5)) == set(range(5))


def test_reload_reaches_every_front(relay_factory):
    relay = relay_factory(server={"workers": 2})
    no_date = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"

    def refused() -> int:
        n = 0
        for _ in range(8):
            with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
                try:
                    client.sendmail("a@example.org", [RCPT], no_date)
                except smtplib.SMTPDataError:
                    n += 1
        return n

    assert refused() == 8
    text = relay.config_path.read_text()
    relay.config_path.write_text(text + '\n[policies.headers]\naction = "log"\n')
    relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: relay.log.read_text().count("configuration reloaded") >= 3, timeout=30)
    assert refused() == 0


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_supervisor_stopped_while_its_fronts_start_leaves_no_process(relay_factory, sig):
    """SIGKILL while the fronts are still starting: their "ready" meets a closed
    channel, and they stop (they used to serve on, orphaned, holding the port).
    SIGTERM then (systemctl stop during start-up): a graceful stop, exit status 0
    (the default action used to kill the supervisor alone)."""
    relay = relay_factory(start=False, server={"workers": 2})
    relay.start_process()  # not waiting for the pid file: the fronts are starting
    assert relay.proc is not None
    seen = wait_for(lambda: len(fronts(relay)) == 2 and descendants(relay.proc.pid),
                    timeout=30, interval=0.01)
    assert not (relay.state / "relay.pid").exists(), "too late: the relay was ready"
    relay.proc.send_signal(sig)
    status = relay.proc.wait(60)
    assert status == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    left = wait_for(lambda: not any(alive(p) for p in seen) or None, timeout=30)
    assert left, [p for p in seen if alive(p)]
    if sig == signal.SIGTERM:
        assert "relay ready" not in relay.log.read_text()

"""Durability and delivery: kill -9 with mail queued, retries, DSNs, the queue CLI."""

from __future__ import annotations

import json
import smtplib
import threading
import time

from relay.dsn import parse_dsn_recipients
from tests.fixtures.relayproc import wait_for
from tests.fixtures.sink import Sink

MSG = (b"From: an@example.org\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: queue test %d\r\n"
       b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <q%d@example.org>\r\n\r\n"
       b"body %d\r\n")


def send_many(port: int, count: int, sessions: int = 5, first: int = 0) -> set[int]:
    """Send `count` messages over `sessions` concurrent connections; return the ones that got 250."""
    accepted: set[int] = set()
    lock = threading.Lock()

    def worker(offset: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                for i in range(first + offset, first + count, sessions):
                    client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], MSG % (i, i, i))
                    with lock:
                        accepted.add(i)
        except (smtplib.SMTPException, OSError):
            pass  # the relay was killed under us: what got 250 is what counts

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return accepted


def numbers(sink: Sink) -> set[int]:
    out = set()
    for m in sink.messages:
        for line in m.data.split(b"\r\n"):
            if line.startswith(b"Subject: queue test "):
                out.add(int(line.rsplit(b" ", 1)[1]))
    return out


def test_kill9_with_backend_down_loses_nothing(relay_factory, idle_sink):
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1", "port": idle_sink.port})
    accepted = send_many(relay.mx, 40)
    assert len(accepted) == 40
    relay.kill9()

    # a second run of load, killed in the middle of its sessions
    relay.start()
    active = relay.state / "queue" / "active"

    def kill_in_the_middle() -> None:  # once the second run has queued some of its load
        wait_for(lambda: sum(1 for p in active.iterdir() if p.suffix != ".json") >= 50,
                 timeout=60, interval=0.02)
        relay.kill9()

    killer = threading.Thread(target=kill_in_the_middle)
    killer.start()
    accepted |= send_many(relay.mx, 200, first=1000)
    killer.join()
    assert len(accepted) > 40

    relay.start()
    idle_sink.start()
    wait_for(lambda: accepted <= numbers(idle_sink), timeout=30)
    missing = accepted - numbers(idle_sink)
    assert not missing, f"accepted but never delivered: {sorted(missing)}"
    # and the queue drains
    assert wait_for(lambda: relay.cli("queue", "list", "--json").stdout == b"", timeout=15)


def test_permanent_failure_bounces_once_to_the_sender(relay_factory, sink):
    sink.handler.refuse["gone@dienbien.gov.vn"] = "550 5.1.1 no such mailbox"
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1", "port": sink.port},
                          server={"trusted_networks": ["127.0.0.0/8"]})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail("an@dienbien.gov.vn", ["gone@dienbien.gov.vn", "ubnd@dienbien.gov.vn"],
                        MSG % (1, 1, 1))
        client.sendmail("", ["gone@dienbien.gov.vn"], MSG % (2, 2, 2))  # null sender
    wait_for(lambda: len(sink.messages) >= 2)
    time.sleep(1.5)
    bounces = [m for m in sink.messages if m.sender in ("", "<>")]
    normal = [m for m in sink.messages if m.sender == "an@dienbien.gov.vn"]
    assert [m.recipients for m in normal] == [["ubnd@dienbien.gov.vn"]]
    assert len(bounces) == 1, "one DSN, and none for the null-sender message"
    assert bounces[0].recipients == ["an@dienbien.gov.vn"]
    assert parse_dsn_recipients(bounces[0].data) == [("gone@dienbien.gov.vn", "5.1.1")]
    assert b"multipart/report" in bounces[0].data


def test_temporary_failure_retries_then_expires_with_a_dsn(relay_factory, idle_sink, sink):
    relay = relay_factory(
        backend={"kind": "smtp", "host": "127.0.0.1", "port": idle_sink.port},
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        queue={"max_queue_lifetime": 3, "min_backoff": 0.5, "max_backoff": 1, "scan_interval": 1},
    )
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], MSG % (3, 3, 3))
    # deferred while the backend is down, with the reason shown the postqueue -j way
    entry = wait_for(lambda: [json.loads(line) for line in
                              relay.cli("queue", "list", "--json").stdout.splitlines()
                              if b'"deferred"' in line])
    assert entry[0]["recipients"][0]["address"] == "ubnd@dienbien.gov.vn"
    assert "delay_reason" in entry[0]["recipients"][0]
    assert set(entry[0]) >= {"queue_name", "queue_id", "arrival_time", "message_size", "sender"}
    [dsn] = wait_for(lambda: sink.messages, timeout=20)
    assert dsn.sender in ("", "<>") and dsn.recipients == ["an@example.org"]
    assert parse_dsn_recipients(dsn.data)[0][0] == "ubnd@dienbien.gov.vn"


def test_hold_release_delete(relay_factory, idle_sink):
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1", "port": idle_sink.port})
    send_many(relay.mx, 3, sessions=1)
    ids = [json.loads(line)["queue_id"]
           for line in relay.cli("queue", "list", "--json").stdout.splitlines()]
    assert len(ids) == 3
    out = relay.cli("queue", "hold", ids[0])
    assert out.returncode == 0
    held = [json.loads(line) for line in relay.cli("queue", "list", "--json").stdout.splitlines()]
    assert {e["queue_id"]: e["queue_name"] for e in held}[ids[0]] == "hold"
    assert relay.cli("queue", "delete", "-", input=ids[1].encode() + b"\n").returncode == 0
    shown = relay.cli("queue", "show", ids[2])
    assert b"Subject: queue test" in shown.stdout
    idle_sink.start()
    relay.cli("queue", "flush")
    wait_for(lambda: len(idle_sink.messages) == 1)
    time.sleep(1)
    assert len(idle_sink.messages) == 1  # held one waits, deleted one is gone
    relay.cli("queue", "release", "ALL")
    wait_for(lambda: len(idle_sink.messages) == 2)
    assert numbers(idle_sink) == {0, 2}
    assert relay.cli("queue", "delete", "NOPE").returncode == 1

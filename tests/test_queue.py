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


def send_many(port: int, count: int, sessions: int = 5, first: int = 0,
              accepted: set[int] | None = None) -> set[int]:
    """Send `count` messages over `sessions` concurrent connections; return the ones that
    got 250 (also added to `accepted` as they come, when given)."""
    accepted = set() if accepted is None else accepted
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
    second: set[int] = set()

    def kill_in_the_middle() -> None:  # once the second run has some of its load accepted
        wait_for(lambda: len(second) >= 10, timeout=60, interval=0.01)
        relay.kill9()

    killer = threading.Thread(target=kill_in_the_middle)
    killer.start()
    send_many(relay.mx, 200, first=1000, accepted=second)
    killer.join()
    assert 10 <= len(second) < 200
    accepted |= second

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


async def test_a_deferred_backlog_waits_while_due_and_new_mail_goes_out(tmp_path, sink):
    """The runner keeps its schedule as a heap (a backlog used to be walked whole at every
    wake: bench/queue_backlog.py measures that). What is due goes, at once and once;
    what is deferred stays untouched until its time."""
    import asyncio

    from relay.config import from_dict
    from relay.delivery import Router
    from relay.model import new_id
    from relay.runner import QueueRunner
    from relay.spool import QueueEnvelope, Spool

    config = from_dict({"server": {"state_dir": str(tmp_path), "local_domains": ["example.org"]},
                        "backend": {"kind": "smtp", "host": "127.0.0.1", "port": sink.port},
                        "queue": {"concurrency": 3}})
    spool = Spool(config.spool_path)

    async def queue(n: int, next_attempt: float | None) -> str:
        env = QueueEnvelope(queue_id=new_id(), sender="a@example.org",
                            recipients=["b@example.org"])
        await spool.put(env, MSG % (n, n, n))
        if next_attempt is not None:
            state = {"attempts": 1, "next_attempt": next_attempt, "recipients": {}}
            spool.state_path(env.queue_id).write_text(json.dumps(state))
        return env.queue_id

    deferred = [await queue(n, time.time() + 3600) for n in range(300)]
    for n in range(300, 310):  # due already: the runner's first scan finds them
        await queue(n, time.time() - 60)
    runner = QueueRunner(config, spool, Router(config))
    running = asyncio.create_task(runner.run())
    try:
        new = await queue(999, None)
        runner.submit(new)
        for _ in range(200):
            if len(sink.messages) >= 11:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # nothing more may come
        got = [int(m.data.split(b"queue test ")[1].split(b"\r")[0]) for m in sink.messages]
        assert sorted(got) == [*range(300, 310), 999]
        assert set(spool.ids()) == set(deferred)
        assert all(json.loads(spool.state_path(q).read_text())["attempts"] == 1
                   for q in deferred[:20])
        # an administrator makes one of them due (what `relay queue flush` leads to)
        state = {"attempts": 1, "next_attempt": 0, "recipients": {}}
        spool.state_path(deferred[7]).write_text(json.dumps(state))
        runner.rescan()
        for _ in range(100):
            if len(sink.messages) == 12:
                break
            await asyncio.sleep(0.05)
        assert b"queue test 7\r" in sink.messages[-1].data and len(sink.messages) == 12
        assert deferred[7] not in set(spool.ids())
    finally:
        await runner.stop()
        running.cancel()
        spool.close()

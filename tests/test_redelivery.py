"""Issue 10, item 1: a recipient no backend can store never makes the queue deliver the
others again and again. Refused at RCPT; and if one is in the queue anyway (queued by an
older version), or a backend fails in a way nobody planned, the failure is a
per-recipient result, saved, retried with backoff and ended by the queue lifetime."""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path
from typing import Any

from relay.config import from_dict
from relay.delivery import Result, Router
from relay.dsn import parse_dsn_recipients
from relay.model import new_id
from relay.runner import LARGE_MESSAGE, QueueRunner
from relay.spool import QueueEnvelope, Spool
from tests.fixtures.relayproc import wait_for
from tests.fixtures.sink import Sink

MSG = (b"From: an@example.org\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: once\r\n"
       b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <once@example.org>\r\n\r\n"
       b"exactly one copy\r\n")
# as shipped: recipient_exists only logs, so an unknown local recipient passes it
SHIPPED = {"headers": {}, "recipient_exists": {"action": "log"}}


def test_a_name_that_is_no_mailbox_is_refused_at_rcpt(relay_factory: Any):
    relay = relay_factory(policies=SHIPPED)
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.ehlo("mx.example.org")
        client.mail("an@example.org")
        code, text = client.rcpt("x/y@dienbien.gov.vn")
        assert code == 553 and b"5.1.3" in text
        assert client.rcpt(".hidden@dienbien.gov.vn")[0] == 501  # no dot-atom
        assert client.rcpt('"u b"@dienbien.gov.vn')[0] == 553  # quoted: no mailbox name
        assert client.rcpt("ubnd@dienbien.gov.vn")[0] == 250
        code, _ = client.data(MSG)
        assert code == 250
    assert len(wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))) == 1
    assert not (relay.state / "mail" / "x").exists()


def queue_directly(state: Path, sender: str, recipients: list[str], data: bytes) -> str:
    """A message as an older relay (or a crash between checks) left it in the spool."""
    spool = Spool(state / "queue")
    env = QueueEnvelope(queue_id=new_id(), sender=sender, recipients=recipients)
    asyncio.run(spool.put(env, data))
    spool.close()
    return env.queue_id


def test_a_queued_unstorable_recipient_bounces_once_and_the_other_gets_one_copy(
        relay_factory: Any, sink: Sink):
    relay = relay_factory(start=False, policies=SHIPPED,
                          outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
                          queue={"min_backoff": 0.3, "max_backoff": 0.5, "scan_interval": 0.5})
    queue_directly(relay.state, "an@example.org",
                   ["x/y@dienbien.gov.vn", "ubnd@dienbien.gov.vn"], MSG)
    relay.start()
    [dsn] = wait_for(lambda: sink.messages, timeout=20)
    assert dsn.recipients == ["an@example.org"]
    assert parse_dsn_recipients(dsn.data) == [("x/y@dienbien.gov.vn", "5.1.3")]
    time.sleep(3)  # six backoff periods: on main the good recipient got a copy in each
    assert len(relay.maildir("ubnd@dienbien.gov.vn")) == 1
    assert len(sink.messages) == 1
    assert wait_for(lambda: relay.cli("queue", "list", "--json").stdout == b"", timeout=10)


# --- faults a real backend cannot be made to show ---------------------------------------
class ExplodingBackend:
    """A backend with a bug: it raises what nobody catches (a TypeError, say)."""

    def __init__(self) -> None:
        self.calls = 0

    async def deliver(self, env: QueueEnvelope, data: bytes, recipients: list[str]
                      ) -> dict[str, Result]:
        self.calls += 1
        raise TypeError("a bug in the backend")

    async def close(self) -> None:
        pass


def _runner(tmp_path: Path, sink: Sink, lifetime: float) -> tuple[QueueRunner, Spool]:
    config = from_dict({
        "server": {"state_dir": str(tmp_path / "var"), "hostname": "mail.dienbien.gov.vn"},
        "outbound": {"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        "queue": {"max_queue_lifetime": lifetime, "min_backoff": 0.2, "max_backoff": 0.4,
                  "scan_interval": 0.5},
    })
    spool = Spool(config.spool_path)
    return QueueRunner(config, spool, Router(config)), spool


async def _run_until(runner: QueueRunner, done: Any, timeout: float) -> None:
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await runner.stop()
    task.cancel()


async def test_a_backend_exception_is_a_saved_temporary_result_until_the_lifetime(
        tmp_path: Path, sink: Sink):
    runner, spool = _runner(tmp_path, sink, lifetime=2.5)
    broken = ExplodingBackend()
    runner.router.local = broken
    env = QueueEnvelope(queue_id=new_id(), sender="an@example.org",
                        recipients=["ubnd@dienbien.gov.vn", "partner@example.net"])
    await spool.put(env, MSG)
    runner.submit(env.queue_id)
    states = []

    def finished() -> bool:
        try:
            states.append(spool.load_state(env.queue_id))
        except KeyError:
            return True
        return False

    await _run_until(runner, finished, timeout=20)
    assert finished(), "the queue lifetime ends the message"
    # the remote recipient got one copy; the local one a bounce after the lifetime
    copies = [m for m in sink.messages if m.sender == "an@example.org"]
    bounces = [m for m in sink.messages if m.sender in ("", "<>")]
    assert [m.recipients for m in copies] == [["partner@example.net"]]
    assert len(bounces) == 1 and parse_dsn_recipients(bounces[0].data)[0][0] == \
        "ubnd@dienbien.gov.vn"
    # each failed attempt was saved, with its reason, and backed off
    saved = [s for s in states if s.attempts]
    assert saved and max(s.attempts for s in saved) >= 2
    assert "internal error" in saved[-1].recipients["ubnd@dienbien.gov.vn"].reason
    assert 2 <= broken.calls <= 15  # backoff, not a tight loop
    await runner.router.close()
    spool.close()


async def test_state_that_cannot_be_saved_never_means_a_second_copy(tmp_path: Path,
                                                                     sink: Sink):
    """The disk refuses the state file for a while: the delivered recipient is not
    delivered again, the other is retried, and all ends once the disk is back."""
    runner, spool = _runner(tmp_path, sink, lifetime=60)
    refused = {"count": 0}
    save = spool.save_state

    def failing_save(qid: str, state: Any) -> None:
        if refused["count"] < 4:
            refused["count"] += 1
            raise OSError(28, "No space left on device")
        save(qid, state)

    spool.save_state = failing_save  # type: ignore[method-assign]
    sink.handler.refuse["later@example.net"] = "451 4.3.0 try later"
    env = QueueEnvelope(queue_id=new_id(), sender="an@example.org",
                        recipients=["now@example.net", "later@example.net"])
    await spool.put(env, MSG)
    runner.submit(env.queue_id)

    def fixed() -> bool:
        if refused["count"] >= 4:
            sink.handler.refuse.clear()
        return any(m.recipients == ["later@example.net"] for m in sink.messages)

    await _run_until(runner, fixed, timeout=20)
    got = [r for m in sink.messages for r in m.recipients]
    assert got.count("now@example.net") == 1, got
    assert got.count("later@example.net") == 1, got
    await runner.router.close()
    spool.close()


async def test_a_delivered_message_leaves_neither_queue_nor_state_file(tmp_path: Path,
                                                                       sink: Sink):
    """Delivered at once (no state file was written: none is looked for), after a retry
    (the state file goes with it), after `queue flush` wrote one, and a message over the
    large-message size: nothing of any of them stays in the spool."""
    runner, spool = _runner(tmp_path, sink, lifetime=60)
    sink.handler.refuse["later@example.net"] = "451 4.3.0 try later"
    ids = {}
    for name, rcpt, data in (("at once", "now@example.net", MSG),
                             ("retried", "later@example.net", MSG),
                             ("flushed", "flushed@example.net", MSG),
                             ("large", "large@example.net",
                              MSG + b"x" * 70 + b"\r\n" * (LARGE_MESSAGE // 72 + 1))):
        env = QueueEnvelope(queue_id=new_id(), sender="an@example.org", recipients=[rcpt])
        await spool.put(env, data)
        ids[name] = env.queue_id
    spool.save_state(ids["flushed"], spool.load_state(ids["flushed"]))  # as `queue flush`
    for qid in ids.values():
        runner.submit(qid)

    def delivered() -> bool:
        got = {r for m in sink.messages for r in m.recipients}
        if "now@example.net" in got:
            sink.handler.refuse.clear()  # the retry succeeds
        return len(got) == 4 and not list(spool.active.iterdir())

    await _run_until(runner, delivered, timeout=20)
    assert delivered(), ([m.recipients for m in sink.messages], list(spool.active.iterdir()))
    assert len(sink.messages) == 4  # one copy each
    await runner.router.close()
    spool.close()

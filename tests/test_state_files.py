"""Issue 10, item 11: the smaller promises. A stale relay.pid never makes `relay queue`
signal another process, `queue delete` takes queue ids only, the directory cache has a
bound, and state files are private whatever the umask of whoever creates them."""

from __future__ import annotations

import json
import os
import smtplib
import stat
import subprocess
from pathlib import Path
from typing import Any

from relay import pidfile
from relay.config import from_dict
from relay.directory import DirectoryStore
from relay.spool import Spool
from tests.fixtures.relayproc import wait_for
from tests.fixtures.sink import Sink

MSG = (b"From: an@example.org\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: files\r\n"
       b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <files@example.org>\r\n\r\n"
       b"body\r\n")


def test_flush_does_not_signal_what_a_stale_pid_file_names(relay_factory: Any):
    relay = relay_factory(start=False)
    Spool(relay.state / "queue").close()
    # the relay died without removing relay.pid; its number now belongs to another
    # process (SIGUSR1's default action would terminate it)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (relay.state / "relay.pid").write_text(f"{bystander.pid}\n")
        out = relay.cli("queue", "flush")
        assert bystander.poll() is None, "the bystander was signalled"
        assert out.returncode == 0
        assert b"names no running relay" in out.stderr
    finally:
        bystander.kill()
        bystander.wait()
    # a running relay is recognised (and signalled) as before
    relay.start()
    assert relay.proc is not None
    assert pidfile.running_relay(relay.state / "relay.pid") == relay.proc.pid
    assert b"names no running relay" not in relay.cli("queue", "flush").stderr


def test_queue_delete_takes_queue_ids_only(relay_factory: Any, idle_sink: Sink):
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1",
                                   "port": idle_sink.port})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], MSG)
    [entry] = wait_for(lambda: [json.loads(line) for line in
                                relay.cli("queue", "list", "--json").stdout.splitlines()
                                if b'"deferred"' in line])
    qid = entry["queue_id"]
    queue_file = relay.state / "queue" / "active" / qid
    state_file = queue_file.with_name(f"{qid}.json")
    assert queue_file.exists() and state_file.exists()
    for wrong in (f"{qid}.json", f"../active/{qid}", f".{qid}.json.tmp"):
        out = relay.cli("queue", "delete", wrong)
        assert out.returncode == 64 and b"not a queue id" in out.stderr, wrong  # EX_USAGE
    assert queue_file.exists() and state_file.exists()
    assert relay.cli("queue", "delete", qid).returncode == 0
    assert not queue_file.exists() and not state_file.exists()


async def test_directory_cache_is_bounded_and_keeps_the_recent(tmp_path: Path):
    config = from_dict({"server": {"state_dir": str(tmp_path / "var")},
                        "directory": {"cache_size": 200}})
    store = DirectoryStore(config)
    await store.mailbox("kept@dienbien.gov.vn")
    for n in range(2000):  # unknown addresses, as a dictionary attack sends them
        assert await store.mailbox(f"nobody{n}@dienbien.gov.vn") is None
        if n % 50 == 0:
            await store.mailbox("kept@dienbien.gov.vn")  # used now and then: stays
        assert len(store._cache) <= 200
    hits = store.hits
    await store.mailbox("kept@dienbien.gov.vn")
    assert store.hits == hits + 1
    misses = store.misses
    await store.mailbox("nobody0@dienbien.gov.vn")  # long evicted
    assert store.misses == misses + 1
    await store.aclose()


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")] if not p.is_symlink()}


def test_state_files_are_private_whatever_the_umask(relay_factory: Any):
    old = os.umask(0)  # the worst case: every file would be world-writable
    try:
        # no certificate configured: the relay makes its own key, which must be private too
        relay = relay_factory(start=False, server={"tls_cert": "", "tls_key": ""})
        # the administrator's first command creates directory.db (argon2 hashes)
        out = relay.cli("directory", "agency", "add", "stttt", "--name", "Sở TT&TT",
                        "--basis", "QĐ 1")
        assert out.returncode == 0, out.stderr
        out = relay.cli("directory", "mailbox", "add", "annv@dienbien.gov.vn", "--kind",
                        "personal", "--agency", "stttt", "--name", "Nguyễn Văn An",
                        "--basis", "QĐ 2")
        assert out.returncode == 0, out.stderr
        relay.start()
        with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
            client.sendmail("an@example.org", ["ubnd@dienbien.gov.vn"], MSG)
        wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
        found = modes(relay.state)
    finally:
        os.umask(old)
    assert found["directory.db"] == 0o600
    assert found["tls/key.pem"] == 0o600
    assert found["log/decisions.jsonl"] == 0o640
    assert found["relay.pid"] == 0o640
    mail = [m for name, m in found.items() if name.startswith("mail/ubnd@") and "/new/" in name]
    assert mail and all(m == 0o600 for m in mail)
    loose = {name: oct(m) for name, m in found.items() if m & 0o007 or m & 0o020}
    assert not loose, f"readable or writable by others, or group-writable: {loose}"

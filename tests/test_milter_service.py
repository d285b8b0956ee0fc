"""`relay milter` as a process (notify, reload, stop), its decision log and the archive hook."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from kilter.protocol import Continue, EnvelopeRecipient, ReplyCode

from relay.archive import Filters
from relay.config import from_dict
from tests.fixtures.relayproc import free_port, metrics_page, relay_env, to_toml
from tests.milter_helpers import (
    POLICY_DIR,
    MilterThread,
    milter_config,
    open_session,
    reply_text,
    send_message,
)


def archived_config(bind: str, tmp_path: Path):
    """The probe policy, and a.@ (the test sender) archived as an opt-in mailbox."""
    return from_dict({
        "server": {"policy_dirs": [str(POLICY_DIR)], "state_dir": str(tmp_path)},
        "milter": {"bind": bind},
        "archive": {"mailboxes": ["a@dienbien.gov.vn"], "blob_store": "database"},
        "policies": {"headers": {}, "probe": {}},
    })


def test_accepted_mail_is_archived_before_postfix_takes_it(tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    with MilterThread(archived_config(bind, tmp_path)) as thread:
        with open_session(bind) as client:
            assert isinstance(send_message(client, "TAG")[-1], Continue)
            assert isinstance(send_message(client, "REJECT")[-1], ReplyCode)
        archive = thread.runtime.services.archive
        assert archive is not None
        [entry] = archive.search(Filters())  # the refused message is not archived
        accepted = archive.read_blob(entry["accepted_hash"], entry["accepted_size"])
        delivered = archive.read_blob(entry["delivered_hash"], entry["delivered_size"])
    assert entry["sender"] == "a@dienbien.gov.vn" and entry["direction"] == "out"
    assert b"X-Probe" not in accepted and b"X-Probe: tagged" in delivered


def test_archive_failure_is_a_temporary_failure(tmp_path):
    """The archive's database loses its entry table under a running milter."""
    bind = f"127.0.0.1:{free_port()}"
    with MilterThread(archived_config(bind, tmp_path)) as thread:
        archive = thread.runtime.services.archive
        assert archive is not None
        with archive.db.begin() as conn:
            conn.execute(sa.text("DROP TABLE archive_entry"))
        with open_session(bind) as client:
            answer = send_message(client, "hello")[-1]
    assert reply_text(answer).startswith("451-4.3.0 ")
    assert "Could not archive official-mailbox mail" in reply_text(answer)


def test_decision_log_has_one_line_per_transaction(tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    log = tmp_path / "decisions.jsonl"
    with MilterThread(milter_config(bind, tmp_path), decisions=log):
        with open_session(bind, auth="nguyenvana") as client:
            send_message(client, "REJECT")
        with open_session(bind) as client:
            client.answer(EnvelopeRecipient(b"<blocked@dienbien.gov.vn>"))
            send_message(client, "TAG")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["listener"], e["action"], e["auth"]) for e in lines] == [
        ("milter", "reject", "nguyenvana"), ("milter", "accept", None)]
    assert [f["code"] for f in lines[0]["findings"]] == ["probe.reject"]
    assert [(f["code"], f["recipient"]) for f in lines[1]["findings"]] == [
        ("probe.reject", "blocked@dienbien.gov.vn"), ("probe.tag", None)]
    assert lines[1]["rcpt_to"] == ["b@dienbien.gov.vn"]


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    return sock


def _until(sock: socket.socket, word: str) -> str:
    while True:
        message = sock.recv(4096).decode()
        if word in message:
            return message


def test_relay_milter_process_notifies_reloads_and_stops(tmp_path):
    milter_sock = tmp_path / "milter.sock"
    config = tmp_path / "relay.toml"

    metrics_port = free_port()

    def write_config(probe_reject: str) -> None:
        config.write_text(to_toml({
            "server": {"state_dir": "var", "policy_dirs": [str(POLICY_DIR)]},
            "milter": {"bind": f"unix:{milter_sock}", "metrics_bind": f"127.0.0.1:{metrics_port}"},
            "policies": {"headers": {}, "probe": {"actions": {"probe.reject": probe_reject}}},
        }))

    write_config("reject")
    notify = _notify_socket(tmp_path / "notify")
    env = {**relay_env(), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = subprocess.Popen([sys.executable, "-m", "relay", "milter", "-c", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert "READY=1" in _until(notify, "READY=1")
        with open_session(f"unix:{milter_sock}") as client:
            assert reply_text(send_message(client, "REJECT")[-1]).startswith("550-")
        write_config("tempfail")  # the administrator softens the rule and reloads
        proc.send_signal(signal.SIGHUP)
        _until(notify, "RELOADING=1")
        _until(notify, "READY=1")
        with open_session(f"unix:{milter_sock}") as client:
            assert reply_text(send_message(client, "REJECT")[-1]).startswith("451-")
        lines = [f'relay_transactions_total{{action="{action}",listener="milter"}} 1.0'
                 for action in ("reject", "tempfail")]
        exposition = metrics_page(metrics_port, *lines)
        for line in lines:
            assert line in exposition
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "STOPPING=1" in _until(notify, "STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert not milter_sock.exists()
    decisions = (tmp_path / "var" / "log" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(d)["action"] for d in decisions] == ["reject", "tempfail"]


def test_relay_milter_bad_config_exits_78(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text('[milter]\nbind = "unix:relative.sock"\n')
    result = subprocess.run([sys.executable, "-m", "relay", "milter", "-c", str(config)],
                            env=relay_env(), capture_output=True, timeout=60)
    assert result.returncode == 78
    assert b"milter.bind: expected unix:/absolute/path" in result.stderr


def test_relay_milter_port_in_use_exits_69(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "relay.toml"
        config.write_text(f'[server]\nstate_dir = "var"\n[milter]\nbind = "127.0.0.1:{port}"\n')
        result = subprocess.run([sys.executable, "-m", "relay", "milter", "-c", str(config)],
                                env=relay_env(), capture_output=True, timeout=60)
    assert result.returncode == 69  # EX_UNAVAILABLE
    assert f"relay: cannot listen on 127.0.0.1:{port} (milter.bind)".encode() in result.stderr
    assert b"Traceback" not in result.stderr


MILTER_UNIT = Path(__file__).resolve().parents[1] / "systemd" / "relay-milter.service"

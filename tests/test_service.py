"""Operating the relay: SIGHUP reload, systemd notifications, journald log prefixes."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time

import pytest

from tests.fixtures.relayproc import ROOT, metrics_page, relay_env, wait_for

NO_DATE = b"From: an@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def test_sighup_reloads_and_refuses_a_broken_file(relay_factory):
    relay = relay_factory()
    text = relay.config_path.read_text()
    session = smtplib.SMTP("127.0.0.1", relay.mx, timeout=10)
    session.ehlo("x")
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        try:
            client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], NO_DATE)
            raise AssertionError("headers policy should reject a message without Date:")
        except smtplib.SMTPDataError as err:
            assert err.smtp_code == 550

    # monitor mode for headers: a valid new file takes effect without dropping the session
    relay.config_path.write_text(text + '\n[policies.headers]\naction = "log"\n')
    relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b"configuration reloaded" in relay.log.read_bytes())
    assert session.noop()[0] == 250  # the open session survived the reload...
    with pytest.raises(smtplib.SMTPDataError):  # ...and keeps the configuration it began with
        session.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], NO_DATE)
    session.quit()
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:  # a new one has the new
        client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], NO_DATE)

    # a broken file is refused, logged, and the running configuration stays
    relay.config_path.write_text(text + "\n[policies.headers]\nbogus = 1\n")
    relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b"reload refused" in relay.log.read_bytes())
    assert b"policies.headers.bogus: unknown key" in relay.log.read_bytes()
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], NO_DATE)  # still monitor
    assert relay.proc.poll() is None


def test_sd_notify_ready_reloading_stopping_and_journal_prefixes(tmp_path, relay_factory):
    relay = relay_factory(start=False)
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(15)
    env = relay_env() | {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "-c",
                             str(relay.config_path)], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        messages = []
        while not any(m.startswith(b"READY=1") for m in messages):
            messages.append(sock.recv(4096))
        assert any(b"WATCHDOG=1" in m for m in [sock.recv(4096) for _ in range(2)])
        proc.send_signal(signal.SIGHUP)
        while not sock.recv(4096).startswith(b"RELOADING=1"):
            pass
        while sock.recv(4096) != b"READY=1":  # watchdog pings may come in between
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        deadline = time.monotonic() + 5
        rest = []
        sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                rest.append(sock.recv(4096))
            except TimeoutError:
                break
        assert b"STOPPING=1" in rest
        stderr = proc.stderr.read().decode()
        assert "<6>relay: relay ready" in stderr  # journald reads the level from <N>
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_prometheus_metrics(relay_factory):

    from tests.fixtures.relayproc import free_port

    port = free_port()
    relay = relay_factory(server={"metrics_bind": f"127.0.0.1:{port}"})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        try:
            client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], NO_DATE)
        except smtplib.SMTPDataError:
            pass
    reject = 'relay_transactions_total{action="reject",listener="mx"} 1.0'
    finding = ('relay_findings_total{action="reject",code="headers.missing",'
               'policy="headers"} 1.0')
    text = metrics_page(port, reject, finding)
    assert reject in text and finding in text
    assert "relay_queue_messages 0.0" in text

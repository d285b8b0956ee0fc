"""Logs an MTA admin can read (issue 14, item 7): Postfix-shaped lines that the real
`pflogsumm` summarises, the decision log rotated by the real `logrotate` without
copytruncate, and a start without noise."""

from __future__ import annotations

import json
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.maillog import clean, delivered, dsn_of, reply_text
from relay.model import Reply
from tests.fixtures.relayproc import wait_for
from tests.test_directory_smtp import DOMAIN, PASSWORD, seed, submission

ROOT = Path(__file__).resolve().parents[1]
PFLOGSUMM = shutil.which("pflogsumm") or (
    "/usr/sbin/pflogsumm" if Path("/usr/sbin/pflogsumm").exists() else None)
LOGROTATE = shutil.which("logrotate") or (
    "/usr/sbin/logrotate" if Path("/usr/sbin/logrotate").exists() else None)

GOOD = (b"From: partner@example.org\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: log\r\n"
        b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <log1@example.org>\r\n\r\nhi\r\n")
NO_DATE = GOOD.replace(b"Date:", b"X-Date:")


class SyslogSocket:
    """A unix datagram socket where the relay's syslog handler sends, as to /dev/log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.received.append(self.sock.recv(65536).decode())
            except (TimeoutError, BlockingIOError):
                return self.received

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[SyslogSocket]:
    path = Path("/tmp") / f"relay-syslog-{tmp_path.name[-20:]}-{time.monotonic_ns()}.sock"
    s = SyslogSocket(path)
    yield s
    s.close()
    path.unlink(missing_ok=True)


def as_mail_log(datagrams: list[str], host: str = "mx1") -> str:
    """What rsyslog writes to /var/log/mail.log for these datagrams (and journalctl
    prints): `Mon DD HH:MM:SS host TAG[PID]: message`."""
    stamp = time.strftime("%b %e %H:%M:%S")
    out = []
    for d in datagrams:
        match = re.match(r"^<(\d+)>(.*)$", d, re.S)
        assert match, d
        assert int(match.group(1)) >> 3 == 2, d  # facility mail, as Postfix logs
        out.append(f"{stamp} {host} {match.group(2).rstrip()}")
    return "\n".join(out) + "\n"


def test_postfix_shaped_lines_that_pflogsumm_reads(relay_factory, syslog):
    relay = relay_factory(server={"mail_log": "syslog", "syslog_socket": str(syslog.path)})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.ehlo("client.example.org")
        client.sendmail("partner@example.org", ["ubnd@dienbien.gov.vn"], GOOD)
        with pytest.raises(smtplib.SMTPDataError):  # no Date: refused after DATA
            client.sendmail("partner@example.org", ["ubnd@dienbien.gov.vn"], NO_DATE)
        client.mail("partner@example.org")
        code, _ = client.rcpt("someone@example.com")  # relaying without AUTH
        assert code == 554
        client.rset()
    # a hostile HELO: control characters and angle brackets never reach the log raw
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as raw:
        raw.recv(1024)
        raw.sendall(b"EHLO evil\x1b[2J<x>\r\nMAIL FROM:<a@example.org>\r\n"
                    b"RCPT TO:<b@example.com>\r\nQUIT\r\n")
        while raw.recv(4096):
            pass
    wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    lines = wait_for(lambda: [d for d in syslog.drain() if ": removed" in d] and syslog.received)
    text = "\n".join(lines)
    [accepted] = [d for d in json.loads("[" + ",".join(
        (relay.state / "log" / "decisions.jsonl").read_text().splitlines()) + "]")
        if d["action"] == "accept"]
    qid = accepted["queue_id"]
    assert re.search(rf"relay/smtpd\[\d+\]: {qid}: client=unknown\[127\.0\.0\.1\]$", text, re.M)
    assert "relay/cleanup" in text and f"{qid}: message-id=<log1@example.org>" in text
    assert re.search(rf"relay/qmgr\[\d+\]: {qid}: from=<partner@example\.org>, size=\d+, "
                     r"nrcpt=1 \(queue active\)", text)
    assert re.search(rf"relay/local\[\d+\]: {qid}: to=<ubnd@dienbien\.gov\.vn>, relay=maildir, "
                     r"delay=[\d.]+, delays=[\d.]+/0/0/[\d.]+, dsn=2\.0\.0, status=sent \(250 ",
                     text)
    assert re.search(rf"relay/qmgr\[\d+\]: {qid}: removed", text)
    assert re.search(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 554 5\.7\.1 "
                     r"<someone@example\.com>: Khong cho phep chuyen tiep thu.* / Relay access "
                     r"denied.*; from=<partner@example\.org> to=<someone@example\.com> "
                     r"proto=ESMTP helo=<client\.example\.org>", text)
    assert re.search(r"NOQUEUE: reject: DATA from unknown\[127\.0\.0\.1\]: 550 5\.\d\.\d "
                     r"<DATA>: .*Date.*; from=<partner@example\.org> to=<ubnd@dienbien\.gov\.vn>",
                     text)
    assert "helo=<evil?[2J<x>>" in text and "\x1b" not in text

    if PFLOGSUMM is None:
        pytest.skip("pflogsumm not installed (Debian package pflogsumm)")
    report = subprocess.run([PFLOGSUMM, "--syslog-name=relay", "--problems-first"],
                            input=as_mail_log(lines).encode(), capture_output=True,
                            timeout=60, check=True).stdout.decode()
    totals = dict((m.group(2), int(m.group(1)))
                  for m in re.finditer(r"^\s+(\d+)\s+(received|delivered|rejected|deferred|"
                                       r"bounced)\b", report, re.M))
    assert totals["received"] == 1 and totals["delivered"] == 1, report
    assert totals["rejected"] == 3, report  # relay denied, no Date:, the evil client's RCPT
    # the reasons, grouped as for Postfix's own rejects
    assert re.search(r"^\s+RCPT\n\s+Khong cho phep .* Relay access denied.* \(total: 2\)$",
                     report, re.M), report
    assert re.search(r"^\s+DATA\n\s+.*Date.* \(total: 1\)$", report, re.M), report
    assert re.search(r"^\s+1\s+ubnd@dienbien\.gov\.vn$", report, re.M), report


def test_delivery_line_forms():
    assert dsn_of("temporary", "451 4.3.0 maildir write failed") == "4.3.0"
    assert dsn_of("permanent", "550 no such user") == "5.0.0"
    assert clean("a\x00b\r\nc d" + "x" * 400)[:8] == "a?b??c?d" and clean("x" * 400).endswith("...")
    assert reply_text(Reply(550, "5.7.1", ("Thư bị từ chối; lý do", "Refused"))) == \
        "550 5.7.1 Thu bi tu choi, ly do / Refused"


def test_relay_log_lines_for_deferred_and_bounced(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="relay.maillog")
    delivered("0123456789AB", "x@example.org", "temporary", "451 4.4.1 try later\r\n(x)",
              "smtp", "mx.example[192.0.2.1]:25", 65.25, 0.5)
    delivered("0123456789AB", "y@example.org", "permanent", "550 5.1.1 no such user",
              "lmtp", "127.0.0.1[127.0.0.1]:24", 1, 1)
    assert caplog.messages == [
        "0123456789AB: to=<x@example.org>, relay=mx.example[192.0.2.1]:25, delay=65.25, "
        "delays=64.75/0/0/0.5, dsn=4.4.1, status=deferred (451 4.4.1 try later (x))",
        "0123456789AB: to=<y@example.org>, relay=127.0.0.1[127.0.0.1]:24, delay=1, "
        "delays=0/0/0/1, dsn=5.1.1, status=bounced (550 5.1.1 no such user)"]


@pytest.mark.skipif(LOGROTATE is None, reason="logrotate not installed (Debian logrotate)")
def test_decision_log_rotated_by_logrotate_without_copytruncate(relay_factory, tmp_path):
    shipped = (ROOT / "systemd" / "relay.logrotate").read_text()
    assert "copytruncate" not in re.sub(r"#.*", "", shipped) and "SIGUSR2" in shipped
    relay = relay_factory(server={"mail_log": "off"})
    decisions = relay.state / "log" / "decisions.jsonl"
    # the shipped file with this test's path and process instead of systemd's
    assert relay.proc is not None
    config = shipped.replace("/var/lib/relay/log/decisions.jsonl", str(decisions))
    config = re.sub(r"systemctl kill .*", f"kill -USR2 {relay.proc.pid}", config)
    config = config.replace("create 0640 relay relay", "create 0640").replace(
        "delaycompress", "nocompress").replace("compress\n", "nocompress\n")
    (tmp_path / "logrotate.conf").write_text(config)

    def send(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
            client.sendmail("partner@example.org", ["ubnd@dienbien.gov.vn"],
                            GOOD.replace(b"log1@", f"rot{n}@".encode()))

    def ids(path: Path) -> list[str]:
        return [json.loads(line)["message_id"] for line in path.read_text().splitlines()]

    send(1)
    wait_for(lambda: decisions.exists() and ids(decisions))
    run = subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "state"),
                          str(tmp_path / "logrotate.conf")], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rotated = decisions.with_name("decisions.jsonl.1")
    assert ids(rotated) == ["<rot1@example.org>"]
    time.sleep(0.5)  # the signal is handled by the relay's event loop
    send(2)
    assert wait_for(lambda: decisions.exists() and ids(decisions)) == ["<rot2@example.org>"]
    assert ids(rotated) == ["<rot1@example.org>"]  # nothing written to the renamed file
    # SIGHUP reopens too (before it reloads the configuration)
    decisions.rename(decisions.with_name("by-hand.jsonl"))
    relay.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    send(3)
    assert wait_for(lambda: decisions.exists() and ids(decisions)) == ["<rot3@example.org>"]


def test_a_failed_reopen_keeps_every_front_serving(relay_factory):
    """Front processes reopen on the supervisor's word; one that cannot open the new
    file keeps the old one, and keeps answering (its control task once died)."""
    relay = relay_factory(server={"mail_log": "off", "workers": 2})
    decisions = relay.state / "log" / "decisions.jsonl"
    moved = decisions.with_name("moved.jsonl")

    def send(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
            client.sendmail("partner@example.org", ["ubnd@dienbien.gov.vn"],
                            GOOD.replace(b"log1@", f"re{n}@".encode()))

    def ids(path: Path) -> list[str]:
        return [json.loads(line)["message_id"] for line in path.read_text().splitlines()]

    send(1)
    wait_for(lambda: decisions.exists() and ids(decisions))
    decisions.rename(moved)
    decisions.mkdir()  # nothing can be opened by that name
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGUSR2)
    time.sleep(1)
    for n in range(2, 6):  # several connections: both fronts take some
        send(n)
    assert wait_for(lambda: len(ids(moved)) == 5)
    decisions.rmdir()
    relay.proc.send_signal(signal.SIGUSR2)  # and a later reopen still reaches them
    time.sleep(1)
    for n in range(6, 10):
        send(n)
    assert wait_for(lambda: decisions.exists() and len(ids(decisions)) == 4)


def test_undecodable_and_invisible_client_bytes_never_reach_a_line(relay_factory, syslog):
    """An undecodable byte (a lone surrogate once decoded) made the syslog line
    unencodable and lost it; U+2028 and bidi overrides passed into the line."""
    relay = relay_factory(server={"mail_log": "syslog", "syslog_socket": str(syslog.path)})
    message = GOOD.replace(b"<log1@example.org>",
                           "<a\u2028b\u202ec@example.org>".encode())
    with socket.create_connection(("127.0.0.1", relay.mx), timeout=10) as raw:
        f = raw.makefile("rb")

        def reply() -> bytes:
            while (line := f.readline())[3:4] == b"-":
                pass
            return line

        reply()
        raw.sendall(b"EHLO ev\xffil\xe2\x80\xaeX\r\n")
        reply()
        for command in (b"MAIL FROM:<partner@example.org> BODY=8BITMIME\r\n",
                        b"RCPT TO:<someone@example.com>\r\n",  # refused: NOQUEUE line
                        b"RCPT TO:<ubnd@dienbien.gov.vn>\r\n", b"DATA\r\n"):
            raw.sendall(command)
            reply()
        raw.sendall(message + b".\r\n")
        assert reply().startswith(b"250")
        raw.sendall(b"QUIT\r\n")
    wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    lines = wait_for(lambda: [d for d in syslog.drain() if ": removed" in d] and syslog.received)
    text = "\n".join(lines)
    assert "NOQUEUE: reject: RCPT" in text and "message-id=<a?b?c@example.org>" in text
    assert "helo=<ev?il?X>" in text
    for bad in ("\u2028", "\u202e", "\udcff", "\ufffd"):
        assert bad not in text


def test_without_syslog_the_lines_go_to_stderr_without_tracebacks(relay_factory, tmp_path):
    """No syslog daemon (a container, a CI machine): SysLogHandler connects lazily and
    then fails on every line; each failure printed a traceback (~1 ms of CPU a line)."""
    relay = relay_factory(server={"mail_log": "syslog",
                                  "syslog_socket": str(tmp_path / "no-syslog-here")})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        for _ in range(3):
            client.sendmail("partner@example.org", ["ubnd@dienbien.gov.vn"], GOOD)
    wait_for(lambda: relay.log.read_text().count(": removed") >= 3)
    log = relay.log.read_text()
    assert "no syslog at" in log
    assert "status=sent" in log and "Traceback" not in log, log[-3000:]


def test_a_start_without_noise(relay_factory):
    relay = relay_factory(start=False, directory={"auth_failure_delay": 0})
    seed(relay).close()
    relay.start()
    relay.stop()
    relay.log.write_bytes(b"")
    relay.start()  # the second start: the databases exist
    with submission(relay) as client:
        client.login(f"annv@{DOMAIN}", PASSWORD)
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps, timeout=10,
                          context=__import__("ssl")._create_unverified_context()) as client:
        client.login(f"annv@{DOMAIN}", PASSWORD)
    time.sleep(0.5)
    log = relay.log.read_text()
    assert "relay ready" in log
    for noise in ("Context impl", "Will assume", "login_data", "Requiring AUTH"):
        assert noise not in log, log


def test_the_milter_leaves_the_mail_log_to_postfix(caplog):
    import logging

    from relay.maillog import received
    from relay.model import Outcome, Transaction

    caplog.set_level(logging.INFO, logger="relay.maillog")
    refusal = Reply(550, "5.7.1", ("Từ chối", "Refused"))
    milter = Transaction(listener="milter", relay_checked=True, mail_from="a@example.org")
    milter.refused.append(("RCPT", "b@dienbien.gov.vn", refusal))
    received(milter, Outcome.REJECT, refusal)  # before end of message: no Postfix queue id
    assert caplog.messages == []
    front = Transaction(listener="mx", helo="pc\r\nfake: line", mail_from="a@example.org")
    front.refused.append(("RCPT", "b@dienbien.gov.vn\x00", refusal))
    received(front, Outcome.REJECT, refusal)
    assert caplog.messages == [
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.7.1 <b@dienbien.gov.vn?>: "
        "Tu choi / Refused; from=<a@example.org> to=<b@dienbien.gov.vn?> proto=ESMTP "
        "helo=<pc??fake:?line>"]

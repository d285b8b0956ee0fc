"""End to end: the relay process archives official mail before 250; the CLI finds it."""

from __future__ import annotations

import json
import smtplib
import time

import pytest

from tests.archive_helpers import OUTSIDE, PERSON, TIEPDAN, UBND, message
from tests.fixtures.relayproc import run_cli, wait_for

OPTED_IN = "binh.tran@dienbien.gov.vn"


def _send(port: int, sender: str, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.org")
        assert client.sendmail(sender, rcpts, data) == {}


def test_official_mail_archived_both_ways_over_smtp(relay_factory, sink, tmp_path):
    relay = relay_factory(
        start=False,
        server={"trusted_networks": ["127.0.0.0/8"]},  # lets the test relay outbound
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        archive={"mailboxes": [OPTED_IN], "checkpoint_every": 100},
    )
    keygen = relay.cli("archive", "keygen")
    assert keygen.returncode == 0, keygen.stderr
    relay.start()
    inbound = message(1, subject="Đơn kiến nghị về đất đai", sender=OUTSIDE, to=TIEPDAN)
    outbound = message(2, subject="Công văn trả lời công dân", sender=UBND, to=OUTSIDE)
    _send(relay.mx, OUTSIDE, [TIEPDAN], inbound)
    _send(relay.mx, UBND, [OUTSIDE], outbound)
    _send(relay.mx, PERSON, [OUTSIDE], message(3, sender=PERSON))  # personal: not archived
    _send(relay.mx, OUTSIDE, [PERSON], message(4, to=PERSON))  # personal: not archived
    _send(relay.mx, OUTSIDE, [OPTED_IN], message(5, to=OPTED_IN))  # personal, opted in

    log = relay.cli("archive", "log", "--json")
    assert log.returncode == 0, log.stderr
    entries = [json.loads(line) for line in log.stdout.splitlines()]
    assert [(e["mailbox"], e["direction"]) for e in entries] == [
        (TIEPDAN, "in"), (UBND, "out"), (OPTED_IN, "in")]
    assert entries[0]["subject"] == "Đơn kiến nghị về đất đai"
    assert entries[0]["meta"]["client"]["ip"] == "127.0.0.1"
    assert entries[0]["meta"]["client"]["helo"] == "client.example.org"

    found = relay.cli("archive", "log", "--mailbox", UBND)
    assert found.stdout.decode().count("\n") == 1 and "Công văn" in found.stdout.decode()

    shown = relay.cli("archive", "show", str(entries[0]["seq"]), "--reason", "kiểm tra")
    text = shown.stdout.decode()
    assert shown.returncode == 0, shown.stderr
    # the relay only added its trace header: that is not a conversion
    assert "Converted" not in text and "with added header(s): Received" in text
    assert "Subject: Đơn kiến nghị về đất đai" in text
    assert "From: Ủy ban nhân dân" in text and "Kính gửi các cơ quan, đơn vị." in text

    raw = relay.cli("archive", "show", str(entries[0]["seq"]), "--raw", "--accepted",
                    "--reason", "kiểm tra")
    assert raw.stdout == inbound  # the exact bytes the client sent
    delivered = relay.cli("archive", "show", str(entries[0]["seq"]), "--raw",
                          "--reason", "kiểm tra").stdout
    assert delivered.startswith(b"Received: from client.example.org") and \
        delivered.endswith(inbound)
    mailbox = wait_for(lambda: relay.maildir(TIEPDAN))
    assert mailbox[0].endswith(delivered)  # archived as delivered

    assert relay.cli("archive", "checkpoint").returncode == 0
    out = tmp_path / "export"
    exported = relay.cli("archive", "export", "--mailbox", TIEPDAN, "--format", "mbox",
                         "-o", str(out), "--reason", "thanh tra")
    assert exported.returncode == 0, exported.stderr
    proof = run_cli("archive", "verify", "--export", str(out), "--public-key",
                    str(relay.state / "archive" / "signing.key.pub"), "--json")
    assert proof.returncode == 0, proof.stdout
    assert json.loads(proof.stdout)["entries"] == 1

    verified = relay.cli("archive", "verify", "--json")
    assert verified.returncode == 0, verified.stdout
    report = json.loads(verified.stdout)
    assert report["ok"] and report["entries"] == 3 and report["access_entries"] == 4

    access = relay.cli("archive", "access-log").stdout.decode().splitlines()
    assert [line.split("\t")[3] for line in access] == ["show", "show", "show", "export"]
    assert access[-1].endswith("thanh tra")


def test_a_key_made_while_the_relay_runs_signs_its_next_message(relay_factory):
    """The README's order: mail first, `keygen` later, with the relay running."""
    import sqlite3

    relay = relay_factory()
    _send(relay.mx, OUTSIDE, [TIEPDAN], message(1, to=TIEPDAN))  # archived, unsigned
    assert relay.cli("archive", "keygen").returncode == 0
    time.sleep(1.5)  # the relay looks for a missing key file at most once a second
    _send(relay.mx, OUTSIDE, [TIEPDAN], message(2, to=TIEPDAN))
    # signed in the commit that archived #2, before its 250, by the relay: no CLI signed
    with sqlite3.connect(relay.state / "directory.db") as db:
        assert db.execute("SELECT seq, node FROM archive_checkpoint").fetchall() == [
            (2, "mail.dienbien.gov.vn")]
    verified = relay.cli("archive", "verify", "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["warnings"] == [], report


def test_official_mail_is_refused_with_451_when_it_cannot_be_archived(relay_factory):
    relay = relay_factory()
    import sqlite3

    with sqlite3.connect(relay.state / "directory.db") as db:
        db.execute("DROP TABLE archive_entry")  # the archive breaks under the running relay
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(relay.mx, OUTSIDE, [TIEPDAN], message(1, to=TIEPDAN))
    assert refused.value.smtp_code == 451
    _send(relay.mx, OUTSIDE, [PERSON], message(2, to=PERSON))  # not archived: still accepted
    assert wait_for(lambda: relay.maildir(PERSON))
    assert relay.maildir(TIEPDAN) == []  # never delivered unarchived
    assert list((relay.state / "queue" / "tmp").iterdir()) == []  # nor left half-queued

"""Content policies over the wire: the relay process (`relay serve`), smtplib as the
client, a private clamd, Maildir delivery."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from tests.content_helpers import make_message, zipped
from tests.fixtures.clamd import EICAR, EICAR_SIGNATURE, Clamd, start_clamd
from tests.fixtures.relayproc import Relay, wait_for
from tests.test_attachments import PE

GMAIL = "citizen.nguyen@gmail.com"
PARTNER = "doitac@congty.com.vn"
PERSONAL = "nguyenvana@dienbien.gov.vn"
INTAKE = "tiepdan@dienbien.gov.vn"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, Clamd]]:
    """One relay with webmail, antivirus and attachments, and the clamd it scans with."""
    clamd = start_clamd(tmp_path_factory.mktemp("clamd-smtp"))
    relay = Relay(tmp_path_factory.mktemp("relay"), {"policies": {
        "headers": {}, "webmail": {}, "attachments": {},
        "antivirus": {"clamd": clamd.tcp, "retries": 0, "timeout": 5},
    }})
    try:
        relay.start(timeout=60)  # the machine is shared: be patient at start-up
        yield relay, clamd
    finally:
        relay.stop()
        clamd.remove()


def send(relay: Relay, sender: str, recipients: list[str], raw: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=30) as client:
        client.ehlo("client.example.org")
        return client.sendmail(sender, recipients, raw)


def test_gmail_to_personal_refused_at_rcpt_tiepdan_gets_it(stack):
    relay, _ = stack
    raw = make_message(GMAIL, INTAKE, body="Kính gửi UBND tỉnh, tôi xin phản ánh...\n")
    refused = send(relay, GMAIL, [PERSONAL, INTAKE], raw)
    assert list(refused) == [PERSONAL]
    code, text = refused[PERSONAL]
    assert code == 550 and b"5.7.1" in text and b"Dieu 9" in text and b"Article 9" in text
    [delivered] = wait_for(lambda: relay.maildir(INTAKE))
    assert delivered.endswith(raw)
    assert relay.maildir(PERSONAL) == []


def test_gmail_to_personal_only_is_refused(stack):
    relay, _ = stack
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        send(relay, GMAIL, [PERSONAL], make_message(GMAIL, PERSONAL))
    assert exc.value.recipients[PERSONAL][0] == 550


@pytest.mark.parametrize("name,data", [("eicar.com", EICAR),
                                       ("tai-lieu.zip", zipped({"eicar.com": EICAR}))],
                         ids=["plain", "zipped"])
def test_eicar_rejected_after_data(stack, name, data):
    relay, _ = stack
    raw = make_message(PARTNER, PERSONAL, attachments=[(name, data, "application/octet-stream")])
    with pytest.raises(smtplib.SMTPDataError) as exc:
        send(relay, PARTNER, [PERSONAL], raw)
    assert exc.value.smtp_code == 554
    assert b"5.7.1" in exc.value.smtp_error and EICAR_SIGNATURE.encode() in exc.value.smtp_error


def test_executable_named_report_pdf_rejected(stack):
    relay, _ = stack
    raw = make_message(PARTNER, PERSONAL, attachments=[("report.pdf", PE, "application/pdf")])
    with pytest.raises(smtplib.SMTPDataError) as exc:
        send(relay, PARTNER, [PERSONAL], raw)
    assert exc.value.smtp_code == 554 and b"report.pdf" in exc.value.smtp_error


def test_clean_accepted_then_451_while_clamd_stopped(stack):
    relay, clamd = stack
    raw = make_message(PARTNER, PERSONAL, subject="Báo cáo",
                       attachments=[("bao-cao.txt", b"So lieu quy 3\n" * 50, "text/plain")])
    assert send(relay, PARTNER, [PERSONAL], raw) == {}
    assert wait_for(lambda: relay.maildir(PERSONAL))
    clamd.stop()
    try:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            send(relay, PARTNER, [PERSONAL], raw)
        assert exc.value.smtp_code == 451 and b"4.7.1" in exc.value.smtp_error
    finally:
        clamd.start()

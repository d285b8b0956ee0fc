"""Over the wire: legacy Vietnamese sent to the relay is delivered as UTF-8 NFC (Điều 9)."""

from __future__ import annotations

import email
import email.policy
import smtplib
import unicodedata

from tests.fixtures.relayproc import wait_for
from tests.test_tcvn_policy import BODY, SUBJECT, mojibake_message, simple


def test_tcvn3_vni_and_mojibake_are_delivered_as_utf8_nfc(relay_factory):
    relay = relay_factory(policies={"headers": {}, "tcvn6909": {"action": "convert"}})
    messages = {"tcvn3": simple("tcvn3"), "vni": simple("vni", "windows-1252"),
                "mojibake": mojibake_message()}
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        for data in messages.values():
            assert client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], data) == {}
    delivered = wait_for(lambda: len(relay.maildir("ubnd@dienbien.gov.vn")) == 3
                         and relay.maildir("ubnd@dienbien.gov.vn"))
    assert delivered and len(delivered) == 3
    notes = set()
    for raw in delivered:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        notes.add(msg["X-TCVN-Converted"].split()[2])  # "part 1 tcvn3->utf-8; ..."
        assert msg["Subject"] == SUBJECT
        body = msg.get_body().get_content().replace("\r\n", "\n").rstrip("\n")
        assert body == BODY and unicodedata.is_normalized("NFC", body)
        assert msg.get_content_charset() == "utf-8"
    assert notes == {"tcvn3->utf-8;", "vni->utf-8;"}


def test_reject_over_the_wire_cites_article_9(relay_factory):
    relay = relay_factory(policies={"headers": {}, "tcvn6909": {"action": "reject"}})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        try:
            client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"], simple("tcvn3"))
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error.decode("utf-8", "replace")
        else:
            raise AssertionError("accepted a TCVN3 message with action = reject")
    assert code == 550 and "5.6.0" in text and "Article 9" in text
    assert relay.maildir("ubnd@dienbien.gov.vn") == []


def test_an_attached_docx_in_vnTime_is_delivered_converted(relay_factory):
    """Through a real relay (inspection worker included): convert_attachments rewrites the
    document, and the copy delivered reads as Unicode in Times New Roman."""
    import io
    import zipfile

    from tests.tcvn_documents import blocks
    from tests.test_tcvn_documents import DOCX_TYPE, LINE, TITLE, legacy_docx, message_with

    relay = relay_factory(policies={"headers": {}, "tcvn6909": {
        "action": "convert", "convert_attachments": True}})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=30) as client:
        assert client.sendmail("a@example.org", ["ubnd@dienbien.gov.vn"],
                               message_with(legacy_docx(), "cong-van.docx", DOCX_TYPE)) == {}
    delivered = wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))
    assert delivered
    msg = email.message_from_bytes(delivered[0], policy=email.policy.default)
    [part] = [p for p in msg.walk() if p.get_filename() == "cong-van.docx"]
    document = part.get_content()
    assert blocks("docx", document) == [TITLE, LINE]
    assert b".VnTime" not in zipfile.ZipFile(io.BytesIO(document)).read("word/styles.xml")
    assert msg["X-TCVN-Converted"] == "part 2 attachment docx tcvn3->unicode"

"""Issue 10, items 9 and 10 over the wire: addresses that would split a bounce into new
header fields, and source routes (percent hack, bang path, quoted @) to local domains."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from relay.config import load
from relay.directory import Directory
from relay.directory.schema import Agency, Mailbox
from tests.dsn_helpers import assert_dsn_shape
from tests.fixtures.relayproc import Relay, wait_for
from tests.fixtures.sink import Sink

MSG = (b"From: <a@example.org>\r\nTo: <gone@dienbien.gov.vn>\r\nSubject: dsn\r\n"
       b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <dsn@example.org>\r\n\r\n"
       b"body\r\n")


def mx(relay: Relay) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", relay.mx, timeout=10)
    client.ehlo("mx.example.org")
    return client


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_quoted_local_part_with_a_line_separator_is_refused(relay_factory: Any,
                                                              separator: str):
    relay = relay_factory()
    with mx(relay) as client:
        injected = f'"x{separator}Bcc: evil@example.net{separator}X-Injected: 1"@example.org'
        code, _ = client.mail(injected, ["SMTPUTF8"])
        assert code in (501, 553), "refused as sender"
        assert client.mail("a@example.org", ["SMTPUTF8"])[0] == 250
        code, _ = client.rcpt(f'"ubnd{separator}X-Injected: 1"@dienbien.gov.vn')
        assert code in (501, 553), "refused as recipient"
        assert client.rcpt("ubnd@dienbien.gov.vn")[0] == 250  # and the session goes on


def test_non_ascii_address_without_smtputf8_gets_553_5_6_7(relay_factory: Any):
    relay = relay_factory()
    with mx(relay) as client:
        client.command_encoding = "utf-8"  # raw UTF-8 on the wire, without asking for it
        code, text = client.docmd("MAIL FROM:<người@example.org>")
        assert code == 553 and b"5.6.7" in text
        code, text = client.docmd("MAIL FROM:<a@example.org>")
        assert code == 250
        code, text = client.docmd("RCPT TO:<thư@dienbien.gov.vn>")
        assert code == 553 and b"5.6.7" in text


@pytest.mark.parametrize("sender", ['"Nguyễn Văn A"@example.org', "o'brien/x=y@example.org",
                                    '"a\\"b c"@example.org'])
def test_the_bounce_to_a_weird_but_valid_sender_has_exactly_its_fields(
        relay_factory: Any, sink: Sink, sender: str):
    outbound = Sink().start()
    try:
        sink.handler.refuse["gone@dienbien.gov.vn"] = "550 5.1.1 no such mailbox"
        relay = relay_factory(
            backend={"kind": "smtp", "host": "127.0.0.1", "port": sink.port},
            outbound={"relayhost": f"127.0.0.1:{outbound.port}", "starttls": "none"})
        with mx(relay) as client:
            options = [] if sender.isascii() else ["SMTPUTF8"]
            assert client.sendmail(sender, ["gone@dienbien.gov.vn"], MSG,
                                   mail_options=options) == {}
        [dsn] = wait_for(lambda: outbound.messages, timeout=20)
        assert dsn.recipients == [sender]
        assert_dsn_shape(dsn.data, {"gone@dienbien.gov.vn": "550 5.1.1 no such mailbox"})
    finally:
        outbound.stop()


SOURCE_ROUTES = ["v%example.net@dienbien.gov.vn", "v!example.net@dienbien.gov.vn",
                 '"v@example.net"@dienbien.gov.vn']


def test_source_routes_to_a_local_domain_are_refused(relay_factory: Any):
    relay = relay_factory(policies={"headers": {}, "recipient_exists": {"action": "log"}})
    with mx(relay) as client:
        client.mail("a@example.org")
        for address in SOURCE_ROUTES:
            code, text = client.rcpt(address)
            assert (code, text[:5]) == (554, b"5.7.1"), address
            assert b"Sender-specified routing" in text
        assert client.rcpt("ubnd@dienbien.gov.vn")[0] == 250
    [line] = wait_for(lambda: relay.decisions())
    codes = {(f["code"], f["recipient"]) for f in line["findings"]}
    assert {("recipient.source_route", a) for a in SOURCE_ROUTES} <= codes


def test_a_trusted_client_may_route_and_the_directory_may_hold_such_a_name(
        relay_factory: Any):
    trusted = relay_factory(server={"trusted_networks": ["127.0.0.0/8"]})
    with mx(trusted) as client:
        client.mail("a@example.org")
        assert client.rcpt("v%example.net@dienbien.gov.vn")[0] == 250  # may relay anyway
        # a quoted local part names no mailbox, whoever sends it
        assert client.rcpt('"v@example.net"@dienbien.gov.vn')[0] == 553

    relay = relay_factory(start=False)
    directory = Directory(load(relay.config_path))
    with directory.write("test", "QĐ 1") as w:
        w.add_agency("stttt", "Sở Thông tin và Truyền thông")
    # a legacy mailbox the naming rules of today would refuse, imported as it was
    with Session(directory.db) as session, session.begin():
        agency = session.scalars(sa.select(Agency)).one()
        session.add(Mailbox(address="v%legacy@dienbien.gov.vn", kind="personal",
                            agency_id=agency.id, status="active"))
    directory.close()
    relay.start()
    with mx(relay) as client:
        client.mail("a@example.org")
        assert client.rcpt("v%legacy@dienbien.gov.vn")[0] == 250
        assert client.rcpt("v%other@dienbien.gov.vn")[0] == 554

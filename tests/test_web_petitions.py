"""The officer's read-only register of petition cases in `relay web` (a real process)."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

import pytest

from relay.config import load
from relay.petitions.store import Incoming, Outgoing, PetitionStore
from tests.archive_helpers import TIEPDAN
from tests.web_helpers import ADMIN, AUDITOR, PETITIONS, Client, Console

OTHER = "tiepdan.syt@dienbien.gov.vn"
LONELY = ("tiepdan2", "mat-khau-khong-hop-thu")
HOSTILE = "<script>alert(1)</script>\x1b[2JĐơn\r\nX-Injected: 1"


def incoming(n: int, at: datetime, mailbox: str = TIEPDAN, subject: str = "Kiến nghị"
             ) -> Incoming:
    return Incoming(mailbox=mailbox, citizen=f"dan{n}@example.vn", queue_id=f"W{n}",
                    subject=subject, message_id=f"<w{n}@example.vn>", references=[], auto="",
                    at=at)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = Console(tmp_path_factory.mktemp("webpetitions"),
                extra={"petitions": {"enabled": True}}).fill().users()
    done = c.cli("user", "add", LONELY[0], "--role", "petitions", "--password-stdin",
                 input=f"{LONELY[1]}\n".encode())
    assert done.returncode == 0, done.stderr
    store = PetitionStore.open(load(c.config_path))
    now = datetime.now(UTC)
    try:
        store.receive(incoming(1, datetime(2026, 7, 6, 3, tzinfo=UTC), subject=HOSTILE), "")
        store.receive(incoming(2, now, subject="Đơn hôm nay"), "")
        third = store.receive(incoming(3, datetime(2026, 7, 7, 3, tzinfo=UTC),
                                       subject="Đã trả lời"), "").case
        assert third is not None  # its number depends on the year "now" is in
        store.send(Outgoing(mailbox=TIEPDAN, queue_id="W9", subject=f"Re: [{third.number}]",
                            message_id="<w9@dienbien.gov.vn>", references=[], auto="",
                            at=datetime(2026, 7, 8, 3, tzinfo=UTC), login=None,
                            recipients=["dan3@example.vn"], officials=[]))
        store.receive(incoming(4, datetime(2026, 7, 6, 3, tzinfo=UTC), mailbox=OTHER,
                               subject="Sở Y tế"), "")
    finally:
        store.close()
    c.start()
    yield c
    c.stop()


def signed_in(console: Console, user: tuple[str, str]) -> Client:
    client = Client(console.url)
    assert client.login(user).status == 303
    return client


def test_officer_sees_the_cases_of_assigned_mailboxes_by_status(console):
    client = signed_in(console, PETITIONS)
    everything = client.get("/petitions?status=all")
    assert everything.status == 200
    text = everything.text
    for number in ("TD-2026-000001", "TD-2026-000003"):
        assert number in text
    assert "Đơn hôm nay" in text
    assert OTHER not in text and "Sở Y tế" not in text  # another mailbox's cases
    overdue = client.get("/petitions?status=overdue").text
    assert "TD-2026-000001" in overdue and "Đơn hôm nay" not in overdue
    assert "TD-2026-000003" not in overdue
    answered = client.get("/petitions?status=answered").text
    assert "TD-2026-000003" in answered and "TD-2026-000001" not in answered
    # the default is the open cases (not yet due); an unknown status falls back to it
    assert "Đơn hôm nay" in client.get("/petitions").text
    assert client.get("/petitions?status=<b>").status == 200


def test_hostile_subjects_are_escaped_and_on_one_line(console):
    text = signed_in(console, PETITIONS).get("/petitions?status=overdue").text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text
    assert "\x1b" not in text and "\r\nX-Injected" not in text


def test_admin_sees_every_mailbox_and_an_officer_without_mailboxes_none(console):
    admin = signed_in(console, ADMIN).get("/petitions?status=all").text
    assert OTHER in admin and "Sở Y tế" in admin
    lonely = signed_in(console, LONELY).get("/petitions?status=all")
    assert lonely.status == 200 and "TD-2026" not in lonely.text
    assert 'id="no-cases"' in lonely.text


def test_auditor_may_not_see_petitions(console):
    assert signed_in(console, AUDITOR).get("/petitions").status == 403


def test_paging_with_a_small_page(tmp_path):
    c = Console(tmp_path, web={"page_size": 5}, extra={"petitions": {"enabled": True}})
    c.fill().users()
    store = PetitionStore.open(load(c.config_path))
    try:
        for n in range(7):
            store.receive(incoming(n, datetime(2026, 7, 6, 3, tzinfo=UTC)), "")
    finally:
        store.close()
    c.start()
    try:
        client = signed_in(c, PETITIONS)
        first = client.get("/petitions?status=all").text
        assert first.count('<tr class="case') == 5 and 'id="more"' in first
        second = client.get("/petitions?status=all&after=5").text
        assert second.count('<tr class="case') == 2 and "TD-2026-000007" in second
        for after in ("99999999999999999999999", "²", "\uff11"):  # '²'.isdigit() is True
            assert client.get("/petitions?" + urllib.parse.urlencode({"after": after})
                              ).status == 200, after
    finally:
        c.stop()

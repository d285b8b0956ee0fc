"""End to end over SMTP: `relay serve` with a real sink as `[outbound] relayhost` opens,
acknowledges, answers and reports petition cases (Điều 8); the CLI reads them back."""

from __future__ import annotations

import csv
import io
import json
import smtplib
from datetime import date, timedelta
from typing import Any

from tests.fixtures.relayproc import wait_for
from tests.petitions_helpers import (
    CITIZEN,
    CITIZEN2,
    INTAKE,
    OFFICIAL,
    PERSON,
    citizen_mail,
    parse,
    reply_mail,
)


def send(port: int, sender: str, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo("client.example.org")
        assert client.sendmail(sender, rcpts, data) == {}


def start_relay(relay_factory: Any, sink: Any, **petitions: Any) -> Any:
    relay = relay_factory(
        start=False,
        server={"trusted_networks": ["127.0.0.0/8"]},  # the intake officer's client
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        petitions={"enabled": True, **petitions},
    )
    keygen = relay.cli("archive", "keygen")
    assert keygen.returncode == 0, keygen.stderr
    return relay.start()


def lines(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def to(sink: Any, address: str) -> list[Any]:
    return [m for m in sink.messages if address in m.recipients]


def test_cases_open_answer_and_report_over_smtp(relay_factory, sink):
    relay = start_relay(relay_factory, sink)
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(1, "Kiến nghị về đường giao thông"))
    acks = wait_for(lambda: to(sink, CITIZEN))
    assert len(acks) == 1
    ack = parse(acks[0].data)
    assert acks[0].sender == INTAKE
    year = date.today().year
    first = f"TD-{year}-000001"
    assert ack["Subject"].startswith(f"[{first}]")
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<c1.petition-test@example.vn>"
    text = ack.get_content()
    assert first in text and "Hạn trả lời" in text and "Kiến nghị về đường giao thông" in text
    # the citizen's message itself reached the mailbox
    assert wait_for(lambda: relay.maildir(INTAKE))

    send(relay.mx, CITIZEN2, [INTAKE], citizen_mail(2, "Phản ánh về tiếng ồn", sender=CITIZEN2))
    acks2 = wait_for(lambda: to(sink, CITIZEN2))
    second = f"TD-{year}-000002"
    assert parse(acks2[0].data)["Subject"].startswith(f"[{second}]")

    # the officer answers the first from the intake mailbox
    send(relay.mx, INTAKE, [CITIZEN], reply_mail(f"Re: [{first}] Kiến nghị về đường giao thông",
                                                 to=CITIZEN))
    assert wait_for(lambda: len(to(sink, CITIZEN)) == 2)

    # mail from outside to a personal mailbox opens nothing and acknowledges nothing
    send(relay.mx, CITIZEN, [PERSON], citizen_mail(3, "Chào anh", to=PERSON))
    assert wait_for(lambda: relay.maildir(PERSON))

    listed = lines(relay.cli("petitions", "list", "--json"))
    assert [(c["number"], c["citizen"], c["status"]) for c in listed] == [
        (first, CITIZEN, "answered"), (second, CITIZEN2, "open")]
    for case in listed:
        assert case["mailbox"] == INTAKE
        assert set(case) >= {"number", "mailbox", "citizen", "subject", "received_at",
                             "deadline", "status", "reported_to", "answered_at"}
    assert listed[0]["answered_at"] is not None and listed[1]["answered_at"] is None
    assert listed[0]["subject"] == "Kiến nghị về đường giao thông"

    later = (date.today() + timedelta(days=30)).isoformat()
    overdue = lines(relay.cli("petitions", "list", "--status", "overdue", "--as-of", later,
                              "--json"))
    assert [c["number"] for c in overdue] == [second]
    assert overdue[0]["status"] == "overdue"
    # today nothing is overdue yet
    assert lines(relay.cli("petitions", "list", "--status", "overdue", "--json")) == []

    report = lines(relay.cli("petitions", "report", "--as-of", later, "--json"))
    assert [{k: r[k] for k in ("mailbox", "received", "answered_on_time", "answered_late",
                               "open", "overdue")} for r in report] == [
        {"mailbox": INTAKE, "received": 2, "answered_on_time": 1, "answered_late": 0,
         "open": 0, "overdue": 1}]
    as_csv = relay.cli("petitions", "report", "--as-of", later, "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout.decode())))
    assert rows == [{"mailbox": INTAKE, "received": "2", "answered_on_time": "1",
                     "answered_late": "0", "open": "0", "overdue": "1"}]

    # show: the messages of the case, with the archive entries that hold them
    shown = relay.cli("petitions", "show", first, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert [m["role"] for m in detail["messages"]] == ["petition", "acknowledgement", "answer"]
    assert all(m["archive_entries"] for m in detail["messages"])
    archived = relay.cli("archive", "show", str(detail["messages"][1]["archive_entries"][0]),
                         "--reason", "kiểm tra đơn")
    assert archived.returncode == 0 and f"[{first}]".encode() in archived.stdout
    # the number is read however the officer typed it
    assert json.loads(relay.cli("petitions", "show", f"td-{year}-1", "--json").stdout)[
        "number"] == first


def test_forward_to_an_official_mailbox_reports_the_case(relay_factory, sink):
    relay = start_relay(relay_factory, sink, acknowledge=False)
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(1, "Đơn khiếu nại"))
    number = wait_for(lambda: lines(relay.cli("petitions", "list", "--json")))[0]["number"]
    send(relay.mx, INTAKE, [OFFICIAL], reply_mail(f"Fwd: [{number}] Đơn khiếu nại", to=OFFICIAL))
    case = wait_for(lambda: [c for c in lines(relay.cli("petitions", "list", "--json"))
                             if c["reported_to"]])
    assert case[0]["reported_to"] == [OFFICIAL] and case[0]["status"] == "open"
    assert to(sink, CITIZEN) == []  # acknowledge = false: nothing to the citizen


def test_auto_replies_from_the_citizen_side_do_not_loop(relay_factory, sink):
    relay = start_relay(relay_factory, sink)
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(1))
    ack = parse(wait_for(lambda: to(sink, CITIZEN))[0].data)
    number = ack["X-Petition-Number"]
    # the citizen's vacation responder answers the acknowledgement, several times over
    for n in range(5):
        send(relay.mx, CITIZEN, [INTAKE], citizen_mail(
            10 + n, f"Auto: {ack['Subject']}",
            extra={"Auto-Submitted": "auto-replied", "In-Reply-To": ack["Message-ID"]}))
    # a responder that does not say so, without a reference: Precedence and X-Autoreply
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(20, "Out of office",
                                                  extra={"X-Autoreply": "yes"}))
    # a bounce (the null sender) of the acknowledgement
    send(relay.mx, "", [INTAKE], citizen_mail(21, "Undelivered Mail Returned to Sender",
                                             sender="MAILER-DAEMON@example.vn"))
    assert wait_for(lambda: len(relay.maildir(INTAKE)) == 8)
    cases = lines(relay.cli("petitions", "list", "--json"))
    assert [c["number"] for c in cases] == [number]  # nothing opened a case
    assert len(to(sink, CITIZEN)) == 1  # and nothing was acknowledged again
    detail = json.loads(relay.cli("petitions", "show", number, "--json").stdout)
    assert [m["role"] for m in detail["messages"]].count("follow-up") == 5


def test_an_auto_submitted_value_cannot_forge_a_log_line(relay_factory, sink):
    """The field's value is the client's: only its token reaches the relay's log."""
    relay = start_relay(relay_factory, sink)
    forged = "auto-generated\u2028<3>petitions: forged\x1b[2J"
    data = citizen_mail(1).replace(
        b"Subject:", f"Auto-Submitted: {forged}\r\nSubject:".encode(), 1)
    send(relay.mx, CITIZEN, [INTAKE], data)
    assert wait_for(lambda: len(relay.maildir(INTAKE)) == 1)
    log = wait_for(lambda: [line for line in relay.log.read_text().splitlines()
                            if "petitions: queue" in line])
    assert "(Auto-Submitted: auto-generated)" in log[0], log
    text = relay.log.read_text()
    assert "forged" not in text and "\u2028" not in text and "\x1b" not in text
    assert to(sink, CITIZEN) == []  # an automatic message is not acknowledged


def test_many_petitions_from_one_citizen_get_at_most_the_limit_of_acknowledgements(
        relay_factory, sink):
    relay = start_relay(relay_factory, sink, acknowledge_limit=2)
    for n in range(4):
        send(relay.mx, CITIZEN, [INTAKE], citizen_mail(n, f"Đơn số {n}"))
    cases = wait_for(lambda: len(lines(relay.cli("petitions", "list", "--json"))) == 4 and
                     lines(relay.cli("petitions", "list", "--json")))
    assert len(cases) == 4  # every petition is a case ...
    assert wait_for(lambda: len(to(sink, CITIZEN)) == 2)
    assert len(to(sink, CITIZEN)) == 2  # ... but a loop gets two acknowledgements, not four
    assert [c["acknowledgement"] for c in cases][2:] == ["not sent: acknowledge_limit"] * 2


def test_a_stranger_typing_someone_elses_number_opens_a_case_of_their_own(relay_factory,
                                                                          sink):
    relay = start_relay(relay_factory, sink, acknowledge=False)
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(1, "Đơn của tôi"))
    number = wait_for(lambda: lines(relay.cli("petitions", "list", "--json")))[0]["number"]
    # the same number in the Subject, from someone else, and to another intake mailbox
    send(relay.mx, CITIZEN2, [INTAKE], citizen_mail(2, f"Re: [{number}] chen ngang",
                                                    sender=CITIZEN2))
    other = "tiepdan.syt@dienbien.gov.vn"
    send(relay.mx, CITIZEN, [other], citizen_mail(3, f"[{number}] gửi nhầm", to=other))
    cases = wait_for(lambda: len(lines(relay.cli("petitions", "list", "--json"))) == 3 and
                     lines(relay.cli("petitions", "list", "--json")))
    assert [(c["citizen"], c["mailbox"]) for c in cases] == [
        (CITIZEN, INTAKE), (CITIZEN2, INTAKE), (CITIZEN, other)]
    # an officer of the other mailbox citing the number answers nothing of INTAKE's
    send(relay.mx, other, [CITIZEN], reply_mail(f"Re: [{number}]", sender=other, to=CITIZEN))
    wait_for(lambda: len(to(sink, CITIZEN)) == 1)
    assert lines(relay.cli("petitions", "list", "--json", "--mailbox", INTAKE))[0][
        "status"] == "open"


def test_daily_reminder_and_metrics_of_open_and_overdue_cases(relay_factory, sink):
    from datetime import UTC, datetime

    from relay.config import load
    from relay.petitions.store import Incoming, PetitionStore
    from tests.fixtures.relayproc import free_port

    port = free_port()
    relay = relay_factory(
        start=False,
        server={"trusted_networks": ["127.0.0.0/8"], "metrics_bind": f"127.0.0.1:{port}"},
        outbound={"relayhost": f"127.0.0.1:{sink.port}", "starttls": "none"},
        petitions={"enabled": True, "acknowledge": False},
    )
    relay.start()
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(1, "Đơn mới"))
    new = wait_for(lambda: lines(relay.cli("petitions", "list", "--json")))[0]["number"]
    # a case from last July, never answered: overdue whatever day the test runs
    store = PetitionStore.open(load(relay.config_path), migrate=False)
    try:
        old = store.receive(Incoming(
            mailbox=INTAKE, citizen=CITIZEN2, queue_id="OLD1", subject="Đơn cũ \x1b[31m",
            message_id="<old@example.org>", references=[], auto="",
            at=datetime(2026, 7, 6, 3, tzinfo=UTC)), "").case
    finally:
        store.close()
    assert old is not None

    import urllib.request
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    text = scraped.decode()
    assert f'relay_petitions_open{{mailbox="{INTAKE}"}} 2.0' in text
    assert f'relay_petitions_overdue{{mailbox="{INTAKE}"}} 1.0' in text

    dry = lines(relay.cli("petitions", "remind", "--dry-run", "--json"))
    assert [(d["mailbox"], d["overdue"], d["due"], d["to"]) for d in dry] == [
        (INTAKE, 1, 0, [INTAKE])]  # no holder in the directory: the mailbox itself
    assert relay.maildir(INTAKE) and len(relay.maildir(INTAKE)) == 1  # dry: nothing sent
    # two working days before the new case's deadline it is "due" as well
    [case] = [c for c in lines(relay.cli("petitions", "list", "--json")) if c["number"] == new]
    deadline = date.fromisoformat(case["deadline"])
    sent = lines(relay.cli("petitions", "remind", "--json", "--as-of",
                           (deadline - timedelta(days=1)).isoformat()))
    assert [(d["mailbox"], d["overdue"], d["due"]) for d in sent] == [(INTAKE, 1, 1)]
    assert sent[0]["queue_id"] and "error" not in sent[0]
    reminder = wait_for(lambda: [m for m in relay.maildir(INTAKE) if b"auto-generated" in m])
    body = parse(reminder[0])
    assert body["Auto-Submitted"] == "auto-generated"
    assert body["Subject"].startswith("[Tiếp dân] 1 đơn quá hạn, 1 đơn sắp đến hạn")
    content = body.get_content()
    assert old.number in content and new in content and "QUÁ HẠN (1)" in content
    assert "\x1b" not in content  # the citizen's control characters stay out
    history = json.loads(relay.cli("petitions", "show", old.number, "--json").stdout)["events"]
    assert history[-1]["action"] == "reminded"


def test_hostile_subjects_and_huge_references_over_smtp(relay_factory, sink):
    import base64
    import time

    relay = start_relay(relay_factory, sink)
    hostile = "\x1b]0;pwned\x07Đơn\x1b[2J \u202egnp.exe\r\nBcc: x@example.vn"
    encoded = base64.b64encode(hostile.encode()).decode()
    data = citizen_mail(1).replace(b"Subject: ", b"Subject: =?utf-8?b?" + encoded.encode()
                                   + b"?= ", 1)
    send(relay.mx, CITIZEN, [INTAKE], data)
    [ack] = wait_for(lambda: to(sink, CITIZEN))
    message = parse(ack.data)
    # the acknowledgement's headers are ours alone; the Subject is only cleaned in the body
    assert message["Bcc"] is None and "\x1b" not in message.get_content()
    assert "\x1b" not in message["Subject"] and "pwned" not in message["Subject"]
    listed = relay.cli("petitions", "list")
    out = listed.stdout.decode()
    assert listed.returncode == 0 and "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out and len(out.splitlines()) == 2

    # a follow-up with 3,000 invented references before the real one (In-Reply-To)
    refs = " ".join(f"<fake{i}.{'x' * 20}@example.vn>" for i in range(3000))
    started = time.monotonic()
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(
        2, "Bổ sung", extra={"References": refs, "In-Reply-To": message["Message-ID"]}))
    # and the same without the real one: a case of its own, the message still accepted
    send(relay.mx, CITIZEN2, [INTAKE], citizen_mail(3, "Đơn khác", sender=CITIZEN2,
                                                    extra={"References": refs}))
    assert time.monotonic() - started < 30
    assert wait_for(lambda: len(relay.maildir(INTAKE)) == 3)
    cases = lines(relay.cli("petitions", "list", "--json"))
    assert [c["citizen"] for c in cases] == [CITIZEN, CITIZEN2]
    detail = json.loads(relay.cli("petitions", "show", cases[0]["number"], "--json").stdout)
    assert [m["role"] for m in detail["messages"]] == ["petition", "acknowledgement",
                                                       "follow-up"]


def test_follow_ups_join_and_references_answer_without_a_number(relay_factory, sink):
    relay = start_relay(relay_factory, sink)
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(1, "Đơn thứ nhất"))
    send(relay.mx, CITIZEN2, [INTAKE], citizen_mail(2, "Đơn thứ hai", sender=CITIZEN2))
    ack1 = parse(wait_for(lambda: to(sink, CITIZEN))[0].data)
    assert wait_for(lambda: to(sink, CITIZEN2))
    number = ack1["X-Petition-Number"]
    # the citizen adds something, by number in the Subject: it joins, no new acknowledgement
    send(relay.mx, CITIZEN, [INTAKE], citizen_mail(3, f"Bổ sung {number.lower()}"))
    # the officer answers the first by replying to the acknowledgement (no number typed)
    send(relay.mx, INTAKE, [CITIZEN], reply_mail("Trả lời đơn", to=CITIZEN, n=1,
                                                 extra={"In-Reply-To": ack1["Message-ID"]}))
    # and the second by replying to the citizen's own message
    send(relay.mx, INTAKE, [CITIZEN2], reply_mail("Re: Đơn thứ hai", to=CITIZEN2, n=2,
                                                  extra={"References":
                                                         "<c2.petition-test@example.vn>"}))
    assert wait_for(lambda: len(to(sink, CITIZEN)) == 2 and len(to(sink, CITIZEN2)) == 2)
    cases = lines(relay.cli("petitions", "list", "--json"))
    assert [(c["citizen"], c["status"]) for c in cases] == [(CITIZEN, "answered"),
                                                           (CITIZEN2, "answered")]
    detail = json.loads(relay.cli("petitions", "show", number, "--json").stdout)
    assert [m["role"] for m in detail["messages"]] == ["petition", "acknowledgement",
                                                       "follow-up", "answer"]

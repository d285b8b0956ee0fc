"""`relay petitions list/show/assign/close/report` on cases filed at fixed dates."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.config import load
from relay.petitions.store import Incoming, Outgoing, PetitionStore
from tests.fixtures.relayproc import run_cli, to_toml
from tests.petitions_helpers import CITIZEN, CITIZEN2, INTAKE, OFFICIAL, PROVINCE_INTAKE

HOSTILE = "\x1b[2J\x1b]0;pwned\x07Đơn \u202egnp.exe\r\nX-Injected: 1"


def local(text: str) -> datetime:
    return datetime.fromisoformat(text + "+07:00").astimezone(UTC)


def incoming(n: int, at: str, citizen: str = CITIZEN, mailbox: str = INTAKE,
             subject: str = "Kiến nghị") -> Incoming:
    return Incoming(mailbox=mailbox, citizen=citizen, queue_id=f"Q{n}", subject=subject,
                    message_id=f"<{n}@example.vn>", references=[], auto="", at=local(at))


@pytest.fixture
def filed(tmp_path: Path) -> Path:
    """Three cases: TD-2026-000001 (Mon 6/7, answered Fri 10/7, on time), -000002
    (Wed 8/7, a hostile Subject, never answered: due 22/7), -000003 (to the province)."""
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": str(tmp_path / "state")},
                             "petitions": {"enabled": True}}))
    store = PetitionStore.open(load(path))
    try:
        store.receive(incoming(1, "2026-07-06T10:00"), "")
        store.receive(incoming(2, "2026-07-08T15:00", CITIZEN2, subject=HOSTILE), "")
        store.receive(incoming(3, "2026-07-09T08:00", mailbox=PROVINCE_INTAKE), "")
        done = store.send(Outgoing(mailbox=INTAKE, queue_id="Q4", subject="Re: [TD-2026-000001]",
                                   message_id="<a4@dienbien.gov.vn>", references=[], auto="",
                                   at=local("2026-07-10T09:00"), login=None,
                                   recipients=[CITIZEN, OFFICIAL], officials=[OFFICIAL]))
        assert done == [("TD-2026-000001", "answered"),
                        ("TD-2026-000001", f"reported to {OFFICIAL}")]
    finally:
        store.close()
    return path


def cli(path: Path, *args: str) -> Any:
    return run_cli("petitions", *args, "-c", str(path))


def jsonl(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_list_as_json_lines_by_status_and_day(filed):
    cases = jsonl(cli(filed, "list", "--as-of", "2026-07-15", "--json"))
    assert [(c["number"], c["status"], c["deadline"]) for c in cases] == [
        ("TD-2026-000001", "answered", "2026-07-20"),
        ("TD-2026-000002", "open", "2026-07-22"),
        ("TD-2026-000003", "open", "2026-07-23")]
    first = cases[0]
    assert first["received_at"] == "2026-07-06T03:00:00Z"
    assert first["answered_at"] == "2026-07-10T02:00:00Z"
    assert first["reported_to"] == [OFFICIAL] and first["citizen"] == CITIZEN
    # as of the day before the answer, the first was still open
    assert jsonl(cli(filed, "list", "--as-of", "2026-07-09", "--status", "open", "--json",
                     "--mailbox", INTAKE))[0]["number"] == "TD-2026-000001"
    overdue = jsonl(cli(filed, "list", "--status", "overdue", "--as-of", "2026-07-23",
                        "--json"))
    assert [c["number"] for c in overdue] == ["TD-2026-000002"]  # 000003 is due that day
    assert [c["number"] for c in jsonl(cli(filed, "list", "--mailbox", PROVINCE_INTAKE,
                                           "--json"))] == ["TD-2026-000003"]
    assert jsonl(cli(filed, "list", "--status", "answered", "--as-of", "2026-07-09",
                     "--json")) == []
    # the hostile Subject comes back as the same value, on one line
    assert cases[1]["subject"] == HOSTILE
    assert all(line.isprintable() for line in cli(filed, "list", "--json").stdout.decode()
               .splitlines())


def test_human_list_and_show_escape_control_characters_from_the_subject(filed):
    for args in (("list", "--as-of", "2026-07-15"), ("show", "TD-2026-000002")):
        result = cli(filed, *args)
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out
        assert "\u202e" not in out and "\\x1b[2J\\x1b]0;pwned\\x07" in out
    shown = cli(filed, "show", "TD-2026-000002").stdout.decode()
    assert "\\u202egnp.exe\\x0d\\x0aX-Injected: 1" in shown
    listed = cli(filed, "list", "--as-of", "2026-07-15").stdout.decode().splitlines()
    assert len(listed) == 4  # three cases and the count: nothing split a line


def test_show_gives_the_messages_and_history(filed):
    detail = json.loads(cli(filed, "show", "td-2026-1", "--json", "--as-of", "2026-07-15")
                        .stdout)
    assert detail["number"] == "TD-2026-000001" and detail["status"] == "answered"
    assert [(m["role"], m["queue_id"]) for m in detail["messages"]] == [
        ("petition", "Q1"), ("answer", "Q4")]
    assert [e["action"] for e in detail["events"]] == ["opened", "answered", "reported"]
    human = cli(filed, "show", "TD-2026-000001").stdout.decode()
    assert "Reported to:     ubnd@dienbien.gov.vn" in human and "Q4" not in human.split(
        "Messages:")[0]
    missing = cli(filed, "show", "TD-2026-\x1b999")
    assert missing.returncode == 1 and b"\x1b" not in missing.stderr
    assert b"no case" in missing.stderr


def test_assign_and_close_record_who_did_it(filed):
    assigned = cli(filed, "assign", "TD-2026-000002", "--to", "An.Nguyen@dienbien.gov.vn")
    assert assigned.returncode == 0, assigned.stderr
    refused = cli(filed, "assign", "TD-2026-000002", "--to", "someone@example.vn")
    assert refused.returncode == 1 and b"not an address in dienbien.gov.vn" in refused.stderr
    assert cli(filed, "close", "TD-2026-000002", "--reason", "  ").returncode == 1
    closed = cli(filed, "close", "TD-2026-000002", "--reason", "Trả lời trực tiếp\x1b[31m")
    assert closed.returncode == 0 and b"\x1b" not in closed.stdout
    again = cli(filed, "close", "TD-2026-000002", "--reason", "lần nữa")
    assert again.returncode == 1 and b"already closed" in again.stderr
    assert cli(filed, "close", "TD-2026-000001", "--reason", "x").returncode == 1  # answered
    detail = json.loads(cli(filed, "show", "TD-2026-000002", "--json").stdout)
    assert detail["assignee"] == "an.nguyen@dienbien.gov.vn"
    assert detail["status"] == "answered" and detail["closed_reason"].startswith("Trả lời")
    actions = [(e["action"], e["actor"]) for e in detail["events"]]
    assert [a for a, _ in actions] == ["opened", "assigned", "closed"]
    assert actions[1][1] == actions[2][1] != "relay"  # the user who ran the command


def test_report_per_mailbox_as_json_csv_and_text(filed):
    # a month on: 000001 on time, 000002 and 000003 overdue
    rows = jsonl(cli(filed, "report", "--as-of", "2026-08-10", "--json"))
    assert [{k: v for k, v in r.items() if k != "as_of"} for r in rows] == [
        {"mailbox": INTAKE, "received": 2, "answered_on_time": 1, "answered_late": 0,
         "open": 0, "overdue": 1},
        {"mailbox": PROVINCE_INTAKE, "received": 1, "answered_on_time": 0, "answered_late": 0,
         "open": 0, "overdue": 1}]
    # closed today (after its deadline): answered late
    assert cli(filed, "close", "TD-2026-000002", "--reason", "qua bưu điện").returncode == 0
    table = list(csv.DictReader(io.StringIO(cli(filed, "report", "--csv").stdout.decode())))
    assert [(r["mailbox"], r["answered_on_time"], r["answered_late"], r["overdue"])
            for r in table] == [(INTAKE, "1", "1", "0"), (PROVINCE_INTAKE, "0", "0", "1")]
    text = cli(filed, "report", "--as-of", "2026-07-15").stdout.decode()
    assert text.splitlines()[-1].split() == ["Total", "3", "1", "0", "2", "0"]
    assert jsonl(cli(filed, "report", "--as-of", "2026-07-01", "--json")) == []
    assert cli(filed, "report", "--json", "--csv").returncode == 2
    since = jsonl(cli(filed, "report", "--as-of", "2026-08-10", "--since", "2026-07-08",
                      "--json"))
    assert sum(r["received"] for r in since) == 2


@pytest.mark.parametrize("args", [("list", "--as-of", "15/07/2026"),
                                  ("list", "--status", "lost"),
                                  ("report", "--as-of", "2026-02-30")])
def test_bad_arguments_are_refused(filed, args):
    result = cli(filed, *args)
    assert result.returncode == 2, result.stdout


def test_a_database_without_petitions_tables_is_named(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": str(tmp_path / "state")}}))
    result = cli(path, "list", "--json")
    assert result.returncode == 1 and result.stdout == b""
    assert b"no petitions tables" in result.stderr

"""The milter front: a real (private) Postfix calls our milter; petitions are filed there and
the acknowledgement is submitted to `[outbound] relayhost` (the sink), as over SMTP."""

from __future__ import annotations

import json
import smtplib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from relay.config import load
from tests.fixtures.relayproc import free_port, run_cli, to_toml, wait_for
from tests.milter_helpers import POLICY_DIR, MilterThread
from tests.petitions_helpers import (
    CITIZEN,
    CITIZEN2,
    INTAKE,
    PERSON,
    citizen_mail,
    parse,
    reply_mail,
)

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")

def write_config(tmp_path: Path, bind: str, sink_port: int) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({
        "server": {"policy_dirs": [str(POLICY_DIR)], "state_dir": str(tmp_path / "state"),
                   "hostname": "mail.dienbien.gov.vn"},
        "milter": {"bind": bind},
        "outbound": {"relayhost": f"127.0.0.1:{sink_port}", "starttls": "none"},
        "petitions": {"enabled": True},
        "policies": {"headers": {}},
    }))
    return path


@pytest.fixture
def stack(tmp_path: Path, postfix_factory, sink):
    bind = f"127.0.0.1:{free_port()}"
    path = write_config(tmp_path, bind, sink.port)
    with MilterThread(load(path)) as thread:
        postfix = postfix_factory(milter=f"inet:{bind}")
        yield postfix, sink, path, thread


def send(postfix: Any, sender: str, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        client.ehlo("client.example.org")
        assert client.sendmail(sender, rcpts, data) == {}


def cli(path: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli("petitions", *args, "-c", str(path))
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def to(sink: Any, address: str, sender: str | None = None) -> list[Any]:
    return [m for m in sink.messages
            if address in m.recipients and (sender is None or m.sender == sender)]


def test_cases_open_answer_and_report_through_postfix_and_the_milter(stack):
    postfix, sink, path, thread = stack
    year = datetime.now(VIETNAM).year  # the numbers' year is Vietnam's, not the host's
    send(postfix, CITIZEN, [INTAKE], citizen_mail(1, "Kiến nghị về đường giao thông"))
    # Postfix hands the petition on to its next hop; the milter submits the acknowledgement
    assert wait_for(lambda: to(sink, INTAKE), timeout=30)
    [ack] = wait_for(lambda: to(sink, CITIZEN), timeout=30)
    first = f"TD-{year}-000001"
    assert ack.sender == INTAKE
    assert parse(ack.data)["Subject"].startswith(f"[{first}]")
    assert parse(ack.data)["Auto-Submitted"] == "auto-replied"

    send(postfix, CITIZEN2, [INTAKE], citizen_mail(2, "Phản ánh", sender=CITIZEN2))
    assert wait_for(lambda: to(sink, CITIZEN2), timeout=30)
    send(postfix, INTAKE, [CITIZEN], reply_mail(f"Re: [{first}] Kiến nghị", to=CITIZEN))
    assert wait_for(lambda: len(to(sink, CITIZEN)) == 2, timeout=30)
    send(postfix, CITIZEN, [PERSON], citizen_mail(3, "Chào anh", to=PERSON))
    assert wait_for(lambda: to(sink, PERSON), timeout=30)

    cases = cli(path, "list", "--json")
    assert [(c["number"], c["citizen"], c["status"]) for c in cases] == [
        (first, CITIZEN, "answered"), (f"TD-{year}-000002", CITIZEN2, "open")]
    later = (date.today() + timedelta(days=30)).isoformat()
    assert [c["number"] for c in cli(path, "list", "--status", "overdue", "--as-of", later,
                                     "--json")] == [f"TD-{year}-000002"]
    [row] = cli(path, "report", "--as-of", later, "--json")
    assert (row["received"], row["answered_on_time"], row["overdue"]) == (2, 1, 1)
    # the acknowledgement was archived as the intake mailbox's outgoing mail
    detail = json.loads(run_cli("petitions", "show", first, "--json", "-c", str(path)).stdout)
    assert [m["role"] for m in detail["messages"]] == ["petition", "acknowledgement", "answer"]
    assert all(m["archive_entries"] for m in detail["messages"])


def test_auto_reply_through_the_milter_does_not_loop(stack):
    postfix, sink, path, thread = stack
    send(postfix, CITIZEN, [INTAKE], citizen_mail(1))
    [ack] = wait_for(lambda: to(sink, CITIZEN), timeout=30)
    message = parse(ack.data)
    for n in range(3):
        send(postfix, CITIZEN, [INTAKE], citizen_mail(
            10 + n, f"Auto: {message['Subject']}",
            extra={"Auto-Submitted": "auto-replied", "In-Reply-To": message["Message-ID"]}))
    assert wait_for(lambda: len(to(sink, INTAKE)) == 4, timeout=30)
    assert len(cli(path, "list", "--json")) == 1
    assert len(to(sink, CITIZEN)) == 1

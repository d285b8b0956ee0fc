"""`relay directory …` and the directory policies through `relay test-message --json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from relay.cli import main
from tests.fixtures.relayproc import run_cli, to_toml

DOMAIN = "dienbien.gov.vn"
BASIS = "QĐ số 15/QĐ-UBND ngày 02/03/2026"
PASSWORD = "mat-khau-rat-dai"


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({
        "server": {"state_dir": "state", "local_domains": [DOMAIN],
                   "trusted_networks": ["10.0.0.0/8"]},
        "directory": {"auth_failure_delay": 0},
        "policies": {"headers": {}, "sender_registered": {}, "recipient_exists": {},
                     "sender_login_match": {}, "no_local_spoofing": {}},
    }))
    return path


def cli(config_path: Path, *args: str, input: str | None = None, ok: bool = True) -> Any:
    result = CliRunner().invoke(main, [*args, "-c", str(config_path)],
                                                input=input)
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def seed(config_path: Path) -> None:
    cli(config_path, "directory", "agency", "add", "ubnd", "--name", "Ủy ban nhân dân tỉnh",
        "--basis", BASIS)
    cli(config_path, "directory", "agency", "add", "stttt", "--name",
        "Sở Thông tin và Truyền thông", "--parent", "ubnd", "--basis", BASIS)
    cli(config_path, "directory", "mailbox", "add", f"stttt@{DOMAIN}", "--kind", "official",
        "--agency", "stttt", "--no-password", "--basis", BASIS)
    for address, name in ((f"annv@{DOMAIN}", "Nguyễn Văn An"),
                          (f"binhtt@{DOMAIN}", "Trần Thị Bình")):
        result = cli(config_path, "directory", "mailbox", "add", address, "--kind", "personal",
                     "--agency", "stttt", "--name", name, "--password-stdin", "--basis",
                     BASIS, input=PASSWORD + "\n")
        assert PASSWORD not in result.output


MESSAGE = (f"From: {{sender}}\r\nTo: someone@example.org\r\nDate: Sun, 29 Nov 2026 10:00:00 "
           f"+0700\r\nSubject: =?utf-8?b?VGjDtG5nIGLDoW8=?=\r\nMessage-ID: <1@{DOMAIN}>\r\n"
           "\r\nNội dung.\r\n")


def run_message(config_path: Path, sender: str, to: str = "someone@example.org",
                 header_from: str | None = None, **options: str) -> tuple[int, dict]:
    eml = config_path.parent / "m.eml"
    eml.write_text(MESSAGE.format(sender=header_from or sender), encoding="utf-8")
    args = ["test-message", "--json", "--from", sender, "--to", to]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", value]
    proc = run_cli(*args, "-c", str(config_path), str(eml))
    return proc.returncode, json.loads(proc.stdout)


def codes(result: dict) -> dict[str, str]:
    return {f["code"]: f["article"] for f in result["findings"]}


def test_through_test_message(config_path: Path):
    seed(config_path)
    # an unregistered local sender (from the trusted webmail host): Điều 4
    rc, result = run_message(config_path, f"ghost@{DOMAIN}", f"annv@{DOMAIN}",
                              client_ip="10.1.2.3")
    assert rc == 1 and result["stage"] == "mail"
    assert codes(result) == {"sender.unregistered": "Điều 4"}
    assert result["reply"].startswith("550") and "5.1.8" in result["reply"]
    assert "Điều 4" in result["reply"]

    # an authenticated user sending as someone else: Điều 7.3
    rc, result = run_message(config_path, f"binhtt@{DOMAIN}", auth=f"annv@{DOMAIN}")
    assert rc == 1 and codes(result) == {"login.sender_mismatch": "Điều 7.3"}
    assert "Điều 7.3" in result["reply"]
    # ... or only in the From: header
    rc, result = run_message(config_path, f"annv@{DOMAIN}", auth="annv",
                              header_from=f"Bình <binhtt@{DOMAIN}>")
    assert rc == 1 and result["stage"] == "data"
    assert codes(result) == {"login.sender_mismatch": "Điều 7.3"}

    # the head sends as the official mailbox; a delegate does once delegated (Điều 8)
    rc, result = run_message(config_path, f"stttt@{DOMAIN}", auth=f"binhtt@{DOMAIN}")
    assert rc == 1 and codes(result) == {"login.not_delegated": "Điều 8"}
    cli(config_path, "directory", "delegate", f"stttt@{DOMAIN}", "--to", f"binhtt@{DOMAIN}",
        "--basis", "QĐ ủy quyền số 3/QĐ-STTTT")
    rc, result = run_message(config_path, f"stttt@{DOMAIN}", auth=f"binhtt@{DOMAIN}")
    assert rc == 0 and result["action"] == "accept" and result["findings"] == []
    cli(config_path, "directory", "revoke", f"stttt@{DOMAIN}", "--from", f"binhtt@{DOMAIN}",
        "--basis", "QĐ thu hồi ủy quyền số 4/QĐ-STTTT")
    rc, result = run_message(config_path, f"stttt@{DOMAIN}", auth=f"binhtt@{DOMAIN}")
    assert rc == 1 and codes(result) == {"login.not_delegated": "Điều 8"}

    # outside, unauthenticated, claiming a provincial sender in the From: header
    rc, result = run_message(config_path, "news@example.org", f"annv@{DOMAIN}",
                              header_from=f"annv@{DOMAIN}")
    assert rc == 1 and codes(result) == {"spoof.header": "Điều 7.3"}
    # unknown local recipient: 550 5.1.1 at RCPT, no backscatter
    rc, result = run_message(config_path, "news@example.org", f"nobody@{DOMAIN}")
    assert rc == 1 and result["stage"] == "rcpt"
    assert result["recipients"][f"nobody@{DOMAIN}"].split("\r\n")[-1].startswith("550 5.1.1")
    # and an ordinary message from outside to a registered mailbox goes through
    rc, result = run_message(config_path, "news@example.org", f"annv@{DOMAIN}")
    assert rc == 0, result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_admin_cli_forms(config_path: Path):
    seed(config_path)
    agencies = json_lines(cli(config_path, "directory", "agency", "list", "--json").stdout)
    assert [a["code"] for a in agencies] == ["stttt", "ubnd"]
    cli(config_path, "directory", "agency", "rename", "stttt", "--name", "Sở TT&TT", "--basis",
        BASIS)
    boxes = json_lines(cli(config_path, "directory", "mailbox", "list", "--agency", "stttt",
                           "--json").stdout)
    assert {b["address"] for b in boxes} == {f"annv@{DOMAIN}", f"binhtt@{DOMAIN}",
                                             f"stttt@{DOMAIN}"}
    # a write without --basis is refused by click itself
    result = cli(config_path, "directory", "mailbox", "suspend", f"annv@{DOMAIN}", ok=False)
    assert result.exit_code == 2 and "--basis" in result.stderr
    cli(config_path, "directory", "mailbox", "suspend", f"annv@{DOMAIN}", "--basis", BASIS)
    shown = json.loads(cli(config_path, "directory", "mailbox", "show", f"annv@{DOMAIN}",
                           "--json").stdout)
    assert shown["status"] == "suspended" and shown["owner_name"] == "Nguyễn Văn An"
    cli(config_path, "directory", "mailbox", "restore", f"annv@{DOMAIN}", "--basis", BASIS)
    cli(config_path, "directory", "mailbox", "rename", f"annv@{DOMAIN}", f"an.nguyenvan@{DOMAIN}",
        "--basis", "QĐ điều động số 9")
    result = cli(config_path, "directory", "mailbox", "reset-password",
                 f"an.nguyenvan@{DOMAIN}", "--basis", "Đơn báo mất mật khẩu ngày 03/03/2026")
    generated = result.output.strip().rsplit(" ", 1)[1]
    assert len(generated) == 16
    result = cli(config_path, "directory", "handover", f"stttt@{DOMAIN}", "--to",
                 f"binhtt@{DOMAIN}", "--basis", "QĐ bổ nhiệm số 11")
    assert "shown once" in result.output
    # reserved names are refused with the article
    result = cli(config_path, "directory", "mailbox", "add", f"tiepdan@{DOMAIN}", "--kind",
                 "personal", "--agency", "stttt", "--name", "Ai Đó", "--basis", BASIS, ok=False)
    assert result.exit_code == 1 and "Điều 4" in result.stderr
    cli(config_path, "directory", "mailbox", "remove", f"binhtt@{DOMAIN}", "--basis",
        "QĐ nghỉ hưu số 12")
    cli(config_path, "directory", "agency", "add", "snv", "--name", "Sở Nội vụ", "--basis", BASIS)
    cli(config_path, "directory", "agency", "close", "snv", "--basis", "QĐ sáp nhập số 13")
    log = json_lines(cli(config_path, "directory", "log", "--json", "--limit", "1000").stdout)
    actions = [entry["action"] for entry in log]
    for expected in ("agency.add", "agency.update", "mailbox.suspend", "mailbox.restore",
                     "mailbox.rename", "mailbox.reset_password", "mailbox.handover",
                     "mailbox.remove", "agency.close"):
        assert expected in actions
    assert generated not in json.dumps(log) and PASSWORD not in json.dumps(log)
    history = json_lines(cli(config_path, "directory", "log", "--key", f"binhtt@{DOMAIN}",
                             "--json").stdout)
    assert history[-1]["basis"] == "QĐ nghỉ hưu số 12"
    suggestion = json.loads(cli(config_path, "directory", "suggest-address", "Nguyễn Văn An",
                                "--json").stdout)
    # annv@ was renamed away: quarantined, so not suggested to a namesake
    assert suggestion["address"] == f"annv2@{DOMAIN}"
    # the password set by --password-stdin opens the mailbox; the generated one too
    import asyncio

    from relay.cli.common import load_config
    from relay.directory import DirectoryStore

    store = DirectoryStore(load_config(config_path))
    assert asyncio.run(store.authenticate(f"an.nguyenvan@{DOMAIN}", generated, "192.0.2.9"))

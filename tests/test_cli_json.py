"""One output shape (issue 14, item 9): every listing and show command has --json, each
prints JSON Lines (one object per line), and every timestamp is RFC 3339 UTC with `Z`."""

from __future__ import annotations

import json
import re
import smtplib
import time
from typing import Any

import click

from relay.cli import main
from tests.fixtures.relayproc import free_port, wait_for

# the commands that list or show something (everything else changes state)
READERS = {
    "check-config", "policies", "test-message", "config show",
    "queue list", "queue show",
    "directory agency list", "directory mailbox list", "directory mailbox show",
    "directory log", "directory suggest-address", "directory sync",
    "archive verify", "archive log", "archive show", "archive access-log", "archive purge",
    "archive hold",
    "text check",
}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
TIME_KEYS = re.compile(r"(^|_)(time|at|since|until|from|attempt)$|^recorded|^valid_")


def leaves(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            out.update(leaves(command, path + " "))
        else:
            out[path] = command
    return out


def test_every_reader_has_json():
    commands = leaves(main)
    assert READERS <= set(commands), READERS - set(commands)
    for path in READERS:
        options = {opt for param in commands[path].params for opt in param.opts}
        assert "--json" in options, f"relay {path} has no --json"


def json_lines(stdout: bytes) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in stdout.decode().splitlines()]
    assert rows and all(isinstance(row, dict) for row in rows), stdout
    return rows


def assert_times(value: Any, key: str = "") -> int:
    """Every timestamp-like string is RFC 3339 with Z; returns how many were checked."""
    if isinstance(value, dict):
        return sum(assert_times(v, k) for k, v in value.items())
    if isinstance(value, list):
        return sum(assert_times(v, key) for v in value)
    if isinstance(value, str) and TIME_KEYS.search(key) and re.match(r"^\d{4}-\d\d-\d\d", value):
        assert RFC3339_Z.match(value), f"{key}: {value!r} is not RFC 3339 with Z"
        return 1
    assert not isinstance(value, int | float) or not TIME_KEYS.search(key) \
        or key.endswith("attempts"), f"{key}: {value!r} is a number, not RFC 3339"
    return 0


MSG = (b"From: an@example.org\r\nTo: stttt@dienbien.gov.vn\r\nSubject: json\r\n"
       b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <json@example.org>\r\n\r\nhi\r\n")


def test_json_lines_and_rfc3339_everywhere(relay_factory):
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1", "port": free_port()})
    for args in (("directory", "agency", "add", "stttt", "--name", "Sở TT&TT", "--basis", "QĐ 1"),
                 ("directory", "mailbox", "add", "stttt@dienbien.gov.vn", "--kind", "official",
                  "--agency", "stttt", "--no-password", "--basis", "QĐ 2"),
                 ("archive", "hold", "stttt@dienbien.gov.vn", "--reason", "thanh tra 1")):
        done = relay.cli(*args)
        assert done.returncode == 0, done.stderr
    time.sleep(2.5)  # the relay sees directory changes within poll_interval (2 s)
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail("an@example.org", ["stttt@dienbien.gov.vn"], MSG)
    [queued] = json_lines(wait_for(lambda: relay.cli("queue", "list", "--json").stdout))
    checked = assert_times(queued)
    shown = json_lines(relay.cli("queue", "show", queued["queue_id"], "--json").stdout)
    assert shown[0]["queue_id"] == queued["queue_id"]
    assert ["Subject", "json"] in shown[0]["headers"] and "hi\r\n" in shown[0]["message"]
    checked += assert_times(shown)
    runs = [
        ("check-config", "--json"),
        ("config", "show", "--json"),
        ("policies", "--json"),
        ("directory", "agency", "list", "--json"),
        ("directory", "mailbox", "list", "--json"),
        ("directory", "mailbox", "show", "stttt@dienbien.gov.vn", "--json"),
        ("directory", "log", "--json"),
        ("directory", "suggest-address", "Nguyễn Văn An", "--json"),
        ("archive", "log", "--json"),
        ("archive", "hold", "--json"),
        ("archive", "show", "1", "--reason", "json test", "--json"),
        ("archive", "access-log", "--json"),
    ]
    for args in runs:
        result = relay.cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        rows = json_lines(result.stdout)
        checked += assert_times(rows)
        if args[:2] == ("directory", "log"):
            assert len(rows) == 2 and {r["action"] for r in rows} == {"agency.add", "mailbox.add"}
        if args[:2] == ("archive", "hold"):
            assert rows[0]["mailbox"] == "stttt@dienbien.gov.vn"
        if args[0] == "check-config":
            assert rows == [{"source": str(relay.config_path), "ok": True, "errors": [],
                             "listeners": ["mx", "smtps", "submission"],
                             "policies": ["headers"]}]
    assert checked >= 8  # arrival, log times, hold since, archive recorded_at, ...


def test_check_config_json_reports_errors(tmp_path):
    from tests.fixtures.relayproc import run_cli

    config = tmp_path / "relay.toml"
    config.write_text('[listeners.mx]\nbind = "25"\n[policies.nosuch]\n')
    result = run_cli("check-config", "-c", str(config), "--json")
    assert result.returncode == 78
    [row] = json_lines(result.stdout)
    assert row["ok"] is False
    assert row["errors"] == [f"{config}: listeners.mx.bind: expected HOST:PORT, got '25'"]

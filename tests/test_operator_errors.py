"""Failures an operator can fix end in one line naming what failed and a sysexits code,
never a Python traceback (issue 14, item 1). Each case runs the real `relay` command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.relayproc import free_port, relay_env, run_cli, to_toml, wait_for
from tests.test_queue import send_many

EX_USAGE, EX_UNAVAILABLE, EX_CANTCREAT, EX_TEMPFAIL = 64, 69, 73, 75


def problem_lines(stderr: bytes) -> list[str]:
    """stderr without the daemon's journal-prefixed log lines (`<6>relay: ...`)."""
    assert b"Traceback" not in stderr, stderr.decode()
    return [line for line in stderr.decode().splitlines() if not line.startswith("<")]


def one_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    lines = problem_lines(result.stderr)
    assert result.returncode == code, result.stderr.decode()
    assert len(lines) == 1, lines
    assert lines[0].startswith("relay: ")
    return lines[0]


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def write_config(path: Path, data: dict) -> Path:
    config = path / "relay.toml"
    config.write_text(to_toml(data))
    return config


def serve(config: Path, *command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "relay", *(command or ("serve",)), "-c",
                           str(config)], env=relay_env(), capture_output=True, timeout=60)


def test_second_relay_serve_on_a_busy_port(relay_factory):
    relay = relay_factory()
    line = one_line(serve(relay.config_path), EX_UNAVAILABLE)
    assert line.lower().endswith(f"cannot listen on 127.0.0.1:{relay.mx} (listeners.mx): "
                                 "address already in use")
    assert relay.proc is not None and relay.proc.poll() is None  # the first one runs on


def test_busy_metrics_bind(tmp_path, held_port):
    config = write_config(tmp_path, {
        "server": {"state_dir": "var", "metrics_bind": f"127.0.0.1:{held_port}"},
        "listeners": {"mx": {"bind": f"127.0.0.1:{free_port()}"}}})
    line = one_line(serve(config), EX_UNAVAILABLE)
    assert f"127.0.0.1:{held_port} (server.metrics_bind)" in line
    assert "in use" in line


def test_busy_milter_bind(tmp_path, held_port):
    config = write_config(tmp_path, {"server": {"state_dir": "var"},
                                     "milter": {"bind": f"127.0.0.1:{held_port}"}})
    line = one_line(serve(config, "milter"), EX_UNAVAILABLE)
    assert f"127.0.0.1:{held_port} (milter.bind)" in line


@pytest.mark.parametrize("command", [
    ["directory", "agency", "list"],
    ["directory", "agency", "add", "stttt", "--name", "Sở TT&TT", "--basis", "QĐ 1"],
    ["directory", "mailbox", "list", "--json"],
    ["directory", "mailbox", "show", "annv@dienbien.gov.vn"],
    ["directory", "suggest-address", "Nguyễn Văn An"],
    ["directory", "log"],
])
def test_unreachable_postgresql_for_directory_commands(tmp_path, command):
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, {"directory": {
        "url": f"postgresql://relay:s3cret-pw@127.0.0.1:{port}/relay"}})
    result = run_cli(*command, "-c", str(config))
    line = one_line(result, EX_TEMPFAIL)
    assert f"cannot reach the database postgresql://relay:***@127.0.0.1:{port}/relay" in line
    assert b"s3cret-pw" not in result.stderr + result.stdout


def test_state_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    config = write_config(tmp_path, {
        "server": {"state_dir": str(tmp_path / "file" / "var")},
        "listeners": {"mx": {"bind": f"127.0.0.1:{free_port()}"}}})
    line = one_line(serve(config), EX_CANTCREAT)
    assert line == f"relay: cannot create or open {tmp_path / 'file' / 'var'}: Not a directory"
    # the milter too, and a command that opens the directory database there
    assert one_line(serve(config, "milter"), EX_CANTCREAT) == line
    assert "file/var" in one_line(run_cli("directory", "agency", "list", "-c", str(config)),
                                  EX_CANTCREAT)


def test_queue_list_json_piped_into_hold(relay_factory):
    relay = relay_factory(backend={"kind": "smtp", "host": "127.0.0.1", "port": free_port()})
    assert len(send_many(relay.mx, 3, sessions=1)) == 3
    listed = wait_for(lambda: relay.cli("queue", "list", "--json").stdout)
    held = relay.cli("queue", "hold", "-", input=listed)
    assert held.returncode == 0, held.stderr
    assert b"hold: 3 messages" in held.stdout
    entries = [json.loads(line) for line in relay.cli("queue", "list", "--json").stdout.splitlines()]
    assert {e["queue_name"] for e in entries} == {"hold"} and len(entries) == 3
    # plain ids still work, one per line
    ids = "\n".join(e["queue_id"] for e in entries).encode()
    assert relay.cli("queue", "release", "-", input=ids).returncode == 0


@pytest.mark.parametrize("stdin, expected", [
    (b'{"queue_name": "active"}\n', "standard input line 1: a JSON object without"),
    (b"0123ABC\n../../etc/passwd\n", "standard input line 2: ../../etc/passwd is not"),
    (b"\x1b[31mred\n", "standard input line 1: \\x1b[31mred is not a queue id"),
    (b"x" * 100_000 + b"\n", "is not a queue id"),
])
def test_queue_hold_refuses_what_is_not_a_queue_id(relay_factory, stdin, expected):
    relay = relay_factory(start=False)
    relay.state.mkdir()
    (relay.state / "queue").mkdir()
    result = relay.cli("queue", "hold", "-", input=stdin)
    assert expected in one_line(result, EX_USAGE)
    assert b"\x1b" not in result.stderr

"""relay.toml validation: every error names the file and the key; exit 78 on errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, load, parse_duration
from tests.fixtures.relayproc import ROOT, run_cli


def test_example_config_is_valid():
    result = run_cli("check-config", "-c", str(ROOT / "relay.toml"))
    assert result.returncode == 0, result.stderr
    assert b"OK" in result.stdout


def test_embedded_defaults_are_valid():
    config = load(None)
    assert config.server.local_domains == ["dienbien.gov.vn"]
    assert list(config.policy_options) == ["size", "recipients", "headers"]


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nmax_recipientz = 5\n", "server.max_recipientz: unknown key"),
    ('[server]\nmax_recipients = "many"\n', "server.max_recipients: input should be a valid integer"),
    ('[listeners.mx]\nbind = "25"\n', "listeners.mx.bind: expected HOST:PORT, got '25'"),
    ('[listeners.mx]\nbind = "127.0.0.1:25"\nkind = "pop3"\n', "listeners.mx.kind:"),
    ('[server]\ntrusted_networks = ["10.0.0.0/33"]\n', "server.trusted_networks.0: expected a CIDR"),
    ('[queue]\nmax_queue_lifetime = "5 days"\n', "queue.max_queue_lifetime: expected a duration"),
    ("[policies.nonexistent]\n", "policies.nonexistent: unknown policy"),
    ('[policies.headers]\naction = "drop"\n', "policies.headers.action:"),
    ("[policies.headers]\nmax_line_length = 10\n", "policies.headers.max_line_length:"),
    ('[backend]\nkind = "smtp"\n', "backend.port: required when backend.kind is 'smtp'"),
    ("[server\n", "not valid TOML"),
])
def test_errors_name_the_key_and_exit_78(tmp_path: Path, text: str, message: str):
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 78
    assert message.encode() in result.stderr
    served = run_cli("serve", "-c", str(path), timeout=20)
    assert served.returncode == 78


def test_durations():
    assert parse_duration("5d") == 432000
    assert parse_duration(30) == 30
    assert parse_duration("1.5m") == 90
    with pytest.raises(ValueError):
        parse_duration(True)


def test_paths_are_relative_to_the_config_file(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "relay.toml"
    path.write_text('[server]\nstate_dir = "../state"\n')
    config = load(path)
    assert config.state_path == (tmp_path / "state").resolve()
    assert config.spool_path == (tmp_path / "state" / "queue").resolve()

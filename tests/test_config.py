"""relay.toml validation: every error names the file and the key; exit 78 on errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, load, parse_duration
from relay.engine import size_refusal
from relay.model import Transaction
from relay.policyset import configure
from relay.runtime import Runtime
from tests.fixtures.relayproc import ROOT, run_cli


def test_example_config_is_valid():
    result = run_cli("check-config", "-c", str(ROOT / "relay.toml"))
    assert result.returncode == 0, result.stderr
    assert b"OK" in result.stdout


def test_embedded_defaults_are_valid():
    config = load(None)
    assert config.server.local_domains == ["dienbien.gov.vn"]
    assert configure(config).names == ["headers"]


async def test_the_engine_runs_what_check_config_lists(tmp_path: Path):
    """Engine(default config) runs the policies check-config names, and the built-in
    limits hold whatever the [policies] tables say."""
    result = run_cli("check-config")
    assert b"1 policies: headers" in result.stdout, result.stdout
    config = load(None)
    runtime = await Runtime.build(config, archive=False, inline=True)
    try:
        assert [p.name for p in runtime.engine.policies] == ["headers"]
    finally:
        await runtime.aclose()
    # only [policies.webmail]: headers is off, but the RFC 5321 recipient cap stays
    path = tmp_path / "relay.toml"
    path.write_text(f'[server]\nstate_dir = "{tmp_path}"\nmax_recipients = 2\n'
                    "[policies.webmail]\n")
    config = load(path)
    runtime = await Runtime.build(config, archive=False, inline=True)
    try:
        tx = Transaction()
        assert await runtime.engine.mail(tx, "a@example.org", ["SIZE=999999999999"]) \
            == size_refusal(999999999999, config.server.max_message_size)
        tx = Transaction()
        await runtime.engine.mail(tx, "a@example.org")
        for n in range(2):
            assert await runtime.engine.rcpt(tx, f"u{n}@dienbien.gov.vn") is None
        reply = await runtime.engine.rcpt(tx, "u3@dienbien.gov.vn")
        assert reply is not None and (reply.code, reply.status) == (452, "4.5.3")
        assert tx.decisions[-1].finding.code == "recipients.too_many"
    finally:
        await runtime.aclose()


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nmax_recipientz = 5\n", "server.max_recipientz: unknown key"),
    ('[server]\nmax_recipients = "many"\n', "server.max_recipients: input should be a valid integer"),
    ('[listeners.mx]\nbind = "25"\n', "listeners.mx.bind: expected HOST:PORT, got '25'"),
    ('[listeners.mx]\nbind = "127.0.0.1:25"\nkind = "pop3"\n', "listeners.mx.kind:"),
    ('[server]\ntrusted_networks = ["10.0.0.0/33"]\n', "server.trusted_networks.0: expected a CIDR"),
    ('[queue]\nmax_queue_lifetime = "5 days"\n', "queue.max_queue_lifetime: expected a duration"),
    ("[policies.nonexistent]\n", "policies.nonexistent: unknown policy"),
    ('[policies.webmail.actions]\n"webmail.nosuch" = "log"\n',
     "policies.webmail.actions.webmail.nosuch: policy webmail has no finding code"),
    ("[policies.size]\n", "policies.size: size is a built-in limit, not a policy: set "
     "server.max_message_size"),
    ('[policies.headers]\naction = "drop"\n', "policies.headers.action:"),
    ("[policies.headers]\nmax_line_length = 10\n", "policies.headers.max_line_length:"),
    ('[backend]\nkind = "smtp"\n', "backend.port: required when backend.kind is 'smtp'"),
    ("[server\n", "not valid TOML"),
])
def test_errors_name_the_key_and_exit_78(tmp_path: Path, text: str, message: str):
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        configure(load(path))
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

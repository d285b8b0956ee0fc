"""`relay archive ...` as an auditor or administrator runs it."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from relay.cli import main
from tests.archive_helpers import TIEPDAN, UBND, fill, make_config, message, open_archive, tx
from tests.fixtures.relayproc import to_toml


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": "state"},
                             "archive": {"checkpoint_every": 4, "retention": "1d",
                                         "blob_store": "files"}}))
    archive = open_archive(make_config(tmp_path, checkpoint_every=4))
    yield archive, str(path)
    archive.close()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["archive", *args], catch_exceptions=False)
    return result.exit_code, result.output


async def test_verify_exit_status_and_json(setup):
    archive, cfg = setup
    await fill(archive, 6)
    code, out = run("verify", "-c", cfg)
    assert code == 0 and "INTACT" in out and "6 entries" in out
    with archive.db.begin() as conn:
        conn.execute(sa.text("UPDATE archive_entry SET subject = 'x', subject_fold = 'x' "
                             "WHERE seq = 3"))
    code, out = run("verify", "-c", cfg)
    assert code == 1 and "TAMPERED: first bad entry #3: index row changed" in out
    code, out = run("verify", "-c", cfg, "--json")
    report = json.loads(out)
    assert code == 1 and report["first_bad"]["seq"] == 3 and report["first_bad"]["kind"] == "fields"
    code, out = run("verify", "-c", cfg, "--since", "4")
    assert code == 0
    code, out = run("verify", "-c", cfg, "--since", "2000-01-01", "--json")
    assert code == 1 and json.loads(out)["first_seq"] == 1
    code, out = run("verify", "-c", cfg, "--since", "2999-01-01", "--json")
    assert code == 0 and json.loads(out)["entries"] == 0


async def test_verify_without_public_key_is_a_usage_error(setup):
    archive, cfg = setup
    archive.public_key_path.unlink()
    code, _ = run("verify", "-c", cfg)
    assert code == 2


async def test_log_filters_and_json(setup):
    archive, cfg = setup
    await fill(archive, 2)
    raw = message(5, subject="Phản ánh của công dân")
    await archive.record(tx("dan@example.vn", TIEPDAN), raw, raw)
    code, out = run("log", "-c", cfg, "--subject", "PHẢN ÁNH", "--json")
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and entry["mailbox"] == TIEPDAN and entry["sender"] == "dan@example.vn"
    code, out = run("log", "-c", cfg, "--from", UBND)
    assert out.count("\n") == 2
    code, out = run("log", "-c", cfg, "--since", "2000-01-01", "--until", "2000-12-31")
    assert out == ""
    code, out = run("log", "-c", cfg, "--to", TIEPDAN)
    assert "Phản ánh của công dân" in out
    code, out = run("log", "-c", cfg, "--since", "yesterday")
    assert code == 2


async def test_show_requires_a_reason_and_is_logged(setup):
    archive, cfg = setup
    await fill(archive, 1)
    code, _ = run("show", "-c", cfg, "1")
    assert code == 2
    code, out = run("show", "-c", cfg, "1", "--reason", "đơn thư số 3")
    assert code == 0 and "Subject: Thông báo số 12/TB-UBND" in out
    code, out = run("access-log", "-c", cfg, "--json")
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert entry["action"] == "show" and entry["target"]["entry"] == 1
    assert entry["reason"] == "đơn thư số 3"


async def test_hold_purge_release_commands(setup, tmp_path):
    archive, cfg = setup
    await fill(archive, 2)
    code, out = run("hold", "-c", cfg, UBND, "--reason", "thanh tra 2026")
    assert code == 0
    code, out = run("hold", "-c", cfg)
    assert UBND in out and "thanh tra 2026" in out
    code, out = run("purge", "-c", cfg, "--json")
    assert json.loads(out)["purged"] == []  # nothing is a day old yet
    code, out = run("release", "-c", cfg, UBND, "--reason", "xong")
    assert code == 0
    code, _ = run("release", "-c", cfg, UBND, "--reason", "again")
    assert code == 1


def test_keygen_refuses_to_replace_a_key(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": "state"}}))
    code, out = run("keygen", "-c", str(path))
    assert code == 0 and "key id" in out
    key = tmp_path / "state" / "archive" / "signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    code, _ = run("keygen", "-c", str(path))
    assert code == 1


def test_read_only_commands_say_when_there_is_no_archive(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": "state"}}))
    code, out = run("log", "-c", str(path))
    assert code == 2 and "no archive" in out
    code, out = run("verify", "-c", str(path))
    assert code == 2 and "no archive" in out


async def test_key_rotation_keeps_old_checkpoints_verifiable(setup, tmp_path):
    archive, cfg = setup
    await fill(archive, 2)  # checkpoint #1 with the first key
    old_pub = archive.public_key_path.read_bytes()
    code, _ = run("keygen", "-c", cfg, "--force")
    assert code == 0
    rotated = open_archive(make_config(tmp_path, checkpoint_every=4))  # loads the new key
    await fill(rotated, 3, start=2)  # checkpoint #4 with the new key
    rotated.close()
    code, out = run("verify", "-c", cfg, "--json")
    assert code == 0 and json.loads(out)["checkpoints"] == 2
    # the new key alone cannot vouch for the old checkpoint
    code, out = run("verify", "-c", cfg, "--json", "--public-key",
                    str(archive.public_key_path))
    report = json.loads(out)
    assert code == 1 and report["first_bad"]["kind"] == "signature"
    assert report["first_bad"]["seq"] == 1
    [retired] = archive.public_key_path.parent.glob("signing.key.pub.old-*")
    assert retired.read_bytes() == old_pub

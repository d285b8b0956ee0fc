"""`relay archive ...` as an auditor or administrator runs it."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from relay.archive import chain, schema
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


def _config(tmp_path, **archive) -> str:
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": "state"},
                             "archive": {"checkpoint_every": 4, "retention": "1d",
                                         "blob_store": "files", **archive}}))
    return str(path)


async def test_key_rotation_needs_the_retired_key_configured(setup, tmp_path):
    archive, cfg = setup
    await fill(archive, 2)  # checkpoint #1 with the first key
    old_pub = archive.public_key_path.read_bytes()
    code, out = run("keygen", "-c", cfg, "--force")
    [retired] = archive.public_key_path.parent.glob("signing.key.pub.old-*")
    assert code == 0 and str(retired) in out and "archive.retired_public_keys" in out
    assert retired.read_bytes() == old_pub
    rotated = open_archive(make_config(tmp_path, checkpoint_every=4))  # loads the new key
    await fill(rotated, 3, start=2)  # checkpoint #4 with the new key
    rotated.close()
    # the retired key lies beside the current one, but verify uses no key it is not given
    code, out = run("verify", "-c", cfg, "--json")
    report = json.loads(out)
    assert code == 1 and (report["first_bad"]["seq"], report["first_bad"]["kind"]) == (
        1, "signature")
    code, out = run("verify", "-c", _config(tmp_path, retired_public_keys=[
        str(retired.relative_to(tmp_path / "state"))]), "--json")
    assert code == 0 and json.loads(out)["checkpoints"] == 2
    code, _ = run("verify", "-c", cfg, "--public-key", str(archive.public_key_path),
                  "--public-key", str(retired))
    assert code == 0


async def test_verify_ignores_a_public_key_planted_beside_the_real_one(setup, tmp_path):
    """Whoever can write the database and the state folder rewrites entry #2 and signs a
    checkpoint for it with a key of their own, named like a retired one."""
    archive, cfg = setup
    await fill(archive, 2)  # checkpoint #1 only
    planted = archive.public_key_path.with_name("signing.key.pub.old-0123456789abcdef")
    chain.generate_keys(tmp_path / "mine.key", planted)
    mine = chain.load_private(tmp_path / "mine.key")
    with archive.db.begin() as conn:
        conn.execute(sa.text("UPDATE archive_entry SET sender = 'forged@else.vn' WHERE seq = 2"))
        row = conn.execute(sa.select(schema.entry).where(schema.entry.c.seq == 2)).mappings().one()
        forged = chain.link(row["prev_hash"], chain.fields_digest(chain.entry_fields(row)))
        conn.execute(sa.text("UPDATE archive_entry SET entry_hash = :h WHERE seq = 2"),
                     {"h": forged})
        conn.execute(sa.text("UPDATE archive_head SET hash = :h WHERE chain = 'entries'"),
                     {"h": forged})
        at = chain.now()
        kid = chain.key_id(mine.public_key())
        signature = mine.sign(chain.checkpoint_message(2, forged, chain.timestamp(at), kid))
        conn.execute(schema.checkpoint.insert().values(
            seq=2, entry_hash=forged, signed_at=at, node="x", key_id=kid,
            signature=signature.hex()))
    code, out = run("verify", "-c", cfg, "--json")
    report = json.loads(out)
    assert code == 1, out
    assert (report["first_bad"]["seq"], report["first_bad"]["kind"]) == (2, "signature")


async def test_verify_warns_when_nothing_is_signed_yet(tmp_path):
    cfg = _config(tmp_path)
    archive = open_archive(make_config(tmp_path, checkpoint_every=4), keys=False)
    await fill(archive, 2)
    archive.close()
    other = tmp_path / "auditor.pub"
    chain.generate_keys(tmp_path / "unused.key", other)
    code, out = run("verify", "-c", cfg, "--public-key", str(other))
    assert code == 0 and "WARNING: nothing is signed yet" in out
    assert "INTACT (not all signed" in out
    code, out = run("verify", "-c", cfg, "--public-key", str(other), "--json")
    assert json.loads(out)["warnings"][0].startswith("nothing is signed yet")


async def test_verify_warns_about_entries_newer_than_the_last_checkpoint(setup):
    archive, cfg = setup
    await fill(archive, 3)  # #1 signed, #2–#3 not
    code, out = run("verify", "-c", cfg)
    assert code == 0 and "WARNING: entries #2–#3 are not yet signed" in out
    assert run("checkpoint", "-c", cfg)[0] == 0
    code, out = run("verify", "-c", cfg)
    assert code == 0 and "WARNING" not in out and out.rstrip().endswith("INTACT")


def test_an_unreadable_export_is_exit_2_not_tampered(setup, tmp_path):
    _, cfg = setup
    public = str(setup[0].public_key_path)
    missing = tmp_path / "nothing-here"
    missing.mkdir()
    code, out = run("verify", "--export", str(missing), "--public-key", public)
    assert code == 2 and "cannot read" in out and "TAMPERED" not in out
    (missing / "manifest.json").write_text("{not json")
    code, out = run("verify", "--export", str(missing), "--public-key", public)
    assert code == 2 and "TAMPERED" not in out
    (missing / "manifest.json").write_text('{"format": "something else"}')
    code, out = run("verify", "--export", str(missing), "--public-key", public)
    assert code == 2 and "not an archive export" in out


async def test_export_signs_and_never_leaves_entries_out(setup, tmp_path):
    archive, cfg = setup
    await fill(archive, 3)  # only #1 signed
    code, out = run("export", "-c", cfg, "-o", str(tmp_path / "e"), "--reason", "thanh tra")
    assert code == 0 and "exported 3 entries" in out and "skipped" not in out
    assert "signed the chain head" in out
    code, out = run("verify", "--export", str(tmp_path / "e"), "--public-key",
                    str(archive.public_key_path))
    assert code == 0 and "INTACT" in out


async def test_export_without_a_key_fails_instead_of_skipping(tmp_path):
    cfg = _config(tmp_path)
    archive = open_archive(make_config(tmp_path, checkpoint_every=4), keys=False)
    await fill(archive, 2)
    archive.close()
    code, out = run("export", "-c", cfg, "-o", str(tmp_path / "e"), "--reason", "x")
    assert code == 1 and "not yet covered" in out and "keygen" in out


async def test_times_are_printed_with_their_zone(setup):
    archive, cfg = setup
    await fill(archive, 1)
    archive.hold(UBND, "inspector", "case 1")
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    for command in (("log",), ("access-log",), ("hold",)):
        code, out = run(*command, "-c", cfg)
        assert code == 0 and re.search(stamp, out), (command, out)
    code, out = run("show", "-c", cfg, "1", "--reason", "x")
    assert re.search(r"recorded " + stamp, out)


async def test_release_and_purge_need_the_signing_key(setup, tmp_path):
    archive, cfg = setup
    await fill(archive, 1)
    assert run("hold", "-c", cfg, UBND, "--reason", "case 1")[0] == 0
    archive.signing_key_path.rename(tmp_path / "elsewhere.key")
    code, out = run("release", "-c", cfg, UBND, "--reason", "done")
    assert code == 1 and "needs the signing key" in out
    assert [r["mailbox"] for r in archive.holds()] == [UBND]  # nothing changed


# --- hostile text on the terminal --------------------------------------------------------
TITLE = "\x1b]0;pwned\x07"  # OSC 0: sets the terminal's window title
CLEAR = "\x1b[2J\x1b[H"  # CSI: clear the screen, cursor home
BIDI = "\u202egpj.exe"  # right-to-left override: reads as "exe.jpg"


async def test_stored_text_cannot_drive_the_terminal(setup):
    archive, cfg = setup
    subject = f"Thông báo {TITLE}{CLEAR}{BIDI}\u2028\x9b31m"
    raw = message(1, subject=subject)
    await archive.record(tx(UBND, TIEPDAN), raw, raw)
    archive.hold(TIEPDAN, "inspector", f"case {TITLE}")
    outputs = {
        "log": run("log", "-c", cfg)[1],
        "show": run("show", "-c", cfg, "1", "--reason", f"why {CLEAR}")[1],
        "access-log": run("access-log", "-c", cfg)[1],
        "hold": run("hold", "-c", cfg)[1],
    }
    for name, out in outputs.items():
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2028]", out), name
    assert "Thông báo \\x1b]0;pwned\\x07\\x1b[2J\\x1b[H\\u202egpj.exe\\u2028\\x9b31m" \
        in outputs["log"]
    assert "Subject: Thông báo \\x1b]0;pwned" in outputs["show"]
    assert "why \\x1b[2J" in outputs["access-log"]
    assert "case \\x1b]0;pwned\\x07" in outputs["hold"]
    # --json keeps the exact text (JSON escapes control characters itself)
    [entry] = [json.loads(line) for line in run("log", "-c", cfg, "--json")[1].splitlines()[:1]]
    assert entry["subject"] == subject

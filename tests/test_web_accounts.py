"""The console's accounts: the CLI, argon2id hashes, lockout, and the tables' migrations
beside the directory's and the archive's in one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relay.archive import Archive
from relay.db import make_engine
from relay.directory.database import migrate as migrate_directory
from relay.web import schema
from relay.web.accounts import AccountError, Accounts, Role
from tests.archive_helpers import make_config
from tests.fixtures.relayproc import run_cli, to_toml


@pytest.fixture
def accounts(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    schema.migrate(engine)
    yield Accounts(engine)
    engine.dispose()


def test_add_and_authenticate(accounts):
    user = accounts.add("kiemtoan1", "auditor", "mot-mat-khau-dai")
    assert user.role is Role.AUDITOR and user.enabled and user.can("archive")
    assert not user.can("petitions") and not user.can("admin")
    with accounts.db.connect() as conn:
        stored = conn.execute(sa.select(schema.user.c.password_hash)).scalar()
    assert stored.startswith("$argon2id$") and "mot-mat-khau-dai" not in stored
    assert accounts.authenticate("kiemtoan1", "mot-mat-khau-dai", 5, 60).last_login_at
    assert accounts.authenticate("kiemtoan1", "sai", 5, 60) is None
    assert accounts.authenticate("nobody", "mot-mat-khau-dai", 5, 60) is None


@pytest.mark.parametrize("name", ["", "a", "Kiemtoan", "kiểm", "a b", "-x", "x" * 65, "a\x00b",
                                  "../x"])
def test_bad_names_are_refused(accounts, name):
    with pytest.raises(AccountError):
        accounts.add(name, "auditor", "mot-mat-khau-dai")


def test_short_password_unknown_role_duplicate_bad_mailbox(accounts):
    with pytest.raises(AccountError, match="10 characters"):
        accounts.add("a1", "auditor", "short")
    with pytest.raises(AccountError, match="role"):
        accounts.add("a1", "root", "mot-mat-khau-dai")
    accounts.add("a1", "petitions", "mot-mat-khau-dai", ["TiepDan@DienBien.gov.vn"])
    assert accounts.get("a1").mailboxes == ("tiepdan@dienbien.gov.vn",)
    with pytest.raises(AccountError, match="exists"):
        accounts.add("a1", "auditor", "mot-mat-khau-dai")
    with pytest.raises(AccountError, match="mailbox"):
        accounts.assign("a1", ["not an address"])


def test_lockout_counts_failures_in_a_row(accounts):
    accounts.add("a1", "auditor", "mot-mat-khau-dai")
    for _ in range(2):
        assert accounts.authenticate("a1", "wrong-password", 3, 600) is None
    assert accounts.authenticate("a1", "mot-mat-khau-dai", 3, 600) is not None  # resets
    for _ in range(3):
        assert accounts.authenticate("a1", "wrong-password", 3, 600) is None
    assert accounts.get("a1").locked()
    assert accounts.authenticate("a1", "mot-mat-khau-dai", 3, 600) is None  # locked
    # the lockout ends by itself...
    with accounts.db.begin() as conn:
        conn.execute(sa.update(schema.user).values(
            locked_until=schema.now() - timedelta(seconds=1)))
    assert accounts.authenticate("a1", "mot-mat-khau-dai", 3, 600) is not None
    # ...or by unlock / a new password
    for _ in range(3):
        accounts.authenticate("a1", "wrong-password", 3, 600)
    accounts.set_password("a1", "mat-khau-moi-123")
    assert accounts.authenticate("a1", "mat-khau-moi-123", 3, 600) is not None


def test_disable_passwd_and_logout_bump_the_session_epoch(accounts):
    accounts.add("a1", "auditor", "mot-mat-khau-dai")
    epochs = [accounts.get("a1").session_epoch]
    accounts.set_enabled("a1", False)
    epochs.append(accounts.get("a1").session_epoch)
    assert accounts.authenticate("a1", "mot-mat-khau-dai", 5, 60) is None  # disabled
    accounts.set_enabled("a1", True)
    accounts.set_password("a1", "mat-khau-moi-123")
    epochs.append(accounts.get("a1").session_epoch)
    accounts.end_sessions("a1")
    epochs.append(accounts.get("a1").session_epoch)
    assert epochs == sorted(set(epochs)) and len(epochs) == 4


def test_secret_is_made_once_and_shared(tmp_path):
    url = f"sqlite:///{tmp_path / 'web.db'}"
    one, two = make_engine(url), make_engine(url)
    schema.migrate(one)
    schema.migrate(two)
    try:
        a, b = Accounts(one).secret(), Accounts(two).secret()
        assert a == b and len(a) == 64
    finally:
        one.dispose()
        two.dispose()


def _cli(config, *args, input=None):
    return run_cli("web", "-c", str(config), "user", *args, input=input)


def test_cli_user_commands(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(to_toml({"server": {"state_dir": "var"}}))
    done = _cli(config, "add", "tiepdan1", "--role", "petitions", "--password-stdin",
                "--mailbox", "tiepdan@dienbien.gov.vn", input=b"mat-khau-tiep-dan\n")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "var" / "directory.db").exists()  # the relay's database, by the config
    # -c after the subcommand works too
    done = run_cli("web", "user", "add", "quantri1", "--role", "admin", "--password-stdin",
                   "-c", str(config), input=b"mat-khau-quan-tri\n")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in _cli(config, "list", "--json").stdout.splitlines()]
    assert [(r["name"], r["role"], r["mailboxes"]) for r in rows] == [
        ("quantri1", "admin", []), ("tiepdan1", "petitions", ["tiepdan@dienbien.gov.vn"])]
    assert _cli(config, "disable", "tiepdan1").returncode == 0
    assert "disabled" in _cli(config, "list").stdout.decode()
    assert _cli(config, "passwd", "tiepdan1", "--password-stdin",
                input=b"mat-khau-moi-123\n").returncode == 0
    assert _cli(config, "assign", "tiepdan1", "--mailbox",
                "tiepdan.stttt@dienbien.gov.vn").returncode == 0
    assert "tiepdan.stttt@" in _cli(config, "list").stdout.decode()
    for args, words in ((("add", "x1", "--role", "auditor", "--password-stdin"), b"10 characters"),
                        (("add", "tiepdan1", "--role", "auditor", "--password-stdin"), b"exists"),
                        (("disable", "nobody"), b"no user nobody"),
                        (("add", "x2", "--role", "root", "--password-stdin"), b"root")):
        done = _cli(config, *args, input=b"short\n" if "x1" in args else b"long-enough-pw\n")
        assert done.returncode != 0 and words in done.stderr, (args, done.stderr)
    # no terminal and no --password-stdin: refuse, do not hang
    done = _cli(config, "add", "x3", "--role", "auditor", input=b"")
    assert done.returncode != 0 and b"--password-stdin" in done.stderr


def _tables(engine):
    return set(sa.inspect(engine).get_table_names())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_share_the_database(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else ""
    config = make_config(tmp_path, url=url)
    archive = Archive.open(config)
    try:
        migrate_directory(archive.db)
        schema.migrate(archive.db)
        schema.migrate(archive.db)  # idempotent
        tables = _tables(archive.db)
        assert {"web_user", "web_user_mailbox", "web_secret", "web_verify",
                "web_alembic_version", "archive_alembic_version",
                "directory_alembic_version", "archive_entry"} <= tables
        with archive.db.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM web_alembic_version")
                                ).scalar() == "w001"
        Accounts(archive.db).add("kiemtoan1", "auditor", "mot-mat-khau-dai")
        assert Accounts(archive.db).authenticate("kiemtoan1", "mot-mat-khau-dai", 5, 60)
    finally:
        archive.close()

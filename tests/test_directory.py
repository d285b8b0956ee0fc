"""The directory store on SQLite and on a real PostgreSQL: rules of Điều 4, change log,
delegation (Điều 8), cache invalidation and SMTP AUTH throttling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from relay.config import Config, from_dict
from relay.directory import Directory, DirectoryError, DirectoryStore
from relay.directory.database import VERSION_TABLE
from relay.directory.naming import NamingError, render_pattern

DOMAIN = "dienbien.gov.vn"
PASSWORD = "mat-khau-dai-12"


def make_config(tmp_path: Path, url: str = "", **directory: object) -> Config:
    return from_dict({
        "server": {"state_dir": str(tmp_path / "state"), "local_domains": [DOMAIN]},
        "directory": {"url": url, "auth_failure_delay": 0, "poll_interval": 0.2, **directory},
    })


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def directory(tmp_path: Path, db_url: str) -> Directory:
    d = Directory(make_config(tmp_path, db_url))
    seed(d)
    yield d
    d.close()


def seed(d: Directory) -> None:
    with d.write("test", "QĐ số 1/QĐ-UBND") as w:
        w.add_agency("ubnd", "Ủy ban nhân dân tỉnh")
        w.add_agency("stttt", "Sở Thông tin và Truyền thông", parent="ubnd")
        an = w.add_person("Nguyễn Văn An", "stttt", hr_id="NV1")
        binh = w.add_person("Trần Thị Bình", "stttt", hr_id="NV2")
        w.add_mailbox(f"annv@{DOMAIN}", "personal", "stttt", an, PASSWORD)
        w.add_mailbox(f"binhtt@{DOMAIN}", "personal", "stttt", binh)
        w.add_mailbox(f"stttt@{DOMAIN}", "official", "stttt", an)
        w.add_mailbox(f"tiepdan.stttt@{DOMAIN}", "citizen_intake", "stttt")


def test_migrations_use_their_own_version_table(directory: Directory):
    with directory.db.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        assert VERSION_TABLE in tables and "alembic_version" not in tables
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    # opening again is a no-op and keeps the data
    again = Directory(directory.config)
    assert again.mailbox(f"annv@{DOMAIN}")["kind"] == "personal"
    again.close()


@pytest.mark.parametrize("address,kind,message", [
    ("ubnd@dienbien.gov.vn", "personal", "reserved"),
    ("tiepdan@dienbien.gov.vn", "personal", "reserved"),
    ("stttt@dienbien.gov.vn", "personal", "reserved"),
    ("tiepdan.stttt@dienbien.gov.vn", "personal", "reserved"),
    ("tiepdan.moi@dienbien.gov.vn", "personal", "reserved"),
    ("postmaster@dienbien.gov.vn", "personal", "reserved"),
    ("khac@dienbien.gov.vn", "official", "must be stttt@"),
    ("tiepdan@dienbien.gov.vn", "citizen_intake", "must be tiepdan.stttt@"),
    ("an@gmail.com", "personal", "domain"),
    ("an..b@dienbien.gov.vn", "personal", "name may use"),
    ("ANNV@DIENBIEN.GOV.VN", "personal", "already in use"),
])
def test_naming_rules_of_article_4(directory: Directory, address: str, kind: str,
                                   message: str):
    with pytest.raises(DirectoryError, match=message), directory.write("t", "QĐ 2") as w:
        owner = w.add_person("Lê Văn Cường", "stttt") if kind == "personal" else None
        w.add_mailbox(address, kind, "stttt", owner)
    # nothing of the refused transaction was written
    assert directory.log(key="Lê Văn Cường") == []


def test_agency_code_cannot_take_a_personal_address(directory: Directory):
    with pytest.raises(DirectoryError, match="personal mailbox"), \
            directory.write("t", "QĐ 2") as w:
        w.add_agency("annv", "Sở giả")


def test_one_personal_mailbox_per_person(directory: Directory):
    with pytest.raises(DirectoryError, match="one mailbox per member"), \
            directory.write("t", "QĐ 2") as w:
        w.add_mailbox(f"an.nguyen@{DOMAIN}", "personal", "stttt", w.person("NV1"))


def test_removed_address_is_quarantined_then_reissued(tmp_path: Path, db_url: str):
    d = Directory(make_config(tmp_path, db_url, quarantine="30d"))
    seed(d)
    with d.write("t", "QĐ 3 nghỉ hưu") as w:
        w.set_status(f"annv@{DOMAIN}", "removed")
    with pytest.raises(DirectoryError, match="quarantined until"), d.write("t", "QĐ 4") as w:
        w.add_mailbox(f"annv@{DOMAIN}", "personal", "stttt", w.add_person("Nguyễn Văn Anh",
                                                                             "stttt"))
    # the removed mailbox itself can come back (same owner)
    with d.write("t", "QĐ 5") as w:
        w.set_status(f"annv@{DOMAIN}", "active")
    assert d.mailbox(f"annv@{DOMAIN}")["status"] == "active"
    d.close()
    # with no quarantine the address is free for someone else once removed
    d = Directory(make_config(tmp_path, db_url, quarantine=0))
    with d.write("t", "QĐ 6") as w:
        w.set_status(f"annv@{DOMAIN}", "removed")
        w.add_mailbox(f"annv@{DOMAIN}", "personal", "stttt", w.add_person("Nguyễn Văn Anh",
                                                                             "stttt"))
    assert d.mailbox(f"annv@{DOMAIN}")["owner_name"] == "Nguyễn Văn Anh"
    d.close()


def test_every_write_is_logged_with_basis_and_the_log_is_append_only(directory: Directory):
    with pytest.raises(DirectoryError, match="legal basis"), directory.write("t", " ") as w:
        w.set_status(f"binhtt@{DOMAIN}", "suspended")
    with directory.write("admin1", "QĐ số 7/QĐ-VP ngày 02/03/2026") as w:
        w.set_status(f"binhtt@{DOMAIN}", "suspended")
    entry = directory.log(key=f"binhtt@{DOMAIN}")[-1]
    assert entry["actor"] == "admin1" and entry["action"] == "mailbox.suspend"
    assert entry["basis"] == "QĐ số 7/QĐ-VP ngày 02/03/2026"
    assert entry["before"]["status"] == "active" and entry["after"]["status"] == "suspended"
    with directory.write("admin1", "QĐ 8") as w:
        w.set_password(f"binhtt@{DOMAIN}", "another-long-secret")
    logged = str(directory.log())
    assert "another-long-secret" not in logged and "argon2" not in logged
    with pytest.raises(sa.exc.DBAPIError), directory.db.begin() as conn:
        conn.execute(sa.text("UPDATE directory_changes SET basis = 'forged'"))
    with pytest.raises(sa.exc.DBAPIError), directory.db.begin() as conn:
        conn.execute(sa.text("DELETE FROM directory_changes"))


def test_suggest_address_handles_diacritics_and_d(directory: Directory):
    assert render_pattern("{given}{initials}", "Nguyễn Văn An") == "annv"
    assert render_pattern("{given}.{family}{middle}", "Nguyễn Văn An") == "an.nguyenvan"
    assert render_pattern("{given}{initials}", "Đặng Đình Đức") == "ducdd"
    assert render_pattern("{family}.{given}", "  ĐỖ   THỊ   HẰNG ") == "do.hang"
    # annv@ is taken: the next free one
    assert directory.suggest_address("Nguyễn Văn An") == f"annv2@{DOMAIN}"
    with pytest.raises(NamingError):
        render_pattern("{nope}", "Nguyễn Văn An")


async def test_delegation_handover_and_mailbox_info(directory: Directory):
    store = DirectoryStore(directory.config, directory)
    info = await store.mailbox(f"STTTT@{DOMAIN}")
    assert info.kind == "official" and info.owner == f"annv@{DOMAIN}"
    assert info.may_be_used_by(f"annv@{DOMAIN}") and not info.may_be_used_by(f"binhtt@{DOMAIN}")
    with directory.write("t", "QĐ ủy quyền 9") as w:
        w.delegate(f"stttt@{DOMAIN}", f"binhtt@{DOMAIN}")
    store.invalidate()
    info = await store.mailbox(f"stttt@{DOMAIN}")
    assert info.delegates == frozenset({f"binhtt@{DOMAIN}"})
    assert info.may_be_used_by(f"binhtt@{DOMAIN}")
    # a personal mailbox is never delegated (Điều 7.3)
    with pytest.raises(DirectoryError, match="personal"), directory.write("t", "QĐ") as w:
        w.delegate(f"annv@{DOMAIN}", f"binhtt@{DOMAIN}")
    # handover (Điều 8): new head, delegations end, the old head loses it
    with directory.write("t", "QĐ bổ nhiệm 10") as w:
        new_password = w.handover(f"stttt@{DOMAIN}", "NV2")
    store.invalidate()
    info = await store.mailbox(f"stttt@{DOMAIN}")
    assert info.owner == f"binhtt@{DOMAIN}" and info.delegates == frozenset()
    assert not info.may_be_used_by(f"annv@{DOMAIN}")
    assert await store.authenticate(f"stttt@{DOMAIN}", new_password, "192.0.2.1")
    await store.aclose()


async def test_cache_sees_a_change_from_another_writer_within_the_poll_interval(
        directory: Directory):
    store = DirectoryStore(directory.config)  # its own engine: like another node
    assert (await store.mailbox(f"binhtt@{DOMAIN}")).active
    with directory.write("t", "QĐ 11") as w:
        w.set_status(f"binhtt@{DOMAIN}", "suspended")
    await asyncio.sleep(directory.config.directory.poll_interval + 0.05)
    assert not (await store.mailbox(f"binhtt@{DOMAIN}")).active
    assert await store.mailbox(f"nobody@{DOMAIN}") is None
    await store.aclose()


async def test_authenticate_throttles_and_locks_out(tmp_path: Path, db_url: str,
                                                    caplog: pytest.LogCaptureFixture):
    d = Directory(make_config(tmp_path, db_url, auth_max_failures=3, auth_ip_max_failures=5,
                              auth_lockout=0.6))
    seed(d)
    store = DirectoryStore(d.config, d)
    caplog.set_level("INFO", "relay.auth")
    assert await store.authenticate("annv", PASSWORD, "192.0.2.1")  # local part is enough
    for _ in range(3):
        assert not await store.authenticate(f"annv@{DOMAIN}", "wrong-password", "192.0.2.1")
    # locked: even the right password is refused, without checking it
    assert not await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "192.0.2.2")
    assert await store.locked_out(f"annv@{DOMAIN}", "192.0.2.2")
    assert "locked out" in caplog.text and PASSWORD not in caplog.text
    assert "wrong-password" not in caplog.text
    await asyncio.sleep(0.65)
    assert await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "192.0.2.2")
    # per client IP: failures against many logins lock the IP
    for n in range(5):
        assert not await store.authenticate(f"guess{n}@{DOMAIN}", "x" * 12, "198.51.100.7")
    assert not await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "198.51.100.7")
    assert await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "192.0.2.3")
    # suspended and removed mailboxes cannot log in
    with d.write("t", "QĐ 12") as w:
        w.set_status(f"annv@{DOMAIN}", "suspended")
    assert not await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "192.0.2.4")
    with d.write("t", "QĐ 13") as w:
        w.set_status(f"annv@{DOMAIN}", "removed")
    assert not await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "192.0.2.5")
    await store.aclose()


async def test_lookups_do_not_block_the_event_loop(directory: Directory):
    store = DirectoryStore(directory.config, directory)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    # argon2 takes ~0.1 s of CPU: the loop keeps ticking meanwhile
    assert await store.authenticate(f"annv@{DOMAIN}", PASSWORD, "192.0.2.1")
    task.cancel()
    assert ticks >= 5
    await store.aclose()


def test_nodes_starting_together_migrate_once(tmp_path: Path, db_url: str):
    import subprocess
    import sys

    from relay.directory.database import open_engine

    url = make_config(tmp_path, db_url).directory_url
    code = f"from relay.directory.database import open_engine; open_engine({url!r})"
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, stderr=subprocess.PIPE)
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    engine = open_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1
        assert conn.execute(sa.text("SELECT version FROM directory_state")).scalar() == 0
    engine.dispose()


async def test_database_down_is_a_temporary_failure_never_an_accept(tmp_path: Path):
    from relay.model import Transaction
    from relay.runtime import Runtime

    config = from_dict({
        "server": {"state_dir": str(tmp_path / "state"), "local_domains": [DOMAIN]},
        "directory": {"url": "postgresql://nobody@127.0.0.1:9/none"},  # nothing listens
        "policies": {"recipient_exists": {}},
    })
    runtime = await Runtime.build(config, archive=False, inline=True)
    tx = Transaction()
    assert await runtime.engine.mail(tx, "partner@example.org") is None
    reply = await runtime.engine.rcpt(tx, f"annv@{DOMAIN}")
    assert reply is not None and reply.code == 451 and tx.rcpt_to == []
    await runtime.aclose()

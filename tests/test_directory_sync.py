"""`relay directory sync`: hires, transfers and retirements from the HR feed (Điều 5.2, 6),
as CSV and JSON Lines on SQLite and PostgreSQL, and from a real slapd."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from directory_sync.feed import CSV_COLUMNS, FeedError, read_source
from relay.cli import main
from relay.directory import Directory
from tests.fixtures.relayproc import run_cli, to_toml

DOMAIN = "dienbien.gov.vn"
EXAMPLES = Path(__file__).resolve().parents[1] / "directory_sync" / "examples"

AGENCIES = [
    {"record": "agency", "id": "ubnd", "name": "Ủy ban nhân dân tỉnh", "status": "active",
     "basis": "QĐ số 28/2005/QĐ-UBND"},
    {"record": "agency", "id": "stttt", "name": "Sở Thông tin và Truyền thông", "parent": "ubnd",
     "status": "active", "basis": "QĐ số 100/QĐ-UBND"},
    {"record": "agency", "id": "snv", "name": "Sở Nội vụ", "parent": "ubnd", "status": "active",
     "basis": "QĐ số 100/QĐ-UBND"},
]
V1 = AGENCIES + [
    {"record": "person", "id": "NV1", "name": "Nguyễn Văn An", "agency": "stttt",
     "title": "Chuyên viên", "status": "active", "basis": "QĐ tuyển dụng số 1/QĐ-SNV"},
    {"record": "person", "id": "NV2", "name": "Trần Thị Bình", "agency": "snv",
     "title": "Trưởng phòng", "status": "active", "address": f"binh.tranthi@{DOMAIN}",
     "basis": "QĐ tuyển dụng số 2/QĐ-SNV"},
    {"record": "person", "id": "NV3", "name": "Lê Văn Cường", "agency": "stttt",
     "title": "Chuyên viên", "status": "active", "basis": "QĐ tuyển dụng số 3/QĐ-SNV"},
]
V2 = [
    AGENCIES[0],
    AGENCIES[1] | {"name": "Sở Thông tin và Truyền thông tỉnh Điện Biên",
                   "basis": "QĐ đổi tên số 200/QĐ-UBND"},
    AGENCIES[2],
    # transfer to snv with a new address (Điều 6.2)
    V1[3] | {"agency": "snv", "address": f"an.nguyenvan@{DOMAIN}",
             "basis": "QĐ điều động số 7/QĐ-SNV ngày 01/04/2026"},
    V1[4],
    # retirement (Điều 6.3)
    V1[5] | {"status": "retired", "basis": "QĐ nghỉ hưu số 8/QĐ-SNV ngày 01/04/2026"},
    # a new hire whose name has đ and diacritics
    {"record": "person", "id": "NV4", "name": "Đỗ Đức Đạt", "agency": "stttt",
     "title": "Chuyên viên", "status": "active", "basis": "QĐ tuyển dụng số 9/QĐ-SNV"},
]


def write_feed(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(out.getvalue(), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def config_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = "" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({"server": {"state_dir": "state", "local_domains": [DOMAIN]},
                             "directory": {"url": url}}))
    return path


def sync(config_path: Path, source: Path | str, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["directory", "sync", "--source", str(source), "--json",
                                       *extra, "-c", str(config_path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def directory(config_path: Path) -> Directory:
    from relay.config import load

    return Directory(load(config_path))


def state(config_path: Path) -> tuple[int, dict[str, tuple[str, str]]]:
    d = directory(config_path)
    try:
        boxes = {b["address"]: (b["agency"], b["status"])
                 for b in d.mailboxes(status=None) + d.mailboxes(status="removed")}
        return d.version(), boxes
    finally:
        d.close()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_hire_transfer_retire_dry_run_apply_idempotent(config_path: Path, suffix: str):
    feed = write_feed(config_path.parent / f"v1{suffix}", V1)
    rc, out = sync(config_path, feed)
    assert rc == 0 and out["applied"]
    assert [s["action"] for s in out["steps"]] == ["agency.add"] * 3 + ["hire"] * 3
    version, boxes = state(config_path)
    assert boxes == {f"annv@{DOMAIN}": ("stttt", "active"),
                     f"binh.tranthi@{DOMAIN}": ("snv", "active"),
                     f"cuonglv@{DOMAIN}": ("stttt", "active")}

    feed = write_feed(config_path.parent / f"v2{suffix}", V2)
    rc, plan = sync(config_path, feed, "--dry-run")
    assert rc == 0 and not plan["applied"]
    summary = {(s["action"], s["key"]) for s in plan["steps"]}
    assert summary == {("agency.update", "stttt"), ("transfer", "NV1"), ("rename", "NV1"),
                       ("retire", "NV3"), ("hire", "NV4")}
    assert state(config_path) == (version, boxes)  # a dry run changes nothing

    rc, out = sync(config_path, feed)
    assert rc == 0 and out["applied"] and out["steps"] == plan["steps"]
    version2, boxes = state(config_path)
    assert version2 == version + 1  # one transaction
    assert boxes[f"an.nguyenvan@{DOMAIN}"] == ("snv", "active")
    assert boxes[f"cuonglv@{DOMAIN}"] == ("stttt", "removed")
    assert boxes[f"datdd@{DOMAIN}"] == ("stttt", "active")
    assert f"annv@{DOMAIN}" not in boxes  # renamed; the old address is quarantined
    d = directory(config_path)
    retire = [c for c in d.log(key=f"cuonglv@{DOMAIN}") if c["action"] == "mailbox.remove"]
    assert retire[0]["basis"] == "QĐ nghỉ hưu số 8/QĐ-SNV ngày 01/04/2026"
    assert retire[0]["actor"].startswith("directory-sync")
    d.close()

    rc, out = sync(config_path, feed)
    assert rc == 0 and out["steps"] == [] and not out["applied"]
    assert state(config_path)[0] == version2


def test_malformed_rows_are_reported_by_line_and_nothing_is_applied(config_path: Path):
    rows = V1 + [{"record": "person", "id": "NV9", "name": "Phạm Thị Dung", "agency": "nowhere",
                  "status": "active", "basis": "QĐ 10"}]
    feed = write_feed(config_path.parent / "bad.csv", rows)
    rc, out = sync(config_path, feed)
    assert rc == 1 and not out["applied"]
    assert out["problems"][0]["where"] == "line 8" and "nowhere" in out["problems"][0]["message"]
    assert state(config_path)[1] == {}  # the valid rows were not applied either

    text = feed.read_text().splitlines()
    text[3] = text[3].replace("QĐ số 100/QĐ-UBND", "")  # line 4 loses its basis
    text.insert(5, "person,NV1,Trùng Lặp,stttt,,,active,,QĐ 11")  # duplicate HR id
    feed.write_text("\n".join(text) + "\n")
    with pytest.raises(FeedError) as err:
        read_source(str(feed))
    problems = {p.where: p.message for p in err.value.problems}
    assert "basis" in problems["line 4"] and "already given at line 5" in problems["line 6"]


def test_example_feeds_are_valid_and_the_same(tmp_path: Path):
    csv_records = read_source(str(EXAMPLES / "hr.csv"))
    jsonl_records = read_source(str(EXAMPLES / "hr.jsonl"))
    strip = [(type(r).__name__, {k: v for k, v in vars(r).items() if k != "where"})
             for r in csv_records]
    assert strip == [(type(r).__name__, {k: v for k, v in vars(r).items() if k != "where"})
                     for r in jsonl_records]


def test_json_output_is_quiet_and_plain_when_piped(tmp_path: Path):
    config = tmp_path / "relay.toml"
    config.write_text(to_toml({"server": {"state_dir": "state"}}))
    proc: subprocess.CompletedProcess[bytes] = run_cli(
        "directory", "sync", "--source", str(EXAMPLES / "hr.csv"), "--dry-run", "--json",
        "-c", str(config))
    assert proc.returncode == 0 and proc.stderr == b""
    assert len(json.loads(proc.stdout)["steps"]) == 5


LDIF = """
dn: ou=agencies,dc=dienbien,dc=gov,dc=vn
objectClass: organizationalUnit
ou: agencies

dn: ou=ubnd,ou=agencies,dc=dienbien,dc=gov,dc=vn
objectClass: organizationalUnit
ou: ubnd
ou: Ủy ban nhân dân tỉnh
businessCategory: active
description: QĐ số 28/2005/QĐ-UBND

dn: ou=stttt,ou=ubnd,ou=agencies,dc=dienbien,dc=gov,dc=vn
objectClass: organizationalUnit
ou: stttt
ou: Sở Thông tin và Truyền thông
businessCategory: active
description: QĐ số 100/QĐ-UBND

dn: ou=snv,ou=ubnd,ou=agencies,dc=dienbien,dc=gov,dc=vn
objectClass: organizationalUnit
ou: snv
ou: Sở Nội vụ
businessCategory: active
description: QĐ số 100/QĐ-UBND

dn: ou=people,dc=dienbien,dc=gov,dc=vn
objectClass: organizationalUnit
ou: people

dn: employeeNumber=NV1,ou=people,dc=dienbien,dc=gov,dc=vn
objectClass: inetOrgPerson
employeeNumber: NV1
cn: Nguyễn Văn An
sn: Nguyễn
title: Chuyên viên
departmentNumber: stttt
employeeType: active
description: QĐ tuyển dụng số 1/QĐ-SNV

dn: employeeNumber=NV3,ou=people,dc=dienbien,dc=gov,dc=vn
objectClass: inetOrgPerson
employeeNumber: NV3
cn: Lê Văn Cường
sn: Lê
title: Chuyên viên
departmentNumber: stttt
employeeType: active
description: QĐ tuyển dụng số 3/QĐ-SNV
"""


def test_ldap_sync_against_slapd(slapd: Any, tmp_path: Path):
    slapd.add_ldif(LDIF)
    config = tmp_path / "relay.toml"
    config.write_text(to_toml({"server": {"state_dir": "state", "local_domains": [DOMAIN]}}))
    secret = tmp_path / "ldap.pw"
    secret.write_text(slapd.password + "\n")
    source = f"{slapd.url}/{slapd.suffix}"
    creds = ("--bind-dn", slapd.bind_dn, "--bind-password-file", str(secret))
    rc, out = sync(config, source, *creds)
    assert rc == 0, out
    assert [s["action"] for s in out["steps"]] == ["agency.add"] * 3 + ["hire"] * 2
    # parents first, taken from the LDAP tree
    assert "under ubnd" in out["steps"][1]["summary"]
    # transfer NV1 to snv, retire NV3, and a new hire
    slapd.modify("employeeNumber=NV1,ou=people,dc=dienbien,dc=gov,dc=vn",
                 {"departmentNumber": "snv", "description": "QĐ điều động số 7"})
    slapd.modify("employeeNumber=NV3,ou=people,dc=dienbien,dc=gov,dc=vn",
                 {"employeeType": "retired", "description": "QĐ nghỉ hưu số 8"})
    slapd.add_ldif("""
dn: employeeNumber=NV4,ou=people,dc=dienbien,dc=gov,dc=vn
objectClass: inetOrgPerson
employeeNumber: NV4
cn: Đỗ Đức Đạt
sn: Đỗ
departmentNumber: stttt
employeeType: active
mail: dat.doduc@dienbien.gov.vn
description: QĐ tuyển dụng số 9
""")
    rc, plan = sync(config, source, *creds, "--dry-run")
    assert {(s["action"], s["key"]) for s in plan["steps"]} == {
        ("transfer", "NV1"), ("retire", "NV3"), ("hire", "NV4")}
    rc, out = sync(config, source, *creds)
    assert rc == 0 and out["applied"]
    _, boxes = state(config)
    assert boxes[f"annv@{DOMAIN}"] == ("snv", "active")
    assert boxes[f"cuonglv@{DOMAIN}"] == ("stttt", "removed")
    assert boxes[f"dat.doduc@{DOMAIN}"] == ("stttt", "active")
    rc, out = sync(config, source, *creds)
    assert rc == 0 and out["steps"] == []
    # a wrong password is a clear error, nothing applied
    secret.write_text("wrong\n")
    rc, out = sync(config, source, *creds)
    assert rc == 1 and "cannot bind" in out["problems"][0]["message"]


"""The archive on SQLite with file blobs: what is archived, tampering, export, purge, holds."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relay.archive import Archive, ArchiveError, Filters, chain, schema
from relay.archive.export import export, mbox_quote, mbox_unquote, verify_export
from relay.archive.verify import verify_archive
from tests.archive_helpers import (
    OUTSIDE,
    PERSON,
    TIEPDAN,
    UBND,
    days_ago,
    fill,
    make_config,
    message,
    open_archive,
    tx,
)


@pytest.fixture
def arch(tmp_path):
    archive = open_archive(make_config(tmp_path))
    yield archive
    archive.close()


def verify(archive: Archive, **kw):
    return verify_archive(archive, chain.load_public(archive.public_key_path), **kw)


def sql(archive: Archive, statement: str, **params) -> None:
    with archive.db.begin() as conn:
        conn.execute(sa.text(statement), params)


# --- what is archived -----------------------------------------------------------------
async def test_official_mail_is_archived_both_ways_and_personal_mail_is_not(arch):
    raw = message(1)
    out = await arch.record(tx(UBND, OUTSIDE, PERSON), raw, raw)
    into = await arch.record(tx(OUTSIDE, "tiepdan.sotnmt@dienbien.gov.vn"), raw, raw)
    personal = await arch.record(tx(PERSON, OUTSIDE), raw, raw)
    both = await arch.record(tx(UBND, TIEPDAN), raw, raw)
    assert personal == []
    rows = {r["seq"]: r for r in arch.search(Filters())}
    assert [(rows[i]["mailbox"], rows[i]["direction"], rows[i]["kind"]) for i in out] == [
        (UBND, "out", "official")]
    assert [(rows[i]["mailbox"], rows[i]["direction"], rows[i]["kind"]) for i in into] == [
        ("tiepdan.sotnmt@dienbien.gov.vn", "in", "citizen_intake")]
    assert [(rows[i]["mailbox"], rows[i]["direction"]) for i in both] == [
        (UBND, "out"), (TIEPDAN, "in")]
    assert len(rows) == 4


async def test_opt_in_and_configured_official_list(tmp_path):
    archive = open_archive(make_config(tmp_path, mailboxes=[PERSON],
                                       official=["vanphong@dienbien.gov.vn"]))
    raw = message()
    assert await archive.record(tx(PERSON, OUTSIDE), raw, raw) == [1]
    assert await archive.record(tx(OUTSIDE, "vanphong@dienbien.gov.vn"), raw, raw) == [2]
    assert await archive.record(tx(OUTSIDE, "binh@dienbien.gov.vn"), raw, raw) == []
    assert archive.get(1)["kind"] == "personal"
    archive.close()


async def test_the_directory_decides_the_kind_when_there_is_one(tmp_path):
    """An agency's official mailbox (sotc@) reads as personal by name: the directory knows."""
    from relay.directory import Directory, DirectoryStore

    config = make_config(tmp_path)
    with Directory(config).write("test", "test") as w:
        w.add_agency("sotc", "Sở Tài chính")
        w.add_mailbox("sotc@dienbien.gov.vn", "official", "sotc")
    directory = DirectoryStore(config)
    archive = open_archive(config, directory=directory)
    raw = message()
    assert await archive.record(tx("sotc@dienbien.gov.vn", OUTSIDE), raw, raw) == [1]
    assert await archive.record(tx("nosuch@dienbien.gov.vn", OUTSIDE), raw, raw) == []
    assert await archive.record(tx(OUTSIDE, TIEPDAN), raw, raw) == [2]  # unknown: naming rule
    assert archive.get(1)["kind"] == "official"
    archive.close()
    await directory.aclose()


async def test_record_stores_exact_bytes_envelope_and_decisions(arch):
    accepted = message(7)
    delivered = b"X-Tag: converted\r\n" + accepted
    t = tx(UBND, OUTSIDE, auth="ubnd")
    t.conversions = ["tcvn.legacy"]
    [seq] = await arch.record(t, accepted, delivered)
    row = arch.get(seq)
    assert arch.read_blob(row["accepted_hash"], row["accepted_size"]) == accepted
    assert arch.read_blob(row["delivered_hash"], row["delivered_size"]) == delivered
    meta = json.loads(row["meta"])
    assert meta["auth_login"] == "ubnd"
    assert meta["client"]["ip"] == "192.0.2.7"
    assert meta["envelope"]["rcpt_to"] == [OUTSIDE]
    assert meta["conversions"] == ["tcvn.legacy"]
    assert row["subject"] == "Thông báo số 12/TB-UBND"
    assert row["message_id"] == "<7.archive-test@dienbien.gov.vn>"
    stored = arch.blobs.path(row["accepted_hash"]).read_bytes()
    assert len(stored) < len(accepted) or len(accepted) < 600  # compressed


async def test_search_filters(arch):
    await fill(arch, 3)
    raw = message(9, subject="Đơn khiếu nại đất đai", sender=OUTSIDE, to=TIEPDAN)
    await arch.record(tx(OUTSIDE, TIEPDAN), raw, raw)
    assert [r["seq"] for r in arch.search(Filters(mailbox=TIEPDAN))] == [4]
    assert [r["seq"] for r in arch.search(Filters(subject="ĐƠN KHIẾU"))] == [4]
    assert [r["seq"] for r in arch.search(Filters(recipient=OUTSIDE))] == [1, 2, 3]
    assert [r["seq"] for r in arch.search(Filters(sender=UBND.upper()))] == [1, 2, 3]
    assert arch.search(Filters(recipient="%")) == []


# --- verify: clean and tampered ----------------------------------------------------------
async def test_clean_archive_verifies(arch):
    await fill(arch, 10)
    report = verify(arch)
    assert report.ok, report.problems
    assert report.entries == 10 and report.blobs == 10
    assert report.checkpoints == 3  # #1 (first), #4, #8
    assert report.last_checkpoint == 8


def _first_bad(archive: Archive) -> tuple[int | None, str]:
    report = verify(archive)
    assert not report.ok
    bad = report.first_bad
    return bad.seq, bad.kind


async def test_changed_blob_byte_is_found_at_its_entry(arch):
    await fill(arch, 10)
    path = arch.blobs.path(arch.get(5)["accepted_hash"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert _first_bad(arch) == (5, "blob")


async def test_changed_index_row_is_found(arch):
    await fill(arch, 10)
    sql(arch, "UPDATE archive_entry SET sender = 'someone@else.vn' WHERE seq = 5")
    assert _first_bad(arch) == (5, "fields")


async def test_deleted_row_is_found(arch):
    await fill(arch, 10)
    sql(arch, "DELETE FROM archive_entry WHERE seq = 5")
    assert _first_bad(arch) == (5, "missing")


async def test_swapped_pair_is_found(arch):
    await fill(arch, 10)
    sql(arch, "UPDATE archive_entry SET seq = -1 WHERE seq = 5")
    sql(arch, "UPDATE archive_entry SET seq = 5 WHERE seq = 6")
    sql(arch, "UPDATE archive_entry SET seq = 6 WHERE seq = -1")
    assert _first_bad(arch) == (5, "link")


async def test_tail_cut_after_a_checkpoint_is_found(arch):
    await fill(arch, 10)  # checkpoints at #1, #4, #8
    sql(arch, "DELETE FROM archive_entry WHERE seq >= 7")
    # a careful attacker also moves the head back; the signed checkpoint #8 still says no
    with arch.db.begin() as conn:
        h6 = conn.execute(sa.text("SELECT entry_hash FROM archive_entry WHERE seq = 6")).scalar()
        conn.execute(sa.text("UPDATE archive_head SET seq = 6, hash = :h WHERE chain = 'entries'"),
                     {"h": h6})
    report = verify(arch)
    assert (report.first_bad.seq, report.first_bad.kind) == (7, "tail")
    assert "#7–#8 were cut off" in str(report.first_bad)


async def test_rewritten_chain_is_caught_by_the_signed_checkpoint(arch):
    await fill(arch, 6)
    sql(arch, "UPDATE archive_entry SET sender = 'forged@else.vn' WHERE seq = 2")
    # recompute every hash after the change, as someone with database access could
    with arch.db.begin() as conn:
        prev = conn.execute(sa.text("SELECT entry_hash FROM archive_entry WHERE seq = 1")).scalar()
        for row in conn.execute(sa.select(schema.entry).where(schema.entry.c.seq >= 2)
                                .order_by(schema.entry.c.seq)).mappings().all():
            new = chain.link(prev, chain.fields_digest(chain.entry_fields(row)))
            conn.execute(sa.text("UPDATE archive_entry SET prev_hash = :p, entry_hash = :h "
                                 "WHERE seq = :s"), {"p": prev, "h": new, "s": row["seq"]})
            prev = new
        conn.execute(sa.text("UPDATE archive_head SET hash = :h WHERE chain = 'entries'"),
                     {"h": prev})
    seq, kind = _first_bad(arch)
    assert (seq, kind) == (4, "checkpoint")


async def test_forged_checkpoint_signature_is_found(arch):
    await fill(arch, 5)
    sql(arch, "UPDATE archive_checkpoint SET signature = :s WHERE seq = 4", s="00" * 64)
    assert _first_bad(arch) == (4, "signature")


async def test_verify_since_checks_from_there(arch):
    await fill(arch, 10)
    sql(arch, "UPDATE archive_entry SET sender = 'x@y.vn' WHERE seq = 2")
    assert not verify(arch).ok
    report = verify(arch, since_seq=3)
    assert report.ok and report.first_seq == 3


# --- export ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["eml", "mbox"])
async def test_export_verifies_on_its_own_and_detects_changes(arch, tmp_path, fmt):
    await fill(arch, 3)
    odd = message(99, body="From the office\n>From here\nFrom")  # mbox quoting
    await arch.record(tx(OUTSIDE, TIEPDAN), odd, b"X-Converted: 1\r\n" + odd)
    await fill(arch, 4, start=3)
    arch.checkpoint()
    out = tmp_path / "export"
    summary = export(arch, Filters(mailbox=TIEPDAN), fmt, out, "auditor", "inspection 2026")
    assert summary["entries"] == 1
    public = chain.load_public(arch.public_key_path)
    report = verify_export(out, public)
    assert report.ok, report.problems
    manifest = json.loads((out / "manifest.json").read_text())
    assert all("fields" not in link for link in manifest["chain"])  # others: digests only
    assert len(manifest["chain"]) == manifest["checkpoint"]["seq"] - 4 + 1
    # only the public key: another key fails
    other = tmp_path / "other"
    chain.generate_keys(other, tmp_path / "other.pub")
    assert not verify_export(out, chain.load_public(tmp_path / "other.pub")).ok
    # one changed byte in a message
    target = out / ("archive.mbox" if fmt == "mbox" else "messages/00000004-accepted.eml")
    data = bytearray(target.read_bytes())
    data[data.index(b"MIME-Version")] ^= 0x20
    target.write_bytes(bytes(data))
    report = verify_export(out, public)
    assert (report.first_bad.seq, report.first_bad.kind) == (4, "blob")
    # the access log recorded it
    [access] = arch.access_log()
    assert access["action"] == "export" and access["who"] == "auditor"
    assert access["reason"] == "inspection 2026"


def test_mbox_quoting_round_trips():
    data = b"From a\r\n>From b\r\nFromage\r\n>>From c\nx"
    assert mbox_unquote(mbox_quote(data)) == data
    assert mbox_quote(data).startswith(b">From a")


async def test_export_edits_to_the_manifest_are_found(arch, tmp_path):
    await fill(arch, 4)
    out = tmp_path / "export"
    export(arch, Filters(), "eml", out, "auditor", "audit")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["entries"][1]["fields"]["subject"] = "Khác"
    (out / "manifest.json").write_text(json.dumps(manifest))
    report = verify_export(out, chain.load_public(arch.public_key_path))
    assert (report.first_bad.seq, report.first_bad.kind) == (2, "fields")


async def test_export_signs_what_it_exports_rather_than_leave_it_out(arch, tmp_path):
    await fill(arch, 2)  # checkpoint at #1 only
    summary = export(arch, Filters(), "eml", tmp_path / "e", "auditor", "audit")
    assert summary["entries"] == 2 and summary["signed_now"] and summary["checkpoint"] == 2
    assert verify_export(tmp_path / "e", chain.load_public(arch.public_key_path)).ok


async def test_export_without_the_key_refuses_instead_of_skipping(tmp_path):
    archive = open_archive(make_config(tmp_path), keys=False)
    await fill(archive, 2)
    with pytest.raises(ArchiveError, match=r"entries \[\[1, 2\]\] are not yet covered.*keygen"):
        export(archive, Filters(), "eml", tmp_path / "f", "auditor", "audit")
    assert not (tmp_path / "f").exists()
    archive.close()


# --- access log -------------------------------------------------------------------------
async def test_access_log_is_chained(arch):
    await fill(arch, 1)
    arch.log_access("auditor", "show", {"entry": 1}, "complaint 5")
    arch.log_access("auditor", "show", {"entry": 1}, "complaint 6")
    assert verify(arch).ok
    sql(arch, "UPDATE archive_access SET reason = 'nothing' WHERE seq = 1")
    report = verify(arch)
    assert [(p.chain, p.seq, p.kind) for p in report.problems] == [("access", 1, "fields")]


# --- retention and legal hold -------------------------------------------------------------
async def test_purge_leaves_tombstones_and_verify_green(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="30d"))
    with days_ago(31):
        await fill(archive, 3)
        raw = message(50)
        await archive.record(tx(UBND, TIEPDAN), raw, raw)  # #4 out, #5 in: one shared blob
    archive.hold(TIEPDAN, "inspector", "case 12/2026")
    report = archive.purge("admin")
    assert report.purged == [1, 2, 3, 4]
    assert report.held == {TIEPDAN: 1}
    assert report.blobs_deleted == 3  # #4's blob is still needed by held #5
    assert not archive.blobs.path(archive.get(1)["accepted_hash"]).exists()
    assert archive.blobs.path(archive.get(5)["accepted_hash"]).exists()
    result = verify(archive)
    assert result.ok, result.problems
    assert [t["seq"] for t in result.tombstones] == [1, 2, 3, 4]
    assert {t["by"] for t in result.tombstones} == {"admin"}
    with pytest.raises(ArchiveError):
        archive.read_blob(archive.get(1)["accepted_hash"], archive.get(1)["accepted_size"])
    # a tombstone nobody purged is tampering
    sql(archive, "UPDATE archive_entry SET purged_at = :t WHERE seq = 5", t=chain.now())
    assert _first_bad(archive) == (5, "tombstone")
    archive.close()


async def test_legal_hold_blocks_purge_until_released(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="1d"))
    with days_ago(2):
        await fill(archive, 2)
    assert archive.hold(UBND, "inspector", "Quyết định thanh tra 45/QĐ")
    assert not archive.hold(UBND, "inspector", "again")
    report = archive.purge("admin")
    assert report.purged == [] and report.held == {UBND: 2}
    assert archive.blobs.path(archive.get(1)["accepted_hash"]).exists()
    assert archive.release(UBND, "inspector", "case closed")
    assert archive.purge("admin").purged == [1, 2]
    assert [r["action"] for r in archive.access_log()] == ["hold", "release", "purge"]
    assert verify(archive).ok
    archive.close()


async def test_purge_respects_the_retention_period(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="30d"))
    await fill(archive, 2)
    assert archive.purge("admin").purged == []
    archive.close()


# --- durability and checkpoints -------------------------------------------------------------
async def test_no_signing_key_still_archives_but_signs_nothing(tmp_path):
    archive = open_archive(make_config(tmp_path), keys=False)
    assert await fill(archive, 2) == [1, 2]
    report = verify_archive(archive, None)
    assert report.ok and report.checkpoints == 0
    with pytest.raises(ArchiveError, match="keygen"):
        archive.checkpoint()
    archive.close()


async def test_aclose_signs_the_tail(arch):
    await fill(arch, 2)
    await arch.aclose()
    with arch.db.connect() as conn:
        assert conn.execute(sa.text("SELECT max(seq) FROM archive_checkpoint")).scalar() == 2


async def test_record_fails_loudly_when_the_database_is_gone(arch, tmp_path):
    await fill(arch, 1)
    sql(arch, "DROP TABLE archive_entry")
    raw = message()
    with pytest.raises(sa.exc.OperationalError):
        await arch.record(tx(UBND, OUTSIDE), raw, raw)


def test_archive_config_errors_name_the_key(tmp_path):
    from relay.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"archive\.kinds\.0: .*'official'"):
        from_dict({"archive": {"kinds": ["offical"]}})
    with pytest.raises(ConfigError, match=r"archive\.checkpoint_every: "):
        from_dict({"archive": {"checkpoint_every": 0}})
    with pytest.raises(ConfigError, match=r"archive\.retention: expected a duration"):
        from_dict({"archive": {"retention": "ten years"}})
    assert make_config(tmp_path, retention="3650d").archive.retention == 3650 * 86400


async def test_verify_while_the_relay_appends_is_not_fooled(arch):
    await fill(arch, 5)
    raw = message(77)
    loop = asyncio.get_running_loop()

    def append_meanwhile(done: int, _bytes: int) -> None:
        for _ in range(4):  # crosses checkpoint #8 while verify reads, as the relay would
            asyncio.run_coroutine_threadsafe(arch.record(tx(UBND, OUTSIDE), raw, raw),
                                             loop).result(30)
        arch.log_access("auditor", "show", {"entry": 1}, "meanwhile")  # signed at once

    report = await asyncio.to_thread(verify_archive, arch,
                                     chain.load_public(arch.public_key_path),
                                     progress=append_meanwhile)
    assert report.ok, report.problems
    assert report.entries == 5
    assert verify(arch).entries == 9


async def test_row_appended_behind_the_relays_back_is_found(arch):
    await fill(arch, 3)
    sql(arch, "INSERT INTO archive_entry SELECT seq + 1, recorded_at, node, queue_id, mailbox, "
              "kind, direction, sender, recipients, subject, subject_fold, message_id, "
              "accepted_hash, accepted_size, delivered_hash, delivered_size, meta, entry_hash, "
              "entry_hash, purged_at FROM archive_entry WHERE seq = 3")
    assert _first_bad(arch) == (4, "inserted")


async def test_an_idle_relay_signs_its_tail_within_the_interval(tmp_path):
    archive = open_archive(make_config(tmp_path, checkpoint_every=1000,
                                       checkpoint_interval=1.0))
    await fill(archive, 1)  # #1 signed at once (first entry)
    await fill(archive, 2)  # #2, #3: the interval has not passed yet
    with archive.db.connect() as conn:
        top = "SELECT max(seq) FROM archive_checkpoint"
        assert conn.execute(sa.text(top)).scalar() == 1
    await asyncio.sleep(1.6)
    with archive.db.connect() as conn:
        assert conn.execute(sa.text(top)).scalar() == 3
    await archive.aclose()


async def test_concurrent_sessions_share_commits_and_keep_one_chain(arch):
    commits: list[int] = []
    commit = arch.writer.commit

    def counting(batch):
        commits.append(len(batch))
        return commit(batch)

    arch.writer.commit = counting
    messages = [message(i) for i in range(40)]
    results = await asyncio.gather(*(arch.record(tx(UBND, OUTSIDE, TIEPDAN), raw, raw)
                                     for raw in messages))
    assert sorted(i for ids in results for i in ids) == list(range(1, 81))
    assert all(ids[1] == ids[0] + 1 for ids in results)  # a message's entries stay together
    assert sum(commits) == 40 and len(commits) < 40  # grouped
    assert verify(arch).ok


# --- purges and the access log under signatures (issue 10, item 5) --------------------------
def forge_access_record(archive: Archive, action: str, target: dict, who: str = "admin",
                        reason: str = "retention period ended") -> int:
    """Append a correctly chained access-log record straight into the database: all it
    takes is write access to the database, no key."""
    with archive.db.begin() as conn:
        seq, prev = conn.execute(sa.text(
            "SELECT seq, hash FROM archive_head WHERE chain = 'access'")).one()
        row = {"seq": seq + 1, "at": chain.now(), "who": who, "action": action,
               "target": chain.canonical(target).decode(), "reason": reason,
               "prev_hash": prev}
        row["entry_hash"] = chain.link(prev, chain.fields_digest(chain.access_fields(row),
                                                                 chain.ACCESS_DOMAIN))
        conn.execute(schema.access.insert().values(**row))
        conn.execute(sa.text("UPDATE archive_head SET seq = :s, hash = :h "
                             "WHERE chain = 'access'"), {"s": seq + 1, "h": row["entry_hash"]})
    return seq + 1


def erase(archive: Archive, seq: int) -> None:
    """What a forged purge does to an entry: tombstone it and delete its message."""
    row = archive.get(seq)
    sql(archive, "UPDATE archive_entry SET purged_at = :t WHERE seq = :s", t=chain.now(), s=seq)
    archive.blobs.path(row["accepted_hash"]).unlink()


async def test_a_forged_purge_record_cannot_erase_a_signed_entry(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="30d"))
    with days_ago(40):  # old enough that a real purge would have been allowed
        await fill(archive, 5)  # all signed: #1, #4 and (days later) the head
    archive.checkpoint()
    assert verify(archive).ok
    access_seq = forge_access_record(archive, "purge", {
        "entries": [[2, 2]], "cutoff": chain.timestamp(chain.now()), "retention_seconds": 1,
        "blobs": [archive.get(2)["accepted_hash"]], "held": {}})
    erase(archive, 2)
    report = verify(archive)
    assert not report.ok
    assert (report.first_bad.seq, report.first_bad.kind) == (2, "tombstone")
    assert "no signature covers" in report.first_bad.message
    assert ("access", access_seq, "unsigned") in [(p.chain, p.seq, p.kind)
                                                  for p in report.problems]


async def test_a_forged_purge_of_a_recent_entry_is_also_too_early(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="3650d"))
    await fill(archive, 3)
    forge_access_record(archive, "purge", {
        "entries": [[3, 3]], "cutoff": chain.timestamp(chain.now() + timedelta(days=1)),
        "retention_seconds": 1, "blobs": [], "held": {}})
    erase(archive, 3)
    report = verify(archive)
    why = [p.message for p in report.problems if p.seq == 3 and p.kind == "tombstone"]
    assert any("before its retention period (3650 days configured)" in w for w in why), why


async def test_verify_checks_purges_against_the_configured_retention(tmp_path):
    """A purge signed under a retention shortened for the occasion is reported by a
    verify that reads the real retention."""
    short = open_archive(make_config(tmp_path, retention="1d"))
    with days_ago(2):
        await fill(short, 2)
    assert short.purge("admin").purged == [1, 2]
    assert verify(short).ok
    short.close()
    proper = open_archive(make_config(tmp_path, retention="3650d"))
    report = verify(proper)
    assert [(p.seq, p.kind) for p in report.problems] == [(1, "tombstone"), (2, "tombstone")]
    assert "before its retention period" in report.problems[0].message
    proper.close()


async def test_a_purge_of_a_held_mailbox_is_reported(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="1d"))
    with days_ago(2):
        await fill(archive, 2)
    archive.hold(UBND, "inspector", "case 45")
    sql(archive, "DELETE FROM archive_hold")  # behind the access log's back
    assert archive.purge("admin").purged == [1, 2]  # signed, but the log says: on hold
    report = verify(archive)
    assert (report.first_bad.seq, report.first_bad.kind) == (1, "tombstone")
    assert f"while {UBND} was on legal hold" in report.first_bad.message


async def test_a_forged_release_is_reported(arch):
    await fill(arch, 1)
    arch.hold(UBND, "inspector", "case 45")
    sql(arch, "DELETE FROM archive_hold")
    seq = forge_access_record(arch, "release", {"mailbox": UBND}, who="inspector")
    report = verify(arch)
    assert [(p.chain, p.seq, p.kind) for p in report.problems] == [("access", seq, "unsigned")]


async def test_purge_and_release_refuse_without_the_key(tmp_path):
    archive = open_archive(make_config(tmp_path, retention="1d"), keys=False)
    with days_ago(2):
        await fill(archive, 2)
    assert archive.purge("admin", dry_run=True).purged == [1, 2]  # looking needs no key
    with pytest.raises(ArchiveError, match="purging needs the signing key"):
        archive.purge("admin")
    assert archive.get(1)["purged_at"] is None
    assert archive.hold(UBND, "inspector", "case 1")  # protecting needs none either
    with pytest.raises(ArchiveError, match="releasing a legal hold needs the signing key"):
        archive.release(UBND, "inspector", "done")
    assert [r["mailbox"] for r in archive.holds()] == [UBND]
    archive.close()


async def test_access_records_cut_under_a_checkpoint_are_found(arch):
    await fill(arch, 1)
    arch.log_access("auditor", "show", {"entry": 1}, "complaint 5")
    arch.log_access("auditor", "export", {"entries": [[1, 1]]}, "complaint 5")  # signed
    sql(arch, "DELETE FROM archive_access WHERE seq = 2")
    with arch.db.begin() as conn:  # and the head moved back, as a careful attacker would
        h1 = conn.execute(sa.text("SELECT entry_hash FROM archive_access WHERE seq = 1")).scalar()
        conn.execute(sa.text("UPDATE archive_head SET seq = 1, hash = :h WHERE chain = 'access'"),
                     {"h": h1})
    report = verify(arch)
    assert [(p.chain, p.seq, p.kind) for p in report.problems] == [("access", 2, "tail")]


async def test_an_access_log_rewritten_under_a_checkpoint_is_found(arch):
    await fill(arch, 1)
    arch.log_access("auditor", "show", {"entry": 1}, "complaint 5")
    sql(arch, "UPDATE archive_access SET reason = 'routine' WHERE seq = 1")
    with arch.db.begin() as conn:  # rehash it, as someone with database access could
        row = conn.execute(sa.select(schema.access)).mappings().one()
        new = chain.link(row["prev_hash"], chain.fields_digest(chain.access_fields(row),
                                                               chain.ACCESS_DOMAIN))
        conn.execute(sa.text("UPDATE archive_access SET entry_hash = :h"), {"h": new})
        conn.execute(sa.text("UPDATE archive_head SET hash = :h WHERE chain = 'access'"),
                     {"h": new})
    report = verify(arch)
    assert [(p.chain, p.seq, p.kind) for p in report.problems] == [("access", 1, "checkpoint")]


async def test_a_key_made_while_the_relay_runs_is_used_from_the_next_message(
        tmp_path, monkeypatch):
    from relay.archive import signing

    monkeypatch.setattr(signing, "RECHECK_SECONDS", 0.0)
    archive = open_archive(make_config(tmp_path), keys=False)
    await fill(archive, 2)  # no key: archived, unsigned
    chain.generate_keys(archive.signing_key_path, archive.public_key_path)  # `keygen`
    await fill(archive, 1, start=2)
    report = verify(archive)
    assert report.ok and report.last_checkpoint == 3 and report.warnings == []
    # and a key replaced by `keygen --force` takes over
    chain.generate_keys(archive.signing_key_path, tmp_path / "new.pub")
    await fill(archive, 2, start=3)  # #4 crosses checkpoint_every
    with archive.db.connect() as conn:
        kids = [r.key_id for r in conn.execute(sa.select(schema.checkpoint.c.key_id))]
    assert kids[-1] == chain.key_id(chain.load_public(tmp_path / "new.pub")) != kids[0]
    archive.close()


async def test_checkpoints_of_the_first_format_still_verify(arch):
    """v1 checkpoints (entries head only), as archives written before v2 hold them."""
    await fill(arch, 2)
    key = chain.load_private(arch.signing_key_path)
    with arch.db.begin() as conn:
        head = conn.execute(sa.text("SELECT entry_hash FROM archive_entry WHERE seq = 2")).scalar()
        at = chain.now()
        kid = chain.key_id(key.public_key())
        sig = key.sign(chain.checkpoint_message(2, head, chain.timestamp(at), kid)).hex()
        conn.execute(schema.checkpoint.insert().values(seq=2, entry_hash=head, signed_at=at,
                                                       node="old", key_id=kid, signature=sig))
    report = verify(arch)
    assert report.ok and report.last_checkpoint == 2
    sql(arch, "UPDATE archive_checkpoint SET signature = :s WHERE node = 'old'", s="00" * 64)
    assert _first_bad(arch) == (2, "signature")

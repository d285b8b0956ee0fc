"""The archive shared by several relay nodes on one PostgreSQL (blobs in the database)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import sqlalchemy as sa

from relay.archive import Filters, chain
from relay.archive.export import export, verify_export
from relay.archive.verify import verify_archive
from tests.archive_helpers import (
    TIEPDAN,
    UBND,
    days_ago,
    fill,
    make_config,
    message,
    open_archive,
    tx,
)
from tests.fixtures.relayproc import relay_env

WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from relay.archive import Archive
    from tests.archive_helpers import make_config, message, tx, UBND, TIEPDAN
    url, state, node, n, go = sys.argv[1:6]
    config = make_config(Path(state), url, server={"hostname": node}, checkpoint_every=10)
    archive = Archive.open(config)
    while not Path(go).exists():
        time.sleep(0.01)
    async def main():
        for i in range(int(n)):
            raw = message(i, subject=f"{node} {i}")
            await archive.record(tx(UBND, TIEPDAN), raw, raw)  # two entries per message
    asyncio.run(main())
    archive.close()
""")


def test_two_nodes_append_concurrently_into_one_chain(pg_url, tmp_path):
    config = make_config(tmp_path, pg_url)
    archive = open_archive(config)  # migrates and writes the shared key under tmp_path/state
    assert archive.blobs.name == "database"
    go = tmp_path / "go"
    n = 60
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, pg_url, str(tmp_path), node, str(n),
                               str(go)], env=relay_env(), stderr=subprocess.PIPE)
             for node in ("node-a", "node-b")]
    time.sleep(1.0)  # both connected and waiting
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    report = verify_archive(archive, chain.load_public(archive.public_key_path))
    assert report.ok, report.problems[:5]
    assert report.entries == 2 * 2 * n
    rows = archive.search(Filters())
    nodes = [r["node"] for r in rows]
    assert nodes.count("node-a") == nodes.count("node-b") == 2 * n
    switches = sum(1 for a, b in zip(nodes, nodes[1:], strict=False) if a != b)
    assert switches > 4  # really interleaved, not one after the other
    # each message's two entries stay adjacent: one append is one transaction
    for out_row, in_row in zip(rows[::2], rows[1::2], strict=True):
        assert (out_row["mailbox"], in_row["mailbox"]) == (UBND, TIEPDAN)
        assert out_row["queue_id"] == in_row["queue_id"]
    with archive.db.connect() as conn:
        signers = {r.node for r in conn.execute(sa.text("SELECT node FROM archive_checkpoint"))}
    assert signers == {"node-a", "node-b"}
    archive.close()


async def test_changed_blob_in_the_database_is_found(pg_url, tmp_path):
    archive = open_archive(make_config(tmp_path, pg_url))
    await fill(archive, 6)
    digest = archive.get(3)["accepted_hash"]
    with archive.db.begin() as conn:
        stored = bytearray(conn.execute(sa.text("SELECT data FROM archive_blob WHERE hash = :h"),
                                        {"h": digest}).scalar())
        stored[len(stored) // 2] ^= 0x04
        conn.execute(sa.text("UPDATE archive_blob SET data = :d WHERE hash = :h"),
                     {"d": bytes(stored), "h": digest})
    report = verify_archive(archive, chain.load_public(archive.public_key_path))
    assert (report.first_bad.seq, report.first_bad.kind) == (3, "blob")
    archive.close()


async def test_purge_export_and_verify_on_postgresql(pg_url, tmp_path):
    archive = open_archive(make_config(tmp_path, pg_url, retention="1d"))
    with days_ago(2):
        await fill(archive, 3)
        raw = message(9)
        await archive.record(tx(UBND, TIEPDAN), raw, raw)
    archive.hold(TIEPDAN, "inspector", "case 7")
    report = archive.purge("admin")
    assert report.purged == [1, 2, 3, 4] and report.held == {TIEPDAN: 1}
    with archive.db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM archive_blob")).scalar() == 1
    public = chain.load_public(archive.public_key_path)
    result = verify_archive(archive, public)
    assert result.ok and len(result.tombstones) == 4, result.problems
    assert result.warnings == []  # the purge signed everything up to itself
    export(archive, Filters(mailbox=TIEPDAN), "eml", tmp_path / "x", "auditor", "case 7")
    assert verify_export(tmp_path / "x", public).ok
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["entries"][0][
        "fields"]["mailbox"] == TIEPDAN
    archive.close()

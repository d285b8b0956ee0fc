"""Archive benchmark: write cost per message, `log` query time, `verify` throughput.

    PYTHONPATH=. python bench/archive_bench.py [--entries 100000] [--pg URL] [--dir DIR]

1. Write cost: `Archive.record()` exactly as the SMTP front calls it before 250
   (blobs fsynced, index committed, checkpoints every 1000), one message at a time.
2. Fill: the archive is then grown to --entries with the same chain code in large
   transactions (no per-message fsync, or filling would dominate the run).
3. `log`: the queries an auditor runs, median of 5, on the full archive.
4. `verify`: the whole archive: every blob decompressed and hashed, the chain, the
   checkpoints; MB/s counts message bytes (uncompressed), entries/s counts entries.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import lzma
import random
import statistics
import sys
import tempfile
import time
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from relay.archive import Archive, Filters, chain, heads, schema
from relay.archive.blobs import compress
from relay.archive.verify import verify_archive
from relay.config import from_dict
from relay.model import Transaction

WORDS = ("Ủy ban nhân dân tỉnh Điện Biên đề nghị các sở ban ngành huyện thị xã thành phố "
         "báo cáo tình hình thực hiện kế hoạch năm công văn số về việc triển khai quyết định "
         "tiếp dân khiếu nại tố cáo đất đai giáo dục y tế giao thông nông nghiệp").split()
OFFICIAL = [f"{name}@dienbien.gov.vn" for name in
            ["ubnd", "tiepdan", *(f"tiepdan.so{i}" for i in range(20)),
             *(f"so{i}" for i in range(28))]]


def make_message(rng: random.Random, i: int, sender: str, rcpt: str) -> bytes:
    subject = " ".join(rng.choices(WORDS, k=8)).capitalize()
    body = "\n".join(" ".join(rng.choices(WORDS, k=14)) for _ in range(rng.randint(10, 60)))
    head = (f"From: {sender}\r\nTo: {rcpt}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0700\r\n"
            f"Subject: =?utf-8?b?{base64.b64encode(subject.encode()).decode()}?=\r\n"
            f"Message-ID: <{i}.bench@dienbien.gov.vn>\r\nMIME-Version: 1.0\r\n")
    text = base64.encodebytes(body.encode()).decode().replace("\n", "\r\n")
    if rng.random() < 0.3:  # a third carry an attachment (scanned document: poorly compressible)
        blob = base64.encodebytes(rng.randbytes(rng.randint(10_000, 40_000)))
        boundary = f"b{i}"
        return (head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{text}\r\n--{boundary}\r\n"
                f"Content-Type: application/pdf; name=\"cv{i}.pdf\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n"
                + blob.decode().replace("\n", "\r\n") + f"\r\n--{boundary}--\r\n").encode()
    return (head + "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + text).encode()


def compressors(samples: list[bytes]) -> dict[str, Any]:
    total = sum(map(len, samples))
    out = {}
    for name, fn in [("zlib-6", lambda d: zlib.compress(d, 6)),
                     ("zlib-1", lambda d: zlib.compress(d, 1)),
                     ("lzma-6", lambda d: lzma.compress(d, preset=6))]:
        t = time.perf_counter()
        size = sum(len(fn(s)) for s in samples)
        dt = time.perf_counter() - t
        out[name] = {"ratio": round(size / total, 3), "MB/s": round(total / dt / 1e6, 1)}
    return out


async def write_cost(archive: Archive, rng: random.Random, n: int) -> dict[str, Any]:
    times = []
    for i in range(n):
        sender = rng.choice(OFFICIAL)
        raw = make_message(rng, i, sender, "dan@example.vn")
        tx = Transaction(mail_from=sender, rcpt_to=["dan@example.vn"], client_ip="192.0.2.1")
        t = time.perf_counter()
        ids = await archive.record(tx, raw, raw)
        times.append(time.perf_counter() - t)
        assert ids, sender
    times.sort()
    return {"messages": n, "ms_p50": round(statistics.median(times) * 1e3, 2),
            "ms_p95": round(times[int(n * 0.95)] * 1e3, 2),
            "ms_mean": round(statistics.mean(times) * 1e3, 2),
            "msgs_per_s_serial": round(n / sum(times), 1)}


async def concurrent_writes(archive: Archive, rng: random.Random, n: int,
                            sessions: int) -> dict[str, Any]:
    """Like `sessions` SMTP sessions at once: the chain lock serialises the commits."""
    messages = [make_message(rng, i, "ubnd@dienbien.gov.vn", "dan@example.vn")
                for i in range(n)]

    async def session(k: int) -> None:
        for raw in messages[k::sessions]:
            tx = Transaction(mail_from="ubnd@dienbien.gov.vn", rcpt_to=["dan@example.vn"])
            await archive.record(tx, raw, raw)

    t = time.perf_counter()
    await asyncio.gather(*(session(k) for k in range(sessions)))
    dt = time.perf_counter() - t
    return {"messages": n, "sessions": sessions, "msgs_per_s": round(n / dt, 1)}


def fill(archive: Archive, rng: random.Random, target: int, batch: int = 2000) -> float:
    """Grow the archive to `target` entries with the chain code, in big transactions."""
    t0 = time.perf_counter()
    start = chain.now() - timedelta(days=365)
    files = not archive.blobs.in_transaction
    with archive.db.connect() as conn:
        have = conn.execute(sa.select(schema.head.c.seq).where(
            schema.head.c.chain == "entries")).scalar()
    i = have
    while i < target:
        n = min(batch, target - i)
        rows, blobs = [], {}
        with archive.db.begin() as conn:
            last, prev = heads.take(conn, heads.ENTRIES, n)
            for k in range(last - n + 1, last + 1):
                mailbox = rng.choice(OFFICIAL)
                out = rng.random() < 0.5
                other = f"dan{rng.randint(1, 5000)}@example.vn"
                sender, rcpt = (mailbox, other) if out else (other, mailbox)
                raw = make_message(rng, k, sender, rcpt)
                digest = chain.sha256(raw)
                blobs[digest] = (len(raw), compress(raw))
                subject = " ".join(rng.choices(WORDS, k=8)).capitalize()
                row = {"seq": k, "recorded_at": start + timedelta(seconds=k * 300),
                       "node": "bench", "queue_id": f"Q{k}", "mailbox": mailbox,
                       "kind": "official", "direction": "out" if out else "in",
                       "sender": sender, "recipients": json.dumps([rcpt]),
                       "subject": subject, "subject_fold": chain.fold(subject),
                       "message_id": f"<{k}.bench@dienbien.gov.vn>",
                       "accepted_hash": digest, "accepted_size": len(raw),
                       "delivered_hash": digest, "delivered_size": len(raw),
                       "meta": json.dumps({"client": {"ip": "192.0.2.1"}}),
                       "prev_hash": prev, "purged_at": None}
                row["entry_hash"] = prev = chain.link(prev, chain.fields_digest(
                    chain.entry_fields(row)))
                rows.append(row)
                if k % 1000 == 0:
                    archive.checkpoints.sign(conn, row["recorded_at"], entries=(k, prev))
            if files:
                for digest, (_, stored) in blobs.items():
                    path = archive.blobs.path(digest)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(stored)
            else:
                conn.execute(schema.blob.insert(), [
                    {"hash": d, "size": s, "data": b} for d, (s, b) in blobs.items()])
            conn.execute(schema.entry.insert(), rows)
            heads.advance(conn, heads.ENTRIES, prev)
        i += n
        print(f"\r  filled {i}/{target}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - t0


def queries(archive: Archive) -> dict[str, Any]:
    mid = chain.now() - timedelta(days=180)
    cases = {
        "--mailbox ubnd@ (indexed)": Filters(mailbox="ubnd@dienbien.gov.vn"),
        "--mailbox X --since/--until one month": Filters(
            mailbox="tiepdan@dienbien.gov.vn", since=mid, until=mid + timedelta(days=30)),
        "--since/--until one day": Filters(since=mid, until=mid + timedelta(days=1)),
        "--from (indexed)": Filters(sender="dan17@example.vn"),
        "--to (substring scan)": Filters(recipient="dan17@example.vn"),
        "--subject (substring scan)": Filters(subject="KHIẾU NẠI"),
        "--subject + --mailbox": Filters(subject="khiếu nại", mailbox="ubnd@dienbien.gov.vn"),
    }
    out = {}
    for name, f in cases.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            rows = archive.search(f)
            times.append(time.perf_counter() - t)
        out[name] = {"rows": len(rows), "ms_median": round(statistics.median(times) * 1e3, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--writes", type=int, default=300, help="messages for the write cost")
    ap.add_argument("--pg", default="", help="PostgreSQL URL (blobs in the database)")
    ap.add_argument("--dir", default="", help="state_dir (default: a temporary folder)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="archive-bench-"))
    data: dict[str, Any] = {"server": {"state_dir": str(root)},
                            # agency mailboxes the naming rule cannot tell: listed, as
                            # an installation without the directory would
                            "archive": {"checkpoint_every": 1000, "official": OFFICIAL}}
    if args.pg:
        data["directory"] = {"url": args.pg}
    config = from_dict(data)
    probe = Archive(config)
    if not probe.signing_key_path.exists():
        chain.generate_keys(probe.signing_key_path, probe.public_key_path)
    probe.close()
    archive = Archive.open(config)
    rng = random.Random(28)
    result: dict[str, Any] = {"database": archive.db.dialect.name,
                              "blob_store": archive.blobs.name, "state_dir": str(root)}
    samples = [make_message(rng, i, "ubnd@dienbien.gov.vn", "x@example.vn") for i in range(300)]
    result["compressors"] = compressors(samples)
    print("write cost …", file=sys.stderr)
    result["write"] = asyncio.run(write_cost(archive, rng, args.writes))
    result["write_concurrent"] = asyncio.run(concurrent_writes(archive, rng, args.writes, 16))
    print(json.dumps(result["write"]), json.dumps(result["write_concurrent"]), file=sys.stderr)
    result["fill_seconds"] = round(fill(archive, rng, args.entries), 1)
    result["log"] = queries(archive)
    print(json.dumps(result["log"], ensure_ascii=False), file=sys.stderr)
    report = verify_archive(archive, chain.load_public(archive.public_key_path))
    result["verify"] = {
        "ok": report.ok, "entries": report.entries, "MB": round(report.bytes / 1e6, 1),
        "seconds": round(report.seconds, 1),
        "MB/s": round(report.bytes / report.seconds / 1e6, 1),
        "entries/s": round(report.entries / report.seconds),
        "checkpoints": report.checkpoints,
    }
    archive.close()
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()

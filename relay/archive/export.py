"""`relay archive export` and `verify --export`: a folder an auditor can prove on its own.

The folder holds the messages (one .eml per message, or one mboxrd file) and
`manifest.json`: the full hashed fields of every exported entry, the digest of every
entry between the first exported one and the covering checkpoint (digests only, so
other mailboxes' metadata does not leave the archive), and that signed checkpoint.
With only the public key, `verify_export` re-hashes each message, recomputes the
chain up to the checkpoint and checks its signature.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from relay.archive import chain, schema
from relay.archive.errors import ArchiveError
from relay.archive.query import Filters
from relay.archive.retention import ranges
from relay.archive.store import Archive
from relay.archive.verify import Keys, Problem, Report, check_signature

FORMAT = "dienbien-relay-archive-export/1"
MANIFEST = "manifest.json"
_FROM_LINE = re.compile(rb"^>*From ")


def mbox_quote(data: bytes) -> bytes:
    """mboxrd: one more '>' before any line that starts with >*From (reversible)."""
    lines = data.splitlines(keepends=True)
    return b"".join(b">" + line if _FROM_LINE.match(line) else line for line in lines)


def mbox_unquote(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(line[1:] if line.startswith(b">") and _FROM_LINE.match(line[1:]) else line
                    for line in lines)


def export(archive: Archive, filters: Filters, fmt: str, out: Path, who: str,
           reason: str) -> dict[str, Any]:
    """Write the export; returns a summary. Records the export in the access log."""
    if out.exists() and any(out.iterdir()):
        raise ArchiveError(f"{out} exists and is not empty")
    rows = [r for r in archive.search(filters)]
    purged = [int(r["seq"]) for r in rows if r["purged_at"] is not None]
    rows = [r for r in rows if r["purged_at"] is None]
    if not rows:
        raise ArchiveError("nothing to export: no entry matches" if not purged else
                           f"nothing to export: the matching entries {ranges(purged)} were "
                           "purged (only their hashes remain)")
    last = max(int(r["seq"]) for r in rows)
    signed_now = False
    cp = _covering_checkpoint(archive, last)
    if cp is None:  # sign them now rather than leave them out
        uncovered = [int(r["seq"]) for r in rows if int(r["seq"]) > _newest_signed(archive)]
        try:
            archive.checkpoint()
        except ArchiveError as exc:
            raise ArchiveError(f"entries {ranges(uncovered)} are not yet covered by a signed "
                               f"checkpoint, and this export cannot sign them: {exc}") from None
        signed_now = True
        cp = _covering_checkpoint(archive, last)
        if cp is None:
            raise ArchiveError(f"entry #{last} is beyond the chain head; run "
                               "`relay archive verify`")
    with archive.db.connect() as conn:
        first = int(rows[0]["seq"])
        links, start_prev = _links(conn, first, int(cp["seq"]))
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    mbox = None
    if fmt == "mbox":
        mbox = (out / "archive.mbox").open("wb")
    written: dict[str, dict[str, int]] = {}
    try:
        for row in rows:
            files: dict[str, Any] = {}
            for which in ("delivered", "accepted"):
                digest = row[f"{which}_hash"]
                if which == "accepted" and digest == row["delivered_hash"]:
                    files["accepted"] = files["delivered"]
                    continue
                data = archive.read_blob(digest, int(row[f"{which}_size"]))
                if mbox is None:
                    name = f"messages/{int(row['seq']):08d}-{which}.eml"
                    (out / "messages").mkdir(exist_ok=True)
                    _write(out / name, data)
                    files[which] = name
                else:
                    if digest not in written:
                        sender = row["sender"] or "MAILER-DAEMON"
                        stamp = row["recorded_at"].strftime("%a %b %d %H:%M:%S %Y")
                        mbox.write(f"From {sender} {stamp}\n".encode())
                        quoted = mbox_quote(data)
                        offset = mbox.tell()
                        mbox.write(quoted)
                        written[digest] = {"offset": offset, "length": len(quoted)}
                        mbox.write(b"\n" if quoted.endswith(b"\n") else b"\n\n")
                    files[which] = {"mbox": "archive.mbox", **written[digest]}
            entries.append({"fields": chain.entry_fields(row), "prev_hash": row["prev_hash"],
                            "entry_hash": row["entry_hash"], "files": files})
    finally:
        if mbox is not None:
            mbox.flush()
            os.fsync(mbox.fileno())
            mbox.close()
    manifest = {
        "format": FORMAT,
        "created_at": chain.timestamp(chain.now()),
        "exported_by": who,
        "reason": reason,
        "message_format": fmt,
        "filters": {k: (chain.timestamp(v) if isinstance(v, datetime) else v)
                    for k, v in vars(filters).items() if v is not None},
        "start_prev_hash": start_prev,
        "chain": links,
        "checkpoint": _checkpoint_json(cp),
        "entries": entries,
    }
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    _write(out / MANIFEST, body)
    seqs = [int(r["seq"]) for r in rows]
    archive.log_access(who, "export", {
        "entries": ranges(seqs), "format": fmt, "path": str(out.resolve()),
        "manifest_sha256": chain.sha256(body)}, reason)
    return {"path": str(out), "entries": len(seqs), "checkpoint": int(cp["seq"]),
            "signed_now": signed_now, "skipped_purged": purged}


def _covering_checkpoint(archive: Archive, seq: int) -> Any:
    """The oldest checkpoint that covers entry `seq`, or None."""
    c = schema.checkpoint
    with archive.db.connect() as conn:
        return conn.execute(sa.select(c).where(c.c.seq >= seq).order_by(c.c.seq, c.c.id)
                            .limit(1)).mappings().first()


def _newest_signed(archive: Archive) -> int:
    with archive.db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(schema.checkpoint.c.seq))).scalar() or 0)


def _checkpoint_json(cp: Any) -> dict[str, Any]:
    out = {"seq": int(cp["seq"]), "entry_hash": cp["entry_hash"],
           "signed_at": chain.timestamp(cp["signed_at"]), "key_id": cp["key_id"],
           "signature": cp["signature"], "node": cp["node"]}
    if cp["access_seq"] is not None:  # v2: the access head is signed too
        out.update(access_seq=int(cp["access_seq"]), access_hash=cp["access_hash"])
    return out


def _links(conn: sa.Connection, first: int, last: int) -> tuple[list[list[Any]], str]:
    """[seq, fields digest] for every entry first..last, checked against the stored chain."""
    e = schema.entry
    out: list[list[Any]] = []
    start_prev = ""
    running: str | None = None
    lo = first - 1
    while lo < last:
        rows = conn.execute(sa.select(e).where(e.c.seq > lo, e.c.seq <= last).order_by(e.c.seq)
                            .limit(5000)).mappings().all()
        if not rows:
            break
        for row in rows:
            seq = int(row["seq"])
            digest = chain.fields_digest(chain.entry_fields(row))
            if running is None:
                start_prev = running = row["prev_hash"]
            running = chain.link(running, digest)
            if seq != lo + 1 or running != row["entry_hash"]:
                raise ArchiveError(f"the archive fails verification at entry #{seq}; "
                                   "run `relay archive verify`")
            out.append([seq, digest])
            lo = seq
    if lo != last:
        raise ArchiveError(f"the archive fails verification at entry #{lo + 1}: missing")
    return out, start_prev


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def verify_export(path: Path, public_key: Keys) -> Report:
    """Prove an export with the public key alone."""
    report = Report()
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        report.unreadable = f"cannot read {path / MANIFEST}: {exc}"
        return report
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.unreadable = f"{path / MANIFEST} is not an archive export ({FORMAT})"
        return report
    try:
        _verify_manifest(path, manifest, public_key, report)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        report.problems.append(Problem(None, "manifest", f"the manifest is malformed "
                                       f"({type(exc).__name__}: {exc}): edited by hand?"))
    return report


def _verify_manifest(path: Path, manifest: dict[str, Any], public_key: Keys,
                     report: Report) -> None:
    cp = manifest["checkpoint"]
    report.checkpoints = 1
    report.last_checkpoint = int(cp["seq"])
    if why := check_signature(cp, public_key):
        report.problems.append(Problem(int(cp["seq"]), "signature", why))
    running = manifest["start_prev_hash"]
    digests: dict[int, str] = {}
    expected: int | None = None
    for seq, digest in manifest["chain"]:
        if expected is not None and seq != expected:
            report.problems.append(Problem(expected, "missing", "chain is not continuous"))
        digests[seq] = digest
        running = chain.link(running, digest)
        expected = seq + 1
    if expected is None or expected - 1 != int(cp["seq"]) or running != cp["entry_hash"]:
        report.problems.append(Problem(int(cp["seq"]), "checkpoint",
                                       "the chain in the manifest does not lead to the signed "
                                       "checkpoint"))
    mboxes: dict[str, bytes] = {}
    for item in manifest["entries"]:
        fields = item["fields"]
        seq = int(fields["seq"])
        report.entries += 1
        if digests.get(seq) != chain.fields_digest(fields):
            report.problems.append(Problem(seq, "fields", "entry fields differ from the chain"))
        for which in ("accepted", "delivered"):
            ref = item["files"].get(which)
            try:
                data = _read_ref(path, ref, mboxes)
            except (OSError, KeyError, TypeError) as exc:
                report.problems.append(Problem(seq, "blob", f"{which} message unreadable: "
                                               f"{exc}"))
                continue
            if len(data) != fields[f"{which}_size"] or \
                    chain.sha256(data) != fields[f"{which}_hash"]:
                report.problems.append(Problem(seq, "blob", f"{which} message does not match "
                                               "its hash (modified)"))
            else:
                report.bytes += len(data)
                report.blobs += 1
    if manifest["entries"]:
        report.first_seq = int(manifest["entries"][0]["fields"]["seq"])
        report.last_seq = int(manifest["entries"][-1]["fields"]["seq"])


def _read_ref(root: Path, ref: Any, mboxes: dict[str, bytes]) -> bytes:
    if isinstance(ref, str):
        return _inside(root, ref).read_bytes()
    name = ref["mbox"]
    if name not in mboxes:
        mboxes[name] = _inside(root, name).read_bytes()
    return mbox_unquote(mboxes[name][ref["offset"]:ref["offset"] + ref["length"]])


def _inside(root: Path, name: str) -> Path:
    """A manifest names files inside the export, never elsewhere."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise OSError(f"{name} is outside the export")
    return path

"""`verify` from the web: one run at a time, its progress and result in the database.

The run is a thread of the node where it was started; it writes its progress to
`web_verify` every half second, so every node shows the same page, and a run whose
node died (no progress for STALE seconds) shows as interrupted instead of running
for ever. The public keys are the ones `relay archive verify` uses by default: the
configured one and those `keygen --force` retired.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from relay.archive import Archive, chain
from relay.archive.browse import entry_count
from relay.archive.verify import verify_archive
from relay.web import schema
from relay.web.schema import now

log = logging.getLogger("relay.web")

STALE = 120.0  # seconds without progress: the run's node is gone
PROGRESS_EVERY = 0.5  # seconds between progress writes
MAX_PROBLEMS = 50  # kept with the run; the CLI lists them all


def public_keys(archive: Archive) -> list[Any]:
    current = archive.public_key_path
    paths = [current, *sorted(current.parent.glob(f"{current.name}.old-*"))]
    keys = []
    for path in paths:
        if path.exists():
            keys.append(chain.load_public(path))
    if not keys:
        raise FileNotFoundError(f"no public key at {current} (run `relay archive keygen`)")
    return keys


class Verifier:
    def __init__(self, archive: Archive, node: str) -> None:
        self.archive = archive
        self.node = node[:255]
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def latest(self) -> RowMapping | None:
        v = schema.verify_run
        with self.archive.db.connect() as conn:
            return conn.execute(sa.select(v).order_by(v.c.id.desc()).limit(1)).mappings().first()

    def latest_finished(self) -> RowMapping | None:
        v = schema.verify_run
        with self.archive.db.connect() as conn:
            return conn.execute(sa.select(v).where(v.c.state != "running")
                                .order_by(v.c.id.desc()).limit(1)).mappings().first()

    @staticmethod
    def is_running(row: RowMapping | None) -> bool:
        return row is not None and row["state"] == "running" and \
            (now() - row["updated_at"]).total_seconds() < STALE

    def start(self, username: str) -> int | None:
        """The new run's id, or None while another run is going (on any node)."""
        with self._lock:
            if self.is_running(self.latest()):
                return None
            v = schema.verify_run
            at = now()
            total = entry_count(self.archive)
            with self.archive.db.begin() as conn:
                run_id = conn.execute(v.insert().values(
                    started_at=at, started_by=username[:64], node=self.node, state="running",
                    updated_at=at, entries_done=0, entries_total=total).returning(v.c.id)
                ).scalar_one()
            self.thread = threading.Thread(target=self._run, args=(run_id,),
                                           name=f"verify-{run_id}", daemon=True)
            self.thread.start()
            return int(run_id)

    def _update(self, run_id: int, **values: Any) -> None:
        v = schema.verify_run
        with self.archive.db.begin() as conn:
            conn.execute(sa.update(v).where(v.c.id == run_id).values(updated_at=now(),
                                                                      **values))

    def _run(self, run_id: int) -> None:
        last = 0.0

        def progress(entries: int, _bytes: int) -> None:
            nonlocal last
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                self._update(run_id, entries_done=entries)

        try:
            report = verify_archive(self.archive, public_keys(self.archive), None, progress)
        except Exception as exc:
            log.exception("web: verify run %s failed", run_id)
            self._update(run_id, state="failed", finished_at=now(),
                         report=json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}))
            return
        result = report.as_dict()
        result["problem_count"] = len(result["problems"])
        result["problems"] = result["problems"][:MAX_PROBLEMS]
        result["tombstones"] = len(result["tombstones"])
        self._update(run_id, state="done", finished_at=now(), ok=report.ok,
                     entries_done=report.entries, report=json.dumps(result, default=str))
        log.info("web: verify run %s: %s, %d entries", run_id,
                 "intact" if report.ok else "TAMPERED", report.entries)


def report_of(row: RowMapping | None) -> dict[str, Any]:
    if row is None or not row["report"]:
        return {}
    try:
        value = json.loads(row["report"])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

"""The decision log: one JSON line per transaction, for administrators and auditors."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from relay import maillog
from relay.files import private_dir
from relay.metrics import (
    FINDINGS,
    TRANSACTION_SECONDS,
    TRANSACTIONS,
    batched_counter,
    batched_histogram,
)
from relay.model import Outcome, Reply, Transaction

MAX_LISTED = 50  # findings and recipients listed per line; the rest is counted


def record(tx: Transaction, outcome: Outcome, reply: Reply | str) -> dict[str, Any]:
    """One transaction's line, bounded: a client cannot make it grow past a few KB per
    finding listed (20,000 refused RCPTs once wrote an 18.9 MB line)."""
    summary = tx.summary
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "client_ip": tx.client_ip,
        "listener": tx.listener,
        "helo": tx.helo,
        "tls": tx.tls,
        "auth": tx.auth_login,
        "mail_from": tx.mail_from,
        "rcpt_to": tx.rcpt_to[:MAX_LISTED],
        "message_id": summary.message_id if summary else None,
        "size": summary.size if summary else None,
        "findings": [d.as_dict() for d in tx.decisions[:MAX_LISTED]],
        "action": outcome.value,
        "reply": str(reply),
        "queue_id": tx.queue_id if outcome is Outcome.ACCEPT else None,
    }
    if len(tx.rcpt_to) > MAX_LISTED:
        entry["rcpt_count"] = len(tx.rcpt_to)
    if len(tx.decisions) > MAX_LISTED:
        entry["findings_count"] = len(tx.decisions)
    if tx.mta_queue_id is not None:
        entry["postfix_queue_id"] = tx.mta_queue_id or None
    return entry


class DecisionLog:
    """Appended to by every front process: each line is one write() to an O_APPEND
    file, so lines of several processes never interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        private_dir(path.parent)  # 0750 with its parents, whatever the umask
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, tx: Transaction, outcome: Outcome, reply: Reply | str) -> None:
        entry = record(tx, outcome, reply)
        batched_counter(TRANSACTIONS, entry["listener"], entry["action"]).inc()
        batched_histogram(TRANSACTION_SECONDS, entry["listener"], entry["action"]).observe(
            max(0.0, time.time() - tx.started))
        for f in entry["findings"]:
            batched_counter(FINDINGS, f["policy"], f["code"], f["action"]).inc()
        # text from a client may hold lone surrogates (undecodable bytes): they are written
        # as \udcXX escapes, which is valid JSON; a line never fails to encode
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n"
                ).encode("utf-8", "backslashreplace")
        with self._lock:
            os.write(self._fd, line)
        maillog.received(tx, outcome, reply)

    def reopen(self) -> None:
        """Open the file by its name again: after logrotate renamed it (SIGUSR2/SIGHUP),
        new lines go to a new file; lines already written stay in the renamed one."""
        try:
            fresh = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:  # keep writing to the old file rather than stop
            logging.getLogger("relay").error("cannot reopen the decision log: %s", exc)
            return
        with self._lock:
            old, self._fd = self._fd, fresh
        os.close(old)

    def close(self) -> None:
        os.close(self._fd)

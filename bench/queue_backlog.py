"""What a backlog of deferred mail costs the queue runner, per new message delivered.

    .venv/bin/python bench/queue_backlog.py [--backlog 50000] [--messages 2000] [--tree DIR]

When the backend is down for an hour, the queue fills with deferred messages; when
it is back, new mail must still flow at full speed while they wait for their next
attempt. This runs the queue runner in process with BACKLOG deferred messages (next
attempt in an hour) and delivers MESSAGES new ones to Postfix's `smtp-sink`, then
the same with an empty queue, and prints the CPU per delivered message of both and
their ratio (1.0: the backlog costs nothing). `--tree` runs another checkout's
relay package instead (e.g. `git worktree add /tmp/base main~3`), to compare.
The backlog's files are written without fsync (set-up speed; the runner never
reads them but in its rescans).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def args_and_path() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="checkout whose relay package runs (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # bench.stacks and the tests' fixtures
    sys.path.insert(0, str(args.tree.resolve()))  # its relay package first
    return args


ARGS = args_and_path()

from bench.stacks import Sink  # noqa: E402
from relay.config import from_dict  # noqa: E402
from relay.delivery import Router  # noqa: E402
from relay.model import new_id  # noqa: E402
from relay.runner import QueueRunner  # noqa: E402
from relay.spool import MAGIC, QueueEnvelope, Spool  # noqa: E402

MESSAGE = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: backlog\r\n\r\n"
           + b"La de da de da.\r\n" * 600)


def write_backlog(spool: Spool, count: int) -> None:
    later = json.dumps({"attempts": 1, "next_attempt": time.time() + 3600,
                        "last_attempt": time.time(), "recipients": {}}).encode()
    for _ in range(count):
        env = QueueEnvelope(queue_id=new_id(), sender="a@example.org",
                            recipients=["b@example.org"], size=len(MESSAGE))
        (spool.active / env.queue_id).write_bytes(
            MAGIC + json.dumps(vars(env)).encode() + b"\n" + MESSAGE)
        (spool.active / f"{env.queue_id}.json").write_bytes(later)


async def deliver(state: Path, sink: Sink, backlog: int, messages: int) -> float:
    """CPU seconds per delivered message with BACKLOG deferred messages waiting."""
    config = from_dict({"server": {"state_dir": str(state), "local_domains": ["example.org"]},
                        "backend": {"kind": "smtp", "host": "127.0.0.1", "port": sink.port,
                                    "max_connections": 20},
                        "queue": {"concurrency": 20}})
    spool = Spool(config.spool_path)
    write_backlog(spool, backlog)
    runner = QueueRunner(config, spool, Router(config))
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.5)  # its first scan
    arrived = sink.count
    started = time.process_time()
    for _ in range(messages):
        env = QueueEnvelope(queue_id=new_id(), sender="a@example.org",
                            recipients=["b@example.org"])
        await spool.put(env, MESSAGE)
        runner.submit(env.queue_id)
    while sink.count < arrived + messages:
        await asyncio.sleep(0.01)
    spent = time.process_time() - started
    await runner.stop()
    running.cancel()
    spool.close()
    return spent / messages


def main() -> None:
    faulthandler.dump_traceback_later(ARGS.timeout, exit=True)  # a hang says where
    logging.basicConfig(level=logging.WARNING)  # a failed delivery is shown
    sink = Sink().start()
    results = {}
    try:
        for backlog in (ARGS.backlog, 0):
            state = Path(tempfile.mkdtemp(prefix="relay-backlog-"))
            try:
                results[backlog] = asyncio.run(deliver(state, sink, backlog, ARGS.messages))
            finally:
                shutil.rmtree(state, ignore_errors=True)
    finally:
        sink.stop()
    for backlog, seconds in results.items():
        print(f"backlog {backlog:>7}: {1e6 * seconds:8.0f} us CPU per delivered message")
    print(f"ratio empty/backlog: {results[0] / results[ARGS.backlog]:.2f} (1.0: the backlog "
          f"costs nothing)")


if __name__ == "__main__":
    main()

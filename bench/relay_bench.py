"""Relay throughput and latency, as a ratio to a stock Postfix measured in the same run.

    python bench/relay_bench.py [-n 2000] [--sessions 20] [--size 10240] [--json]

Both MTAs relay N messages of SIZE bytes, sent over SESSIONS concurrent SMTP
sessions by the same asyncio client, to the same sink (Postfix's `smtp-sink`,
C, so the sink is never the bottleneck; an aiosmtpd sink when it is missing).
Reported: accepted msgs/s (250 after DATA), end-to-end msgs/s (all at the sink),
p50/p99 acceptance latency (MAIL FROM to the 250 after DATA), and our/Postfix ratios.
Each run uses a fresh state directory; the relay fsyncs before every 250. The
default recipient is a personal mailbox; `--to ubnd@dienbien.gov.vn` measures the
path of official mail, which is also archived (Điều 8) before the 250.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.relayproc import Relay, free_port  # noqa: E402


def message(i: int, size: int, rcpt: str) -> bytes:
    head = (f"From: bench@example.org\r\nTo: {rcpt}\r\nSubject: bench {i}\r\n"
            f"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <b{i}@example.org>\r\n\r\n")
    line = b"Kinh gui Uy ban nhan dan tinh Dien Bien, bao cao so lieu thang 11.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head.encode() + body


class Sink:
    """smtp-sink dumping each message to a file, so arrivals can be counted."""

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.dir = base / "sink"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread_sink = None

    def start(self) -> Sink:
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if os.access(binary, os.X_OK):
            self.dir.chmod(0o777)
            self.proc = subprocess.Popen(
                [binary, "-u", "nobody", "-d", f"{self.dir}/%H%M%S", f"127.0.0.1:{self.port}",
                 "256"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        else:
            from tests.fixtures.sink import Sink as PySink
            self.thread_sink = PySink(self.port).start()
        return self

    def count(self) -> int:
        if self.thread_sink is not None:
            return len(self.thread_sink.messages)
        return sum(1 for _ in self.dir.iterdir())

    def reset(self) -> None:
        if self.thread_sink is not None:
            self.thread_sink.messages.clear()
        for p in self.dir.iterdir():
            p.unlink()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
        if self.thread_sink is not None:
            self.thread_sink.stop()


async def load(port: int, count: int, sessions: int, size: int, rcpt: str
               ) -> tuple[float, list[float]]:
    latencies: list[float] = []
    bodies = [message(i, size, rcpt) for i in range(count)]

    async def session(offset: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60,
                                 start_tls=False, local_hostname="bench.example.org")
        await client.connect()
        for i in range(offset, count, sessions):
            t0 = time.perf_counter()
            await client.sendmail("bench@example.org", [rcpt], bodies[i])
            latencies.append(time.perf_counter() - t0)
        await client.quit()

    start = time.perf_counter()
    await asyncio.gather(*(session(n) for n in range(sessions)))
    return time.perf_counter() - start, latencies


def measure(name: str, port: int, sink: Sink, args: argparse.Namespace) -> dict[str, float]:
    sink.reset()
    start = time.perf_counter()
    elapsed, latencies = asyncio.run(load(port, args.n, args.sessions, args.size, args.to))
    deadline = time.monotonic() + 300
    while sink.count() < args.n and time.monotonic() < deadline:
        time.sleep(0.02)
    end_to_end = time.perf_counter() - start
    latencies.sort()
    result = {
        "accepted_msgs_per_s": args.n / elapsed,
        "end_to_end_msgs_per_s": sink.count() / end_to_end,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "delivered": sink.count(),
    }
    if not args.json:
        print(f"{name:8} accepted {result['accepted_msgs_per_s']:7.0f} msgs/s  "
              f"end-to-end {result['end_to_end_msgs_per_s']:7.0f} msgs/s  "
              f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
              f"({result['delivered']}/{args.n} at the sink)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="messages per MTA")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--to", default="an@dienbien.gov.vn",
                        help="recipient; an official one (ubnd@dienbien.gov.vn) adds the archive")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # smtp-sink drops to `nobody` and writes its dumps below
        sink = Sink(base).start()
        try:
            relay_dir = base / "relay"
            relay_dir.mkdir()
            relay = Relay(relay_dir, {
                "backend": {"kind": "smtp", "host": "127.0.0.1", "port": sink.port,
                            "max_connections": 8},
                "server": {"max_connections": 1000, "log_level": "warning"},
                "queue": {"concurrency": 50},
            }).start()
            try:
                results["relay"] = measure("relay", relay.mx, sink, args)
            finally:
                relay.stop()
            if not args.no_postfix:
                try:
                    from tests.fixtures.postfix import PrivatePostfix, postfix_master
                except ImportError:
                    postfix_master = None  # type: ignore[assignment]
                if postfix_master is None or postfix_master() is None:
                    print("postfix not installed: no reference measured", file=sys.stderr)
                else:
                    (base / "postfix").mkdir()
                    postfix = PrivatePostfix(base / "postfix", ("127.0.0.1", sink.port))
                    postfix.start()
                    try:
                        results["postfix"] = measure("postfix", postfix.port, sink, args)
                    finally:
                        postfix.stop()
        finally:
            sink.stop()
    if "postfix" in results:
        ours, ref = results["relay"], results["postfix"]
        results["ratio"] = {
            "accepted": ours["accepted_msgs_per_s"] / ref["accepted_msgs_per_s"],
            "end_to_end": ours["end_to_end_msgs_per_s"] / ref["end_to_end_msgs_per_s"],
            "p50": ours["p50_ms"] / ref["p50_ms"],
            "p99": ours["p99_ms"] / ref["p99_ms"],
        }
        if not args.json:
            r = results["ratio"]
            print(f"ratio relay/postfix: accepted {r['accepted']:.2f}  "
                  f"end-to-end {r['end_to_end']:.2f}  p50 {r['p50']:.2f}  p99 {r['p99']:.2f}")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

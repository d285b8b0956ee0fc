"""Throughput of Postfix with our milter against Postfix alone: same run, same sink.

Two private Postfix instances (tests/fixtures/postfix.py), one with
`smtpd_milters` pointing at `relay milter` (run as its own process, as in
production), one without, both relaying to one Postfix `smtp-sink`. Postfix's
`smtp-source` sends the same message to each, in alternating rounds. For each we
report the accept rate (SMTP sessions answered 250 after DATA, what the milter
slows down) and the end-to-end rate (until Postfix's queue is empty).

    PYTHONPATH=. python bench/milter_bench.py --messages 2000 --sessions 20

Loopback only; everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.postfix import PrivatePostfix, postfix_master, wait_for_port
from tests.fixtures.relayproc import free_port

MESSAGE = """\
From: nguyenvana@dienbien.gov.vn
To: {to}
Date: Sun, 29 Nov 2026 10:00:00 +0700
Message-ID: <bench@dienbien.gov.vn>
Subject: =?utf-8?b?QsOhbyBjw6FvIHR14bqnbg==?=
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

"""


def message_file(directory: Path, size: int, to: str) -> Path:
    line = "Kính gửi các cơ quan, đơn vị trên địa bàn tỉnh Điện Biên.\n"
    body = line * max(1, size // len(line.encode()))
    path = directory / "message.eml"
    path.write_text(MESSAGE.format(to=to) + body)
    return path


def start_milter(directory: Path, policies: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = directory / "relay.toml"
    tables = "\n".join(f"[policies.{name}]" for name in policies)
    config.write_text(f'[server]\nstate_dir = "state"\nlog_level = "warning"\n\n'
                      f'[milter]\nbind = "127.0.0.1:{port}"\n\n{tables}\n')
    proc = subprocess.Popen(
        [sys.executable, "-c", "from relay.cli import main; main()", "milter", "-c", str(config)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        start_new_session=True,
    )
    wait_for_port(port, 20, proc)
    return proc, f"inet:127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (the milter's cost per message)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sent_count(postfix: PrivatePostfix) -> int:
    return len(re.findall(r" status=sent ", postfix.log))


def run_round(postfix: PrivatePostfix, message: Path, messages: int, sessions: int,
              to: str) -> dict:
    before = sent_count(postfix)
    started = time.monotonic()
    result = subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", str(message),
         "-f", "nguyenvana@dienbien.gov.vn", "-t", to,
         f"127.0.0.1:{postfix.port}"],
        capture_output=True, text=True, timeout=600,
    )
    accepted_in = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr or result.stdout}")
    deadline = time.monotonic() + 300
    while sent_count(postfix) - before < messages and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered_in = time.monotonic() - started
    delivered = sent_count(postfix) - before
    return {"messages": messages, "delivered": delivered,
            "accept_per_s": messages / accepted_in, "end_to_end_per_s": delivered / delivered_in}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per round")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=4000, help="body size in bytes")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setup, alternating")
    parser.add_argument("--policies", default="size,recipients,headers",
                        help="policies the milter runs (comma-separated)")
    parser.add_argument("--to", default="binhtt@dienbien.gov.vn",
                        help="recipient; an official one (tiepdan@dienbien.gov.vn) adds the "
                             "archive to each message")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()

    for program in ("smtp-source", "smtp-sink"):
        if shutil.which(program) is None:
            print(f"{program} not found (Debian package postfix)", file=sys.stderr)
            return 2
    if postfix_master() is None or os.geteuid() != 0:
        print("needs Postfix (Debian package postfix) and root", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="relay-milter-bench-"))
    work.chmod(0o755)
    procs: list[subprocess.Popen] = []
    instances: list[PrivatePostfix] = []
    try:
        sink_port = free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "512"],
                                start_new_session=True, stdout=subprocess.DEVNULL)
        procs.append(sink)
        wait_for_port(sink_port, 10, sink)
        milter, milter_socket = start_milter(work, args.policies.split(","))
        procs.append(milter)
        setups = {}
        for name, socket_spec in (("postfix", None), ("postfix+milter", milter_socket)):
            base = work / name
            base.mkdir()
            instance = PrivatePostfix(base, ("127.0.0.1", sink_port), socket_spec,
                                      {"default_process_limit": "100"})
            instances.append(instance.start())
            setups[name] = instance
        message = message_file(work, args.size, args.to)
        for instance in setups.values():  # warm up: processes spawned, caches filled
            run_round(instance, message, min(50, args.messages), args.sessions, args.to)
        results: dict[str, list[dict]] = {name: [] for name in setups}
        milter_cpu = 0.0
        for _ in range(args.rounds):
            for name, instance in setups.items():
                cpu = cpu_seconds(milter.pid)
                results[name].append(run_round(instance, message, args.messages, args.sessions,
                                               args.to))
                if instance.milter:
                    milter_cpu += cpu_seconds(milter.pid) - cpu
        summary = {}
        for name, rounds in results.items():
            summary[name] = {
                "accept_per_s": sum(r["accept_per_s"] for r in rounds) / len(rounds),
                "end_to_end_per_s": sum(r["end_to_end_per_s"] for r in rounds) / len(rounds),
                "delivered": sum(r["delivered"] for r in rounds),
                "sent": sum(r["messages"] for r in rounds),
            }
        alone, with_milter = summary["postfix"], summary["postfix+milter"]
        report = {
            "messages_per_round": args.messages, "sessions": args.sessions,
            "body_bytes": args.size, "rounds": args.rounds, "policies": args.policies,
            "to": args.to,
            "results": summary,
            "ratio_accept": with_milter["accept_per_s"] / alone["accept_per_s"],
            "ratio_end_to_end": with_milter["end_to_end_per_s"] / alone["end_to_end_per_s"],
            "milter_cpu_ms_per_message": 1000 * milter_cpu / with_milter["sent"],
            "load_average": os.getloadavg()[0],
        }
        if args.json:
            print(json.dumps(report))
        else:
            print(f"{args.rounds} rounds x {args.messages} messages to {args.to}, "
                  f"{args.sessions} sessions, {args.size}-byte body, "
                  f"milter policies: {args.policies}")
            for name, s in summary.items():
                print(f"  {name:15} accept {s['accept_per_s']:7.1f} msg/s   end-to-end "
                      f"{s['end_to_end_per_s']:7.1f} msg/s   "
                      f"delivered {s['delivered']}/{s['sent']}")
            print(f"  ratio (with milter / alone): accept {report['ratio_accept']:.2f}, "
                  f"end-to-end {report['ratio_end_to_end']:.2f}")
            print(f"  milter CPU: {report['milter_cpu_ms_per_message']:.2f} ms per message "
                  f"(one process, one core); load average {report['load_average']:.1f} "
                  f"on {os.cpu_count()} cores")
        return 0
    finally:
        for instance in instances:
            instance.stop()
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""What each anti-spam policy costs per message, in microseconds.

    PYTHONPATH=. python bench/antispam_bench.py [--messages 300] [--rounds 3] [--json]

One transaction at a time through the engine (`relay.transaction.walk`, the DATA
stage in this process, as `relay test-message` runs it), from an untrusted client,
with a DKIM-signed 2 KB message whose SPF passes and whose DMARC passes by its
signature; the DNS server is the tests' (tests/fixtures/dns.py) in another process
on 127.0.0.1, so the resolver pays real UDP round trips but no other work competes
for this process. Each configuration minus the baseline (no policy) is the policy's
cost; the median of the rounds is reported, and the rounds' spread beside it. Wall
time includes waiting for DNS and the database; CPU time (this process, all its
threads) is what the policy takes from the cores, the figure that decides throughput
on a loaded relay.

Two DNS conditions: `cached` (the `[dns]` answer cache on: the steady state of an
MX that hears from the same senders again), `uncached` (`cache_size = 0`: every
message asks every question, the cost of a first contact). rate_limit is measured
on SQLite (and on PostgreSQL when RELAY_TEST_PG or the tests' default is reachable).
DKIM signing of outbound mail (the queue runner's cost, not the engine's) is
measured alone: `Signer.sign` on the same message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.config import from_dict
from relay.model import Transaction
from relay.runtime import Runtime
from relay.transaction import Conversation, Hub, walk
from tests.antispam_helpers import GOOD_IP, message, sign, zone_with_key

SENDER = "news@pass-domain.test"  # SPF pass from GOOD_IP
AUTHOR = "ceo@signed.test"  # DKIM-signed: DMARC passes by the signature
RCPT = "annv@dienbien.gov.vn"


def _serve_dns(zone: str, conn: Any) -> None:
    from tests.fixtures.dns import DnsServer

    server = DnsServer(zone).start()
    conn.send(server.address)
    conn.recv()  # until told to stop
    server.stop()


def start_dns(zone: str) -> tuple[str, Any, multiprocessing.Process]:
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_serve_dns, args=(zone, child),
                                                       daemon=True)
    proc.start()
    return parent.recv(), parent, proc


def pg_url() -> str | None:
    admin = os.environ.get("RELAY_TEST_PG",
                           "postgresql://relay_test:relay_test@127.0.0.1:5432/postgres")
    try:
        import psycopg

        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
            conn.execute("DROP DATABASE IF EXISTS relay_bench_antispam WITH (FORCE)")
            conn.execute("CREATE DATABASE relay_bench_antispam")
    except Exception:
        return None
    return admin.rsplit("/", 1)[0] + "/relay_bench_antispam"


async def per_message(policies: dict[str, Any], dns: str, cache: int, raw: bytes, n: int,
                      extra: dict[str, Any] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds per message over N transactions (after 20 not counted); CPU
    is this process's, its threads included (SQLite runs in one), not the DNS server's."""
    state = tempfile.mkdtemp(prefix="relay-antispam-bench-")
    config = from_dict({
        "server": {"state_dir": state, "hostname": "mx.dienbien.gov.vn"},
        "dns": {"nameservers": [dns], "timeout": "2s", "cache_size": cache},
        "archive": {"enabled": False}, **(extra or {}), "policies": policies})
    runtime = await Runtime.build(config, archive=False, inline=True)
    hub = Hub(runtime)
    try:
        async def one(i: int) -> None:
            # every message from another address of the /16: the blocklist and the
            # per-IP counter see many clients, not one
            ip = GOOD_IP if not i % 2 else GOOD_IP.rsplit(".", 1)[0] + f".{i % 250 + 1}"
            tx = Transaction(client_ip=ip, helo="mail.pass-domain.test")
            conversation = Conversation(hub, tx)
            result = await walk(conversation, SENDER, [RCPT], raw)
            conversation.close()
            assert result.verdict is not None, (result.stage, result.reply)
            assert result.verdict.outcome == "accept", tx.decisions

        for i in range(20):
            await one(i)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            await one(i)
        return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    finally:
        await runtime.aclose()
        shutil.rmtree(state, ignore_errors=True)


def configurations(pg: str | None) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    big = {"per_login": "1000000/1h", "per_ip": "1000000/1h"}
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("baseline", {}, {}),
        ("spf", {"spf": {}}, {}),
        ("dkim", {"dkim": {}}, {}),
        ("dmarc (+ its own spf, dkim)", {"dmarc": {}}, {}),
        ("dnsbl (1 zone)", {"dnsbl": {"zones": ["bl.test"]}}, {}),
        ("rate_limit, SQLite", {"rate_limit": big}, {}),
    ]
    if pg:
        out.append(("rate_limit, PostgreSQL", {"rate_limit": big}, {"directory": {"url": pg}}))
    out.append(("all five", {"dnsbl": {"zones": ["bl.test"]}, "rate_limit": big, "spf": {},
                             "dkim": {}, "dmarc": {}}, {}))
    return out


def signing_cost(raw: bytes, n: int) -> float:
    from relay.mailauth.signing import Signer, generate

    state = Path(tempfile.mkdtemp(prefix="relay-sign-bench-"))
    try:
        generate(state / "dkim" / "dienbien.gov.vn.relay.key")
        config = from_dict({"server": {"state_dir": str(state)},
                            "dkim_signing": {"enabled": True}})
        signer = Signer(config)
        ours = raw.replace(AUTHOR.encode(), RCPT.encode())
        signer.sign(ours, True, "")
        t0 = time.perf_counter()
        for _ in range(n):
            signer.sign(ours, True, "")
        return (time.perf_counter() - t0) / n
    finally:
        shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    body = "Kính gửi các cơ quan, đơn vị trên địa bàn tỉnh.\n" * 30
    raw = sign(message(AUTHOR, RCPT, body=body))
    dns, conn, proc = start_dns(zone_with_key())
    pg = pg_url()
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    try:
        for cache in (10_000, 0):
            label = "cached" if cache else "uncached"
            for _ in range(args.rounds):  # rounds interleave the configurations
                for name, policies, extra in configurations(pg):
                    sample = asyncio.run(per_message(policies, dns, cache, raw,
                                                     args.messages, extra))
                    results.setdefault(label, {}).setdefault(name, []).append(sample)
        sign_rounds = [signing_cost(raw, args.messages) for _ in range(args.rounds)]
    finally:
        conn.send("stop")
        proc.join(10)
    report: dict[str, Any] = {"messages": args.messages, "rounds": args.rounds,
                              "size": len(raw), "us_per_message": {}}
    for label, rows in results.items():
        base = statistics.median(w for w, _ in rows["baseline"])
        base_cpu = statistics.median(c for _, c in rows["baseline"])
        table = {}
        for name, samples in rows.items():
            wall = [w for w, _ in samples]
            med, cpu = statistics.median(wall), statistics.median(c for _, c in samples)
            table[name] = {"total_us": round(med * 1e6), "cost_us": round((med - base) * 1e6),
                           "spread_us": round((max(wall) - min(wall)) * 1e6),
                           "cpu_us": round(cpu * 1e6),
                           "cpu_cost_us": round((cpu - base_cpu) * 1e6)}
        report["us_per_message"][label] = table
    report["dkim_signing_us"] = round(statistics.median(sign_rounds) * 1e6)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.messages} messages x {args.rounds} rounds, {len(raw)} bytes, one at a time")
    for label, table in report["us_per_message"].items():
        print(f"\n[{label}]  {'policy':<30} {'wall µs':>8} {'cost':>8} {'spread':>8} "
              f"{'CPU µs':>8} {'cost':>8}")
        for name, row in table.items():
            print(f"  {'':<8}{name:<30} {row['total_us']:>8} {row['cost_us']:>8} "
                  f"{row['spread_us']:>8} {row['cpu_us']:>8} {row['cpu_cost_us']:>8}")
    print(f"\nDKIM signing (outbound, per message): {report['dkim_signing_us']} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

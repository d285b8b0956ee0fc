"""Throughput of the relay against Postfix, Haraka and Rspamd: one run, interleaved rounds.

    .venv/bin/python bench/compare.py                        # relay, milter vs Postfix, Rspamd
    .venv/bin/python bench/compare.py --av                   # + antivirus stacks
    .venv/bin/python bench/compare.py --sessions 20 --rounds 3 --messages 1000 --json
    .venv/bin/python bench/compare.py --setups relay,postfix --to ubnd@dienbien.gov.vn
    .venv/bin/python bench/compare.py --show saved.json     # the table of a --json run

Setups (each a private instance on loopback, all delivering to ONE Postfix
`smtp-sink`, C, never the bottleneck):

    postfix               stock Postfix (`master -c DIR`, tests/fixtures/postfix.py)
    relay                 `relay serve`, every shipped [policies.*] of relay.toml but
                          antivirus (read from the file), recipient_exists = reject,
                          sender and recipient real mailboxes (`relay directory`),
                          backend "smtp" to the sink
    relay+av              the same plus [policies.antivirus] against a private clamd
    haraka+clamd          Haraka, its clamd plugin, queue/smtp_forward to the sink
    postfix+rspamd        Postfix, smtpd_milters = Rspamd's proxy (milter, self-scan),
                          Rspamd's antivirus module on the same clamd with --av
    postfix+relay-milter  Postfix, smtpd_milters = `relay milter`, every shipped
                          policy (antivirus too with --av)

Without --av the antivirus setups are left out and neither milter scans; with
--av all six run. The load is Postfix's `smtp-source -s SESSIONS -l SIZE -m N`
(one message per connection), the same envelope for every setup. Rounds are
interleaved (A B C A B C ...) so that drift on the machine spreads over all.

Reported per setup and session count: accepted msg/s (N / smtp-source's wall
time), end-to-end msg/s (N / time until every message is at the sink), p50/p99
acceptance latency, CPU per message of the system under test and the ratios
against the targets (relay/postfix >= 0.75; relay+av / best antivirus stack
>= 1.5; postfix+relay-milter / postfix+rspamd >= 1.5).

Latency is latency under load: smtp-source does not report it, so a probe
client (aiosmtplib) sends messages one at a time to the system under test
while each smtp-source round runs (one new connection each, at most one every
--probe-interval seconds) and times MAIL FROM up to the 250 after DATA. Its
messages are extra load (counted in the arrivals waited for and in CPU per
message, not in N).

CPU per message: utime+stime of the system under test's process trees from
/proc (cutime/cstime included, so short-lived children such as Postfix's smtpd
count), sampled before and after each round, divided by the messages of the
round (probe included). The trees: Postfix's master; the relay; Haraka; Rspamd's
main process; `relay milter`; plus clamd for the antivirus setups. The sink,
smtp-source and the probe are not counted; they share the machine's cores with
every setup alike.

Before the rounds each setup is checked: a clean message arrives at the sink;
with antivirus, EICAR is refused; with the relay's policies, an unknown
recipient is refused (the directory is enforced).

Install what it runs (Debian 12, as root):

    apt-get install -y postfix clamav-daemon rspamd     # smtp-source/sink, clamd, Rspamd
    npm install --prefix /var/tmp/relay-bench/haraka Haraka   # or: compare.py --install-haraka

A setup whose program is missing is skipped with a message naming it. Postfix's
master and Rspamd start as root and drop privileges; run the bench as root.
Everything listens on 127.0.0.1 only; Rspamd, Haraka and the relay get a DNS
server on loopback that answers NXDOMAIN at once; everything started is stopped
at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stacks

SETUPS = ("postfix", "relay", "relay+av", "haraka+clamd", "postfix+rspamd",
          "postfix+relay-milter")
AV_ONLY = frozenset({"relay+av", "haraka+clamd"})
BASELINE = "relay@baseline"  # --baseline: `relay` from another checkout, in the same rounds
TARGETS = {"relay/postfix": 0.75, "relay+av/best-av": 1.5,
           "postfix+relay-milter/postfix+rspamd": 1.5}

EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class Setup:
    name: str
    port: int
    # component name -> its process roots (read at sampling time)
    components: dict[str, Callable[[], list[int]]]
    antivirus: bool = False
    relay_policies: bool = False  # the directory-backed policies decide


@dataclass
class RoundResult:
    setup: str
    sessions: int
    messages: int
    accept_seconds: float
    end_to_end_seconds: float | None  # None: not everything arrived in time
    delivered: int
    expected: int
    cpu_seconds: dict[str, float]
    latencies_ms: list[float]
    probe_failed: int
    dns_queries: int
    background_cpu_seconds: float  # the other stacks meanwhile: idle, or a disturbance
    machine: tuple[float, float] = (0.0, 0.0)  # (busy, idle) CPU seconds of the whole machine
    error: str | None = None


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    sink: stacks.Sink
    dns: stacks.LoopbackDns
    started: list[Stoppable] = field(default_factory=list)
    clamd: stacks.PrivateClamd | None = None
    setups: list[Setup] = field(default_factory=list)

    def all_roots(self) -> set[int]:
        return {pid for s in self.setups for roots in s.components.values() for pid in roots()}

    def start(self, thing: Any) -> Any:
        self.started.append(thing)  # first: a start that fails half-way is stopped too
        thing.start()
        return thing

    def get_clamd(self) -> stacks.PrivateClamd:
        if self.clamd is None:
            self.clamd = self.start(stacks.PrivateClamd(self.work / "clamd"))
        return self.clamd


# --- messages ----------------------------------------------------------------------------------
def load_message(args: argparse.Namespace, i: int = 0) -> bytes:
    """What the probe sends: the --message file, or a message shaped like smtp-source's
    (its four headers, then `size` bytes of payload in lines of 80)."""
    if args.message:
        return Path(args.message).read_bytes()
    head = (f"From: <{args.sender}>\r\nTo: <{args.to}>\r\n"
            f"Date: {formatdate(localtime=True)}\r\nMessage-Id: <probe.{i}.{time.time_ns()}"
            f"@bench.example.org>\r\n\r\n")
    line = b"X" * 78 + b"\r\n"
    body = line * (args.size // len(line)) + b"X" * (args.size % len(line)) + b"\r\n"
    return head.encode() + body


def eicar_message(args: argparse.Namespace) -> bytes:
    return (f"From: <{args.sender}>\r\nTo: <{args.to}>\r\nDate: {formatdate(localtime=True)}\r\n"
            f"Message-Id: <eicar.{time.time_ns()}@bench.example.org>\r\n"
            "Subject: EICAR\r\n\r\n").encode() + EICAR + b"\r\n"


async def transaction(port: int, sender: str, recipient: str, body: bytes,
                      timeout: float = 60) -> tuple[int, str, float]:
    """One SMTP transaction on a new connection: (reply code, text, seconds from MAIL
    FROM to the reply after DATA). A refusal at any step returns that step's reply."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=timeout, start_tls=False,
                             local_hostname="probe.bench.example.org")
    await client.connect()
    try:
        await client.ehlo()
        started = time.perf_counter()
        try:
            await client.mail(sender)
            await client.rcpt(recipient)
            reply = await client.data(body)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message, time.perf_counter() - started
        elapsed = time.perf_counter() - started
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()
        return reply.code, reply.message, elapsed
    finally:
        client.close()


# --- building the setups ------------------------------------------------------------------------
def build(name: str, ctx: Context) -> Setup | None:
    """Start one setup; None (and a message naming what is missing) when it cannot run."""
    args, work, sink, dns = ctx.args, ctx.work, ctx.sink, ctx.dns
    limit = max(args.session_list) + 50
    av = args.av

    def need_postfix() -> bool:
        if stacks.postfix_master() is None:
            skip(name, "Postfix's master (Debian package postfix)")
            return False
        if os.geteuid() != 0:
            skip(name, "root (a private Postfix master starts as root)")
            return False
        return True

    def need_clamd() -> bool:
        if stacks.CLAMD is None:
            skip(name, "clamd (Debian package clamav-daemon)")
            return False
        return True

    if name == "postfix":
        if not need_postfix():
            return None
        pf = stacks.start_postfix(work / name, sink.port, None, limit)
        ctx.started.append(pf)
        return Setup(name, pf.port, {"postfix": lambda: [pf.proc.pid] if pf.proc else []})

    if name in ("relay", "relay+av", BASELINE):
        with_av = name == "relay+av"
        if with_av and not need_clamd():
            return None
        clamd = ctx.get_clamd() if with_av else None
        relay = ctx.start(stacks.RelayServe(
            work / name, sink.port, dns.address, clamd.address if clamd else None,
            args.sender, args.to, limit * 2, args.antispam,
            source=args.baseline if name == BASELINE else None))
        components = {"relay": relay.roots}
        if clamd:
            components["clamd"] = clamd.roots
        return Setup(name, relay.port, components, antivirus=with_av, relay_policies=True)

    if name == "haraka+clamd":
        if not need_clamd():
            return None
        if shutil.which("node") is None:
            skip(name, "node (Debian package nodejs)")
            return None
        package = stacks.haraka_dir(args.haraka)
        if package is None and args.install_haraka:
            package = stacks.install_haraka()
        if package is None:
            skip(name, "Haraka (npm install --prefix /var/tmp/relay-bench/haraka Haraka, "
                       "or --install-haraka)")
            return None
        clamd = ctx.get_clamd()
        haraka = ctx.start(stacks.Haraka(work / name, package, sink.port, clamd.address,
                                         dns.address, args.workers))
        return Setup(name, haraka.port, {"haraka": haraka.roots, "clamd": clamd.roots},
                     antivirus=True)

    if name == "postfix+rspamd":
        if stacks.rspamd_binary() is None:
            skip(name, "rspamd (Debian package rspamd)")
            return None
        if not need_postfix() or (av and not need_clamd()):
            return None
        clamd = ctx.get_clamd() if av else None
        rspamd = ctx.start(stacks.RspamdMilter(work / "rspamd", dns,
                                               clamd.address if clamd else None, args.workers))
        pf = stacks.start_postfix(work / name, sink.port, rspamd.socket, limit)
        ctx.started.append(pf)
        components = {"postfix": lambda: [pf.proc.pid] if pf.proc else [],
                      "rspamd": rspamd.roots}
        if clamd:
            components["clamd"] = clamd.roots
        return Setup(name, pf.port, components, antivirus=av)

    if name == "postfix+relay-milter":
        if not need_postfix() or (av and not need_clamd()):
            return None
        clamd = ctx.get_clamd() if av else None
        milter = ctx.start(stacks.RelayMilter(work / "relay-milter", dns.address,
                                              clamd.address if clamd else None,
                                              args.sender, args.to, limit * 2,
                                              args.antispam))
        pf = stacks.start_postfix(work / name, sink.port, milter.socket, limit)
        ctx.started.append(pf)
        components = {"postfix": lambda: [pf.proc.pid] if pf.proc else [],
                      "relay-milter": milter.roots}
        if clamd:
            components["clamd"] = clamd.roots
        return Setup(name, pf.port, components, antivirus=av, relay_policies=True)

    raise ValueError(name)


def skip(name: str, what: str) -> None:
    print(f"skipping {name}: needs {what}", file=sys.stderr, flush=True)


# --- measuring -----------------------------------------------------------------------------------
def cpu_sample(setup: Setup) -> dict[str, float]:
    return {part: stacks.tree_cpu_seconds(roots()) for part, roots in setup.components.items()}


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot: busy counts what no
    process is charged with too (the journal's commits, softirqs of loopback TCP), idle
    counts I/O wait, so a setup that leaves cores idle is bound by latency, not CPU."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, (idle + iowait) / tick


def others_cpu(setup: Setup, ctx: Context) -> float:
    """CPU seconds so far of every stack but this one (idle ones should stay near zero)."""
    mine = {pid for roots in setup.components.values() for pid in roots()}
    return stacks.tree_cpu_seconds(ctx.all_roots() - mine)


async def settle(ctx: Context, longest: float, quiet: float = 0.05) -> float:
    """Wait until every stack is idle (under `quiet` of a core for two half-seconds in a row),
    e.g. Rspamd compiling its Hyperscan databases after a start; the seconds waited."""
    began = time.monotonic()
    calm, step = 0, 0.5
    last = stacks.tree_cpu_seconds(ctx.all_roots())
    while time.monotonic() - began < longest and calm < 2:
        await asyncio.sleep(step)
        now = stacks.tree_cpu_seconds(ctx.all_roots())
        calm = calm + 1 if now - last < quiet * step else 0
        last = now
    return time.monotonic() - began


async def wait_arrivals(sink: stacks.Sink, target: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while sink.count < target:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def probe(setup: Setup, args: argparse.Namespace, stop: asyncio.Event
                ) -> tuple[list[float], int, int]:
    """Sequential messages while the load runs: (latencies in ms, accepted, failed)."""
    latencies: list[float] = []
    ok = failed = 0
    deadline = time.monotonic() + args.round_timeout
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        began = time.monotonic()
        i += 1
        try:
            code, _, seconds = await transaction(setup.port, args.sender, args.to,
                                                 load_message(args, i), timeout=60)
        except (aiosmtplib.SMTPException, OSError):
            code, seconds = 0, 0.0
        if code == 250:
            ok += 1
            latencies.append(seconds * 1000)
        else:
            failed += 1
        pause = args.probe_interval - (time.monotonic() - began)
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
    return latencies, ok, failed


async def run_round(setup: Setup, sessions: int, messages: int, ctx: Context) -> RoundResult:
    args, sink = ctx.args, ctx.sink
    source = ["smtp-source", "-s", str(sessions), "-m", str(messages),
              "-f", args.sender, "-t", args.to, "-M", "bench.example.org"]
    source += ["-F", args.message] if args.message else ["-l", str(args.size)]
    source.append(f"127.0.0.1:{setup.port}")
    cpu0, arrived0, dns0 = cpu_sample(setup), sink.count, ctx.dns.total
    background0 = others_cpu(setup, ctx)
    machine0 = machine_cpu()
    error: str | None = None
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *source, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(setup, args, stop))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), args.round_timeout)
        if proc.returncode != 0:
            error = f"smtp-source exit {proc.returncode}: {(err or out).decode()[-300:].strip()}"
    except TimeoutError:
        proc.kill()
        await proc.wait()
        error = f"smtp-source still running after {args.round_timeout}s"
    accept_seconds = time.monotonic() - started
    stop.set()
    latencies, probe_ok, probe_failed = await asyncio.wait_for(probing, 120)
    expected = messages + probe_ok
    complete = await wait_arrivals(sink, arrived0 + expected,
                                   args.drain_timeout if error is None else 5)
    end_to_end = time.monotonic() - started
    cpu1 = cpu_sample(setup)
    machine1 = machine_cpu()
    background = others_cpu(setup, ctx) - background0
    return RoundResult(
        setup=setup.name, sessions=sessions, messages=messages,
        accept_seconds=accept_seconds, end_to_end_seconds=end_to_end if complete else None,
        delivered=sink.count - arrived0, expected=expected,
        cpu_seconds={part: cpu1[part] - cpu0[part] for part in cpu0},
        latencies_ms=latencies, probe_failed=probe_failed,
        dns_queries=ctx.dns.total - dns0, background_cpu_seconds=background,
        machine=(machine1[0] - machine0[0], machine1[1] - machine0[1]), error=error)


async def sanity(setup: Setup, ctx: Context) -> list[str]:
    """Prove the setup does its job before timing it; problems come back as text."""
    args, sink, problems, notes = ctx.args, ctx.sink, [], []
    before = sink.count
    code, text, _ = await transaction(setup.port, args.sender, args.to, load_message(args))
    notes.append(f"clean {code}")
    if code != 250:
        problems.append(f"a clean message got {code} {text}")
    elif not await wait_arrivals(sink, before + 1, 60):
        problems.append("a clean message was accepted but did not reach the sink in 60 s")
    if setup.antivirus:
        code, text, _ = await transaction(setup.port, args.sender, args.to, eicar_message(args))
        notes.append(f"EICAR {code}")
        if code < 500:
            problems.append(f"EICAR got {code} {text}, not a refusal")
    if setup.relay_policies:
        stranger = f"khongco.{os.getpid()}@{stacks.DOMAIN}"
        code, text, _ = await transaction(setup.port, args.sender, stranger, load_message(args))
        notes.append(f"unknown recipient {code}")
        if code < 500:
            problems.append(f"an unknown recipient got {code} {text}, not a refusal")
    print(f"  {setup.name:22} checked: {', '.join(notes)}", file=sys.stderr, flush=True)
    return problems


# --- summarising ---------------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarise(rounds: list[RoundResult]) -> dict[str, Any]:
    """Totals over the rounds of one setup at one session count."""
    sent = sum(r.messages for r in rounds)
    done = [r for r in rounds if r.end_to_end_seconds is not None and r.error is None]
    latencies = [ms for r in rounds for ms in r.latencies_ms]
    handled = sum(r.expected for r in rounds)
    cpu: dict[str, float] = {}
    for r in rounds:
        for part, seconds in r.cpu_seconds.items():
            cpu[part] = cpu.get(part, 0.0) + seconds
    return {
        "rounds": len(rounds),
        "messages": sent,
        "accepted_per_s": sent / sum(r.accept_seconds for r in rounds),
        "end_to_end_per_s": (sum(r.messages for r in done)
                             / sum(r.end_to_end_seconds or 0 for r in done)) if done else None,
        "complete_rounds": len(done),
        "delivered": sum(r.delivered for r in rounds),
        "expected": handled,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": percentile(latencies, 0.99),
        "latency_samples": len(latencies),
        "probe_failed": sum(r.probe_failed for r in rounds),
        "cpu_ms_per_message": 1000 * sum(cpu.values()) / handled if handled else None,
        "cpu_ms_per_message_by_part": {p: 1000 * s / handled for p, s in cpu.items()}
        if handled else {},
        "end_to_end_per_round": [r.messages / r.end_to_end_seconds
                                 if r.end_to_end_seconds and r.error is None else None
                                 for r in rounds],
        "dns_queries": sum(r.dns_queries for r in rounds),
        "background_cpu_s": sum(r.background_cpu_seconds for r in rounds),
        "machine_ms_per_message": 1000 * sum(r.machine[0] for r in rounds) / handled
        if handled else None,
        "machine_idle_share": sum(r.machine[1] for r in rounds)
        / (sum(sum(r.machine) for r in rounds) or 1),
        "errors": [r.error for r in rounds if r.error],
    }


def ratios(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def rate(name: str, key: str = "end_to_end_per_s") -> float | None:
        return table.get(name, {}).get(key)

    def entry(ours: str, theirs: list[str], target: float | None) -> dict[str, Any] | None:
        mine = rate(ours)
        rivals = [(rate(t), t) for t in theirs if rate(t)]
        if mine is None or not rivals:
            return None
        best, against = max(rivals)
        value = mine / best
        accepted = (rate(ours, "accepted_per_s") or 0) / (rate(against, "accepted_per_s") or 1)
        # the same ratio round by round (each round's setups ran one after another): its
        # spread shows how much of a difference is noise
        per_round = []
        for i, own in enumerate(table[ours]["end_to_end_per_round"]):
            others = [table[t]["end_to_end_per_round"][i] for t in theirs if t in table
                      and i < len(table[t]["end_to_end_per_round"])]
            others = [o for o in others if o]
            if own and others:
                per_round.append(own / max(others))
        return {"value": value, "against": against, "target": target,
                "met": target is None or value >= target,
                "accepted_ratio": accepted, "per_round": per_round}

    out = {}
    for key, ours, theirs in (
            ("relay/postfix", "relay", ["postfix"]),
            ("relay+av/best-av", "relay+av", ["haraka+clamd", "postfix+rspamd"]),
            ("postfix+relay-milter/postfix+rspamd", "postfix+relay-milter", ["postfix+rspamd"]),
            (f"relay/{BASELINE}", "relay", [BASELINE])):
        # the best antivirus stack is only an antivirus stack when Rspamd scans
        if key == "relay+av/best-av" and not table.get("relay+av"):
            continue
        result = entry(ours, theirs, TARGETS.get(key))
        if result is not None:
            out[key] = result
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\n{cfg['rounds']} rounds x {cfg['messages']} messages ({cfg['message']}) "
          f"from {cfg['sender']} to {cfg['to']}; antivirus {'on' if cfg['av'] else 'off'}; "
          f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_before']:.1f}"
          f" -> {report['machine']['load_after']:.1f}")
    for sessions, table in report["results"].items():
        print(f"\n{sessions} sessions")
        print(f"  {'setup':22} {'accepted/s':>10} {'e2e/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU ms/msg':>10} {'machine':>7} {'idle':>5}  delivered")
        for name, s in table.items():
            parts = ", ".join(f"{p} {v:.2f}" for p, v in s["cpu_ms_per_message_by_part"].items())
            note = f"  ERRORS: {'; '.join(s['errors'])[:200]}" if s["errors"] else ""
            idle = s.get("machine_idle_share")  # runs saved before it was measured lack it
            print(f"  {name:22} {s['accepted_per_s']:10.0f} {fmt(s['end_to_end_per_s'], '8.0f')} "
                  f"{fmt(s['p50_ms'], '7.1f')} {fmt(s['p99_ms'], '7.1f')} "
                  f"{fmt(s['cpu_ms_per_message'], '10.2f')} "
                  f"{fmt(s.get('machine_ms_per_message'), '7.2f')} "
                  f"{fmt(idle and 100 * idle, '4.0f')}%"
                  f"  {s['delivered']}/{s['expected']}"
                  f"  ({parts}){note}")
        for key, r in report["ratios"].get(sessions, {}).items():
            print(f"  ratio {key:38} {r['value']:.2f} end to end "
                  f"(accepted {r['accepted_ratio']:.2f}), vs {r['against']}; "
                  + (f"target >= {r['target']}: {'met' if r['met'] else 'NOT met'}"
                     if r["target"] is not None else "no target")
                  + (f"; by round {min(r['per_round']):.2f}-{max(r['per_round']):.2f}"
                     if r.get("per_round") else ""))


# --- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per setup")
    parser.add_argument("--messages", type=int, default=1000, help="smtp-source messages a round")
    parser.add_argument("--sessions", default="20,100", help="comma-separated session counts")
    parser.add_argument("--size", type=int, default=10240, help="smtp-source -l payload bytes")
    parser.add_argument("--message", help="send this file instead (smtp-source -F, the probe too)")
    parser.add_argument("--setups", help=f"comma-separated, of: {', '.join(SETUPS)}")
    parser.add_argument("--av", action="store_true",
                        help="antivirus comparison: relay+av, haraka+clamd, and both milters scan")
    parser.add_argument("--antispam", action="store_true",
                        help="the relay and the milter also run spf, dkim, dmarc, dnsbl and "
                        "rate_limit on an untrusted client (sender: "
                        f"{stacks.ANTISPAM_SENDER}, its SPF and DMARC records on the "
                        "loopback DNS server)")
    parser.add_argument("--from", dest="sender", default=None,
                        help=f"default: annv@{stacks.DOMAIN}, with --antispam "
                        f"{stacks.ANTISPAM_SENDER}")
    parser.add_argument("--to", default=f"binhtt@{stacks.DOMAIN}",
                        help="recipient; an official one (ubnd@, stttt@, tiepdan@) is archived")
    parser.add_argument("--warmup", type=int, default=200, help="messages per setup, not counted")
    parser.add_argument("--probe-interval", type=float, default=0.02,
                        help="seconds between latency probe messages (at most)")
    parser.add_argument("--round-timeout", type=float, default=900)
    parser.add_argument("--drain-timeout", type=float, default=300,
                        help="longest wait for arrivals after smtp-source ends")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="Rspamd proxy workers and Haraka nodes")
    parser.add_argument("--haraka", help="path of node_modules/Haraka (default: $HARAKA_DIR or "
                                         f"{stacks.HARAKA_CACHE}/node_modules/Haraka)")
    parser.add_argument("--install-haraka", action="store_true",
                        help=f"npm install Haraka into {stacks.HARAKA_CACHE} when missing")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help=f"also run `relay` from this checkout as {BASELINE!r}, in the same "
                             "rounds (e.g. git worktree add /tmp/base main~1): a change's "
                             "effect, measured against the same noise")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--show", metavar="FILE", help="print the table of a saved --json run")
    args = parser.parse_args(argv)
    args.session_list = [int(s) for s in args.sessions.split(",") if s.strip()]
    if args.setups:
        args.setup_list = [s.strip() for s in args.setups.split(",") if s.strip()]
        unknown = set(args.setup_list) - set(SETUPS)
        if unknown:
            parser.error(f"unknown setups: {', '.join(sorted(unknown))}")
        args.av = args.av or bool(AV_ONLY & set(args.setup_list))
    else:
        args.setup_list = [s for s in SETUPS if args.av or s not in AV_ONLY]
    if args.baseline is not None:
        if not (args.baseline / "relay" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no relay package there")
        args.baseline = args.baseline.resolve()
        args.setup_list.insert(args.setup_list.index("relay") + 1 if "relay" in
                               args.setup_list else 0, BASELINE)
    if args.sender is None:
        args.sender = stacks.ANTISPAM_SENDER if args.antispam else f"annv@{stacks.DOMAIN}"
    if args.rounds < 1 or args.messages < 1 or not args.session_list:
        parser.error("--rounds, --messages and --sessions must be positive")
    return args


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        print_report(json.loads(Path(args.show).read_text()))
        return 0
    missing = stacks.missing_programs(["smtp-source", "smtp-sink"])
    if missing:
        print(f"needs {', '.join(missing)} (Debian package postfix)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    work = Path(tempfile.mkdtemp(prefix="relay-compare-", dir=os.environ.get("TMPDIR", "/tmp")))
    work.chmod(0o755)  # Postfix, Rspamd and the sink drop privileges and need to reach below
    ctx = Context(args, work, stacks.Sink(), stacks.LoopbackDns())
    if args.antispam:
        ctx.dns.add(stacks.ANTISPAM_RECORDS)
    ctx.dns.start()
    load_before = os.getloadavg()[0]
    try:
        ctx.start(ctx.sink)
        setups: list[Setup] = []
        log = sys.stderr
        for name in args.setup_list:
            print(f"starting {name}", file=log, flush=True)
            try:
                setup = build(name, ctx)
            except Exception as exc:  # one stack that will not start does not stop the others
                print(f"skipping {name}: {exc}", file=log, flush=True)
                continue
            if setup is not None:
                setups.append(setup)
        if not setups:
            print("nothing to measure", file=log)
            return 2
        report = asyncio.run(measure(setups, ctx))
        report["machine"] = {"cpus": os.cpu_count(), "load_before": load_before,
                             "load_after": os.getloadavg()[0]}
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_report(report)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for thing in reversed(ctx.started):
            with contextlib.suppress(Exception):
                thing.stop()
        ctx.dns.stop()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def measure(setups: list[Setup], ctx: Context) -> dict[str, Any]:
    args = ctx.args
    log = sys.stderr
    checked: list[Setup] = []
    sanity_report: dict[str, Any] = {}
    for setup in setups:
        problems = await sanity(setup, ctx)
        sanity_report[setup.name] = problems or "ok"
        if problems:
            print(f"  {setup.name}: left out: {'; '.join(problems)}", file=log, flush=True)
        else:
            checked.append(setup)
    ctx.setups = checked
    waited = await settle(ctx, 300)
    print(f"  all stacks idle after {waited:.0f} s", file=log, flush=True)
    for setup in checked:  # warm up: processes spawned, caches filled, rules compiled
        warm = await run_round(setup, min(args.session_list), args.warmup, ctx)
        print(f"  warm-up {setup.name}: {warm.messages / warm.accept_seconds:.0f} msg/s"
              f"{' ' + warm.error if warm.error else ''}", file=log, flush=True)
    results: dict[int, dict[str, list[RoundResult]]] = {
        k: {s.name: [] for s in checked} for k in args.session_list}
    for number in range(1, args.rounds + 1):
        for sessions in args.session_list:
            for setup in checked:
                waited = await settle(ctx, 30)
                if waited > 5:
                    print(f"  waited {waited:.0f} s for the stacks to be idle", file=log)
                r = await run_round(setup, sessions, args.messages, ctx)
                results[sessions][setup.name].append(r)
                e2e = (f"{r.messages / r.end_to_end_seconds:6.0f}" if r.end_to_end_seconds
                       else "  n/a")
                print(f"  round {number} sessions {sessions:3} {setup.name:22} accepted "
                      f"{r.messages / r.accept_seconds:6.0f}/s  e2e {e2e}/s  "
                      f"{r.delivered}/{r.expected}  others' CPU {r.background_cpu_seconds:.2f} s"
                      f"{'  ' + r.error if r.error else ''}",
                      file=log, flush=True)
    tables = {str(k): {name: summarise(rs) for name, rs in by_setup.items()}
              for k, by_setup in results.items()}
    return {
        "config": {"rounds": args.rounds, "messages": args.messages, "sessions": args.session_list,
                   "message": args.message or f"smtp-source -l {args.size}",
                   "sender": args.sender, "to": args.to, "av": args.av,
                   "antispam": args.antispam,
                   "setups": [s.name for s in checked], "workers": args.workers,
                   "probe_interval": args.probe_interval,
                   # relay+av, and the milter with --av, add antivirus
                   "relay_policies": sorted(stacks.relay_policies("-", None,
                                                                  args.antispam))},
        "sanity": sanity_report,
        "results": tables,
        "ratios": {k: ratios(t) for k, t in tables.items()},
        "rounds": [asdict(r) | {"latencies_ms": None} for by in results.values()
                   for rs in by.values() for r in rs],
    }


if __name__ == "__main__":
    sys.exit(main())

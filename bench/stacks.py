"""The systems `bench/compare.py` measures, each a private instance on loopback.

Every class here starts one program with its own configuration, state and
sockets under the bench's work directory, never a system instance, and stops
exactly what it started (its own process group). `roots()` names the processes
whose whole tree is the system under test, for the CPU accounting in
`tree_cpu_seconds`.

    Sink            Postfix's smtp-sink, the one next hop of every setup
    LoopbackDns     a DNS server on 127.0.0.1 answering NXDOMAIN: the resolver of
                    Rspamd, Haraka and the relay, so no lookup leaves the machine
    PrivateClamd    clamd with an EICAR-only database (tests/fixtures/clamd.py)
    RelayServe      `relay serve`                      (tests/fixtures/relayproc.py)
    RelayMilter     `relay milter`
    PrivatePostfix  Postfix `master -c DIR`            (tests/fixtures/postfix.py)
    RspamdMilter    Rspamd's proxy worker in milter mode, self-scan
    Haraka          Haraka with its clamd plugin and queue/smtp_forward
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.clamd import CLAMD, Clamd  # noqa: E402
from tests.fixtures.dns import DnsServer  # noqa: E402
from tests.fixtures.postfix import PrivatePostfix, postfix_master, wait_for_port  # noqa: E402
from tests.fixtures.relayproc import Relay, free_port, relay_env, run_cli, to_toml  # noqa: E402

__all__ = ["CLAMD", "PrivatePostfix", "postfix_master", "free_port"]

DOMAIN = "dienbien.gov.vn"
AGENCY = "stttt"  # the bench's agency: Sở Thông tin và Truyền thông
HARAKA_CACHE = Path("/var/tmp/relay-bench/haraka")  # `npm install --prefix` target
RSPAMD_HS_CACHE = Path("/var/tmp/relay-bench/rspamd-hs")  # Rspamd's compiled regexps

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- CPU of a process tree ------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime+stime+cutime+cstime in seconds) for every process now."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:  # exited meanwhile
            continue
        fields = raw.rpartition(b")")[2].split()
        # after "pid (comm)": state ppid ... utime(11) stime(12) cutime(13) cstime(14)
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        table[int(entry.name)] = (int(fields[1]), ticks / _CLK_TCK)
    return table


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """User + system CPU of each root and all its descendants, the exited ones included.

    A process that exits is reaped by its parent, whose cutime/cstime then hold
    its CPU (and that of its own reaped children): so the sum over the live tree
    of utime+stime+cutime+cstime only grows, and a difference of two samples is
    what the tree spent between them, including short-lived Postfix daemons.
    """
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, seen = 0.0, set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        stack.extend(children.get(pid, ()))
    return total


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process group of a process we started in its own session, then SIGKILL."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


# --- the sink ----------------------------------------------------------------------------------
class Sink:
    """Postfix's `smtp-sink -c` on loopback, its message counter read from a pipe.

    Why `-c` and not `-d` dump files: the counter goes up when the final "." of
    a message is received, so it counts completed messages only, while a dump
    file is created when a transaction starts (a file per message still being
    sent would count as arrived) and is named by time plus a 32-bit random
    number (two messages can share a name and overwrite each other). The counter
    also costs the sink no disk writes. It lines up with our expected count
    because the sink accepts everything and each setup delivers one message per
    accepted message (one recipient).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> Sink:
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        self.proc = subprocess.Popen(
            [binary, "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "1024"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="sink-counter", daemon=True)
        self._reader.start()
        wait_for_port(self.port, 10, self.proc)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        pending = b""
        pattern = re.compile(rb"mesg=(\d+)")
        while chunk := self.proc.stdout.read1(65536):
            pending += chunk
            records = pending.split(b"\r")
            pending = records.pop()
            for record in reversed(records):
                match = pattern.search(record)
                if match:
                    with self._lock:
                        self._count = int(match.group(1))
                    break

    @property
    def count(self) -> int:
        """Messages completely received since the sink started."""
        with self._lock:
            return self._count

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None


# --- loopback DNS --------------------------------------------------------------------------------
class LoopbackDns(DnsServer):
    """The tests' DNS server: NXDOMAIN for every name outside its `test.` zone, at once.

    Given to Rspamd, Haraka and the relay as their only resolver, so that no query
    leaves the machine and none waits for a timeout; `total` counts the questions.
    """

    @property
    def total(self) -> int:
        return sum(self.queries.values())


# --- clamd -------------------------------------------------------------------------------------
class PrivateClamd:
    """clamd with its own config, socket and EICAR-only database, as the tests start it.

    Every antivirus setup talks to it over TCP on loopback (Rspamd runs as
    `_rspamd`, which could not open the root-owned Unix socket), so all three
    pay the same transport.
    """

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.clamd = Clamd(base, base / "clamd.sock", port=free_port())

    @property
    def address(self) -> str:
        return self.clamd.tcp

    @property
    def port(self) -> int:
        return self.clamd.port

    def start(self) -> PrivateClamd:
        self.clamd.start(timeout=60)
        return self

    def roots(self) -> list[int]:
        return [self.clamd.process.pid] if self.clamd.process else []

    def stop(self) -> None:
        self.clamd.stop()


# --- the relay's configuration -------------------------------------------------------------------
def shipped_policies() -> dict[str, Any]:
    """Every `[policies.*]` table of the shipped relay.toml except antivirus, as written.

    Read from the file rather than listed here, so a policy added to (or removed
    from) relay.toml is benchmarked without touching the bench.
    """
    with (ROOT / "relay.toml").open("rb") as fh:
        data = tomllib.load(fh)
    return {name: dict(table) for name, table in data.get("policies", {}).items()
            if name != "antivirus"}


# --antispam: the sender is outside the province, its SPF record allows the loopback
# client and its domain publishes p=reject; every message asks the blocklist (its
# NXDOMAIN answers are not cached) and counts against the rate limits
ANTISPAM_SENDER = "bench@partner.test"
ANTISPAM_RECORDS = """
partner         TXT   "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.partner  TXT   "v=DMARC1; p=reject"
"""


def antispam_policies() -> dict[str, Any]:
    return {"dnsbl": {"zones": ["bl.test"]},
            "rate_limit": {"per_login": "10000000/1h", "per_ip": "10000000/1h"},
            "spf": {}, "dkim": {}, "dmarc": {}}


def relay_policies(dns: str, clamd: str | None, antispam: bool = False) -> dict[str, Any]:
    policies = shipped_policies()
    if antispam:
        policies.update(antispam_policies())
    if "recipient_exists" in policies:  # the shipped file monitors; the bench enforces
        policies["recipient_exists"]["action"] = "reject"
    if "webmail" in policies:  # mx_check is off; should it be turned on, DNS stays here
        policies["webmail"]["nameservers"] = [dns]
    if clamd is not None:
        policies["antivirus"] = {"action": "reject", "clamd": clamd, "timeout": "30s"}
    return policies


def recipient_kind(address: str) -> tuple[str, str]:
    """(kind, agency) of the bench's recipient, by the naming rules of Điều 4."""
    local = address.partition("@")[0].lower()
    if local == "ubnd":
        return "official", "ubnd"
    if local == "tiepdan":
        return "citizen_intake", "ubnd"
    if local.startswith("tiepdan."):
        return "citizen_intake", local.removeprefix("tiepdan.")
    if local == AGENCY:
        return "official", AGENCY
    return "personal", AGENCY


def populate_directory(config: Path, sender: str, recipient: str) -> None:
    """Make the sender and the recipient real mailboxes, with the admin CLI (and the
    archive's signing key)."""
    agencies = {AGENCY: "Sở Thông tin và Truyền thông"}
    kind, agency = recipient_kind(recipient)
    agencies.setdefault(agency, "UBND tỉnh Điện Biên" if agency == "ubnd" else agency)
    steps: list[tuple[str, ...]] = [
        ("directory", "agency", "add", code, "--name", name) for code, name in agencies.items()]
    if sender.endswith(f"@{DOMAIN}"):  # --antispam: the sender is outside
        steps.append(("directory", "mailbox", "add", sender, "--kind", "personal", "--agency",
                      AGENCY, "--name", "Nguyễn Văn An", "--no-password"))
    extra = ("--name", "Trần Thị Bình") if kind == "personal" else ()
    steps.append(("directory", "mailbox", "add", recipient, "--kind", kind, "--agency", agency,
                  *extra, "--no-password"))
    for step in steps:
        done = run_cli(*step, "--basis", "bench/compare.py", "-c", str(config))
        if done.returncode != 0:
            raise RuntimeError(f"relay {' '.join(step)}: {done.stderr.decode(errors='replace')}")
    # the archive of official mail (--to ubnd@...) signs checkpoints, as in production
    done = run_cli("archive", "keygen", "-c", str(config))
    if done.returncode != 0:
        raise RuntimeError(f"relay archive keygen: {done.stderr.decode(errors='replace')}")


def relay_server_section(max_connections: int, antispam: bool = False) -> dict[str, Any]:
    return {"hostname": "mail.dienbien.gov.vn", "local_domains": [DOMAIN], "state_dir": "var",
            # Postfix's mynetworks in every Postfix setup: the load generator is an
            # agency server relaying without AUTH (sender_login_match and
            # no_local_spoofing then have nothing to refuse, but they run); with
            # --antispam it is an outside MX, which the anti-spam policies judge
            "trusted_networks": [] if antispam else ["127.0.0.0/8"],
            "max_connections": max_connections, "log_level": "warning",
            # as shipped: a front process per core, inspection workers per core
            "workers": 0}


class RelayServe:
    """`relay serve` with every shipped policy, delivering by SMTP to the sink."""

    program = "relay serve"

    def __init__(self, base: Path, sink_port: int, dns: str, clamd: str | None, sender: str,
                 recipient: str, max_connections: int, antispam: bool = False,
                 source: Path | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.relay = Relay(base, {
            "server": relay_server_section(max_connections, antispam),
            "dns": {"nameservers": [dns]},
            # Postfix's default_destination_concurrency_limit is 20: the same here
            "backend": {"kind": "smtp", "host": "127.0.0.1", "port": sink_port,
                        "max_connections": 20},
            "queue": {"concurrency": 20},
            "inspection": {"workers": 0},
            "policies": relay_policies(dns, clamd, antispam),
        })
        if source is not None:  # another checkout's relay package (compare.py --baseline)
            self.relay.source = source
        populate_directory(self.relay.config_path, sender, recipient)

    @property
    def port(self) -> int:
        return self.relay.mx

    def start(self) -> RelayServe:
        self.relay.start(timeout=60)
        return self

    def roots(self) -> list[int]:
        return [self.relay.proc.pid] if self.relay.proc else []

    def log(self) -> str:
        return tail(self.relay.log)

    def stop(self) -> None:
        self.relay.stop()


class RelayMilter:
    """`relay milter` with every shipped policy (antivirus too when asked)."""

    def __init__(self, base: Path, dns: str, clamd: str | None, sender: str, recipient: str,
                 max_connections: int, antispam: bool = False) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.port = free_port()
        self.config = base / "relay.toml"
        self.config.write_text(to_toml({
            "server": relay_server_section(max_connections, antispam),
            "milter": {"bind": f"127.0.0.1:{self.port}", "max_connections": max_connections},
            "dns": {"nameservers": [dns]},
            "policies": relay_policies(dns, clamd, antispam),
        }))
        self.logfile = base / "milter.log"
        self.proc: subprocess.Popen[bytes] | None = None
        populate_directory(self.config, sender, recipient)

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> RelayMilter:
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "milter", "-c", str(self.config)],
                env=relay_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            wait_for_port(self.port, 60, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"relay milter did not start: {exc}\n{tail(self.logfile)}") from exc
        return self

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None


# --- Postfix -------------------------------------------------------------------------------------
def start_postfix(base: Path, sink_port: int, milter: str | None, process_limit: int
                  ) -> PrivatePostfix:
    base.mkdir(parents=True, exist_ok=True)
    params = {
        # smtpd processes: one per concurrent session (Postfix's default is 100)
        "default_process_limit": str(process_limit),
        # the milter stacks' defaults as docs/milter.md asks (milter_default_action = tempfail)
        "milter_connect_timeout": "10s", "milter_command_timeout": "30s",
        "milter_content_timeout": "300s",
    }
    return PrivatePostfix(base, ("127.0.0.1", sink_port), milter, params).start(timeout=60)


# --- Rspamd --------------------------------------------------------------------------------------
# Modules off: the ones that ask the network (DNS lists, SPF/DKIM/DMARC/ARC keys,
# ASN, fuzzy hashes at rspamd.com, maps downloaded from maps.rspamd.com), and
# DKIM signing (it looks for a key for every message from a local network). What
# stays is Rspamd's local analysis (regexp rules, chartable, MIME types, hfilter,
# mid, once_received, forged recipients, ...) plus antivirus; the Redis-backed
# modules (Bayes, neural, ratelimit, greylist, replies, reputation) disable
# themselves as no Redis is configured, which also means no antivirus result cache.
RSPAMD_NETWORK_MODULES = ("rbl", "surbl", "spf", "dkim", "dkim_signing", "dmarc", "arc", "asn",
                          "fuzzy_check", "whitelist", "multimap", "phishing", "emails",
                          "reputation", "url_redirector", "dcc", "mx_check")

RSPAMD_CONF = """\
# Written by bench/compare.py: a private Rspamd, loopback only
.include "$CONFDIR/common.conf"
options {{
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
  type = "file";
  filename = "$LOGDIR/rspamd.log";
  level = "warning";
}}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{milter_port}";
  milter = yes;
  timeout = 120s;
  count = {workers};
  upstream "local" {{
    default = yes;
    self_scan = yes;
  }}
}}
worker "controller" {{
  bind_socket = "127.0.0.1:{controller_port}";
  .include "$CONFDIR/worker-controller.inc"
}}
"""


def rspamd_binary() -> str | None:
    return shutil.which("rspamd") or ("/usr/bin/rspamd" if Path("/usr/bin/rspamd").exists()
                                      else None)


class RspamdMilter:
    """Rspamd 3.x: proxy workers in milter mode scanning themselves (`self_scan`), no
    separate normal worker, one proxy per core; own LOCAL_CONFDIR, DBDIR, RUNDIR, LOGDIR."""

    user = "_rspamd"

    def __init__(self, base: Path, dns: LoopbackDns, clamd: str | None, workers: int) -> None:
        self.base = base
        self.port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for name in ("local.d", "override.d", "db", "run", "log"):
            (base / name).mkdir(parents=True, exist_ok=True)
        (base / "rspamd.conf").write_text(RSPAMD_CONF.format(
            milter_port=self.port, controller_port=self.controller_port, workers=workers))
        # Hyperscan databases take a minute of CPU to compile: kept between runs
        RSPAMD_HS_CACHE.mkdir(parents=True, exist_ok=True)
        (base / "local.d" / "options.inc").write_text(
            f'hs_cache_dir = "{RSPAMD_HS_CACHE}";\n'
            f'dns {{\n  nameserver = ["{dns.address}"];\n  timeout = 1s;\n  retransmits = 1;\n}}\n')
        for module in RSPAMD_NETWORK_MODULES:
            (base / "override.d" / f"{module}.conf").write_text("enabled = false;\n")
        if clamd is not None:
            # scan_mime_parts = false: the whole message, one INSTREAM, as the relay and
            # Haraka do (the default scans attachments only: a text message is not scanned)
            (base / "local.d" / "antivirus.conf").write_text(f"""\
clamav {{
  type = "clamav";
  servers = "{clamd}";
  action = "reject";
  scan_mime_parts = false;
  symbol = "CLAM_VIRUS";
  log_clean = false;
  timeout = 30s;
  retransmits = 1;
}}
""")
        account = pwd.getpwnam(self.user)
        for path in [base, *base.rglob("*"), RSPAMD_HS_CACHE]:
            os.chown(path, account.pw_uid, account.pw_gid)
        base.chmod(0o755)

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> RspamdMilter:
        binary = rspamd_binary()
        assert binary is not None
        b = self.base
        with (b / "stdout.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-f", "-c", str(b / "rspamd.conf"), "-u", self.user,
                 "-g", grp.getgrgid(pwd.getpwnam(self.user).pw_gid).gr_name,
                 f"--var=LOCAL_CONFDIR={b}", f"--var=DBDIR={b}/db", f"--var=RUNDIR={b}/run",
                 f"--var=LOGDIR={b}/log"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            wait_for_port(self.port, 120, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"rspamd did not start: {exc}\n{tail(b / 'log' / 'rspamd.log')}"
                               ) from exc
        return self

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None


# --- Haraka --------------------------------------------------------------------------------------
HARAKA_PLUGIN = """\
// Written by bench/compare.py: keep this private Haraka on loopback.
// Every DNS query goes to the bench's loopback server, and the reverse lookup of
// each client (Haraka core does one when no plugin answers lookup_rdns) is skipped.
const dns = require('node:dns')
exports.register = function () {
    dns.setServers(['%s'])
}
exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}
"""


def haraka_dir(explicit: str | None = None) -> Path | None:
    """The installed Haraka package (node_modules/Haraka), or None."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("HARAKA_DIR"):
        candidates.append(Path(os.environ["HARAKA_DIR"]))
    candidates.append(HARAKA_CACHE / "node_modules" / "Haraka")
    for path in candidates:
        if (path / "bin" / "haraka").exists():
            return path
    return None


def install_haraka() -> Path | None:
    """`npm install --prefix /var/tmp/relay-bench/haraka Haraka` (the npm registry only)."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    HARAKA_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--prefix", str(HARAKA_CACHE), "--no-audit", "--no-fund",
                    "Haraka"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    return haraka_dir()


class Haraka:
    """Haraka (reference stack, not ours): rcpt_to.in_host_list, clamd, queue/smtp_forward.

    smtp_forward relays each message to the sink while the client waits: Haraka
    answers 250 once the sink did, it keeps no queue of its own (and so fsyncs
    nothing). `nodes` worker processes (Haraka's cluster mode), one per core.
    """

    def __init__(self, base: Path, package: Path, sink_port: int, clamd: str | None,
                 dns: str, nodes: int) -> None:
        self.base = base
        self.package = package
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        node = shutil.which("node") or "node"
        base.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([node, str(package / "bin" / "haraka"), "-i", str(base)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        config = base / "config"
        (config / "smtp.ini").write_text(f"listen=127.0.0.1:{self.port}\nnodes={nodes}\n")
        (config / "log.ini").write_text("[main]\nlevel=warn\n")
        (config / "host_list").write_text(f"{DOMAIN}\n")
        (config / "smtp_forward.ini").write_text(f"host=127.0.0.1\nport={sink_port}\n")
        plugins = ["bench_loopback", "rcpt_to.in_host_list"]
        if clamd is not None:
            plugins.append("clamd")
            (config / "clamd.ini").write_text(f"clamd_socket={clamd}\ntimeout=30\n")
        plugins.append("queue/smtp_forward")
        (config / "plugins").write_text("\n".join(plugins) + "\n")
        (base / "plugins").mkdir(exist_ok=True)
        (base / "plugins" / "bench_loopback.js").write_text(HARAKA_PLUGIN % dns)
        self.logfile = base / "haraka.log"

    def start(self) -> Haraka:
        node = shutil.which("node") or "node"
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                [node, str(self.package / "bin" / "haraka"), "-c", str(self.base)],
                cwd=self.base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            wait_for_port(self.port, 60, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"Haraka did not start: {exc}\n{tail(self.logfile)}") from exc
        return self

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None


def missing_programs(names: Sequence[str]) -> list[str]:
    return [name for name in names if shutil.which(name) is None
            and not Path("/usr/sbin", name).exists()]

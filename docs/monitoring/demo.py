"""Make the picture in docs/monitoring.md: a real relay, real clamd, a real Prometheus
(Debian's) scraping it with the shipped alert rules loaded, a few minutes of bounded
traffic on loopback, then render.py draws the dashboard's panels.

    .venv/bin/python docs/monitoring/demo.py --seconds 300

Run from the repository root (it borrows the test fixtures for clamd and DNS). Every
loop is bounded by --seconds; everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from docs.monitoring.render import render  # noqa: E402
from tests.fixtures.clamd import EICAR, start_clamd  # noqa: E402
from tests.fixtures.dns import DnsServer  # noqa: E402
from tests.fixtures.relayproc import Relay, free_port, run_cli, wait_for  # noqa: E402
from tests.test_directory_smtp import DOMAIN, PASSWORD, seed, submission  # noqa: E402

GOOD = ("From: partner@company.test\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: demo {n}\r\n"
        "Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <demo{n}@company.test>\r\n\r\n"
        "{body}\r\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--output", type=Path, default=ROOT / "docs/monitoring/panels.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relay-demo-"))
    (work / "clamd-dir").mkdir()
    clamd = start_clamd(work / "clamd-dir")
    dns = DnsServer().start()
    metrics_port, prom_port = free_port(), free_port()
    (work / "relay").mkdir()
    relay = Relay(work / "relay", {
        "server": {"metrics_bind": f"127.0.0.1:{metrics_port}", "mail_log": "off"},
        "queue": {"min_backoff": "60s", "max_backoff": "10m", "scan_interval": "30s"},
        "directory": {"auth_max_failures": 3, "auth_lockout": 30, "auth_failure_delay": 0},
        "policies": {"headers": {}, "webmail": {"mx_check": True, "nameservers": [dns.address]},
                     "antivirus": {"clamd": clamd.tcp}}})
    seed(relay).close()
    relay.start()
    (work / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 2s, evaluation_interval: 10s}}
rule_files: ["{ROOT / 'docs/monitoring/prometheus-alerts.yml'}"]
scrape_configs:
  - job_name: relay
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"], labels: {{instance: mx1}}}}]
""")
    prometheus = subprocess.Popen(
        [shutil.which("prometheus") or "/usr/bin/prometheus",
         f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("wb"))
    try:
        wait_for(lambda: _up(prom_port), timeout=30)
        traffic(relay, args.seconds)
        time.sleep(6)  # two more scrapes
        render(f"http://127.0.0.1:{prom_port}", args.seconds / 60 + 0.5, args.output, step=4)
        print(f"wrote {args.output}")
    finally:
        prometheus.terminate()
        prometheus.wait(20)
        relay.stop()
        dns.stop()
        clamd.remove()
        shutil.rmtree(work, ignore_errors=True)


def _up(port: int) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200
    except OSError:
        return False


def traffic(relay: Relay, seconds: float) -> None:
    """A bounded mix: mostly good mail, some refused, a virus, a password-guessing burst,
    mail for outside that waits in the queue, and a checkpoint half-way."""
    rng = random.Random(14)
    end = time.monotonic() + seconds
    signed = False
    n = 0
    while time.monotonic() < end:
        n += 1
        roll = rng.random()
        try:
            with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
                if roll < 0.6:  # from many domains: the MX check asks DNS for each new one
                    client.sendmail(f"partner@d{rng.randint(1, 400)}.test",
                                    ["ubnd@dienbien.gov.vn"],
                                    GOOD.format(n=n, body="\r\n".join(
                                        ["x" * 76] * rng.randint(1, 300))))
                elif roll < 0.72:
                    client.sendmail("partner@company.test", ["ubnd@dienbien.gov.vn"],
                                    GOOD.format(n=n, body="").replace("Date:", "X-Date:"))
                elif roll < 0.8:
                    client.sendmail("partner@company.test", ["ubnd@dienbien.gov.vn"],
                                    GOOD.format(n=n, body=EICAR.decode()))
                elif roll < 0.9:
                    client.mail("someone@gmail.com")
                    client.rcpt(f"annv@{DOMAIN}")
                else:
                    client.mail("partner@company.test")
                    client.rcpt("elsewhere@example.com")
        except smtplib.SMTPException:
            pass
        if n % 40 == 0:  # a guessing burst: three failures lock the login
            for _ in range(4):
                try:
                    with submission(relay) as client:
                        client.login(f"annv@{DOMAIN}", "doan-mat-khau")
                except smtplib.SMTPException:
                    pass
        if n % 25 == 0:  # logged in, to outside: no relayhost, so it waits in the queue
            try:
                with submission(relay) as client:
                    client.login(f"binhtt@{DOMAIN}", PASSWORD)
                    client.sendmail(f"binhtt@{DOMAIN}", ["partner@example.org"],
                                    GOOD.format(n=n, body="queued").replace(
                                        "partner@company.test", f"binhtt@{DOMAIN}"))
            except smtplib.SMTPException:
                pass
        if not signed and time.monotonic() > end - seconds / 2:
            run_cli("archive", "keygen", "-c", str(relay.config_path))
            run_cli("archive", "checkpoint", "-c", str(relay.config_path))
            signed = True
        time.sleep(rng.uniform(0.05, 0.3))


if __name__ == "__main__":
    main()

"""Metrics that answer questions (issue 14, item 6), scraped from the real relay and
milter processes; and the same definitions in prometheus_client's multiprocess mode."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.dns import DnsServer
from tests.fixtures.relayproc import free_port, relay_env, to_toml, wait_for
from tests.test_directory_smtp import DOMAIN, PASSWORD, seed, submission

MSG = (b"From: partner@company.test\r\nTo: ubnd@dienbien.gov.vn\r\nSubject: metrics\r\n"
       b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <m1@company.test>\r\n\r\nhi\r\n")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


def test_the_endpoint_answers_the_operators_questions(relay_factory, clamd, dns_server):
    port = free_port()
    relay = relay_factory(
        start=False,
        server={"metrics_bind": f"127.0.0.1:{port}"},
        directory={"auth_max_failures": 2, "auth_lockout": 60, "auth_failure_delay": 0},
        policies={"headers": {},
                  "webmail": {"mx_check": True, "nameservers": [dns_server.address]},
                  "antivirus": {"clamd": clamd.tcp}})
    seed(relay).close()
    relay.start()
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=15) as client:
        client.sendmail("partner@company.test", ["ubnd@dienbien.gov.vn"], MSG)  # archived
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("partner@company.test", ["ubnd@dienbien.gov.vn"],
                            MSG.replace(b"Date:", b"X-Date:"))
    for _ in range(3):  # two failures lock the login, then it is refused as locked
        with submission(relay) as client, pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(f"annv@{DOMAIN}", "wrong-password")
    with submission(relay) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(f"annv@{DOMAIN}", PASSWORD)
    wait_for(lambda: relay.maildir("ubnd@dienbien.gov.vn"))

    # counts on the message path are written at most a second after they are taken
    # (relay.metrics.batched_*): the last of each kind is waited for
    s = wait_for(lambda: (got := scrape(port)) and value(
        got, "relay_archive_unsigned_entries") == 1 and value(
        got, "relay_policy_duration_seconds_count", policy="headers", stage="data") and value(
        got, "relay_transactions_total", listener="mx", action="reject") and value(
        got, "relay_delivery_duration_seconds_count", route="maildir", status="delivered")
        and got, timeout=20)
    count = "_count"
    assert value(s, "relay_transaction_duration_seconds" + count,
                 listener="mx", action="accept") == 1
    assert value(s, "relay_transaction_duration_seconds" + count,
                 listener="mx", action="reject") == 1
    assert value(s, "relay_transaction_duration_seconds_bucket",
                 listener="mx", action="accept", le="+Inf") == 1
    for policy, stage in (("webmail", "rcpt"), ("webmail", "data"), ("headers", "data"),
                          ("antivirus", "data")):
        got = value(s, "relay_policy_duration_seconds" + count, policy=policy, stage=stage)
        assert got and got >= 1, (policy, stage)
    assert value(s, "relay_clamd_scan_duration_seconds" + count, result="clean") == 2
    # one MX question for company.test, cached afterwards
    assert value(s, "relay_dns_lookup_duration_seconds" + count, type="MX",
                 outcome="other") == 1
    assert dns_server.queries
    assert value(s, "relay_delivery_duration_seconds" + count, route="maildir",
                 status="delivered") == 1
    # smtplib's login() tries PLAIN, then LOGIN: the first call makes both failures
    assert value(s, "relay_auth_failures_total", reason="wrong_password") == 2
    assert value(s, "relay_auth_failures_total", reason="locked_out") == 6
    assert value(s, "relay_auth_lockouts_total", scope="login") == 1
    assert value(s, "relay_queue_messages") == 0
    assert value(s, "relay_queue_oldest_message_age_seconds") == 0
    # no signing key yet: the archived message waits for its checkpoint
    assert value(s, "relay_archive_last_checkpoint_timestamp_seconds") == 0
    from relay.metrics import package_version

    assert value(s, "relay_build_info", version=package_version(),
                 python=".".join(map(str, sys.version_info[:3]))) == 1

    assert relay.cli("archive", "keygen").returncode == 0
    assert relay.cli("archive", "checkpoint").returncode == 0
    s = wait_for(lambda: (got := scrape(port)) and value(
        got, "relay_archive_unsigned_entries") == 0 and got, timeout=20)
    assert time.time() - 60 < value(s, "relay_archive_last_checkpoint_timestamp_seconds") \
        <= time.time()


def test_oldest_queued_message_age(relay_factory):
    port = free_port()
    relay = relay_factory(server={"metrics_bind": f"127.0.0.1:{port}"},
                          backend={"kind": "smtp", "host": "127.0.0.1", "port": free_port()})
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=15) as client:
        client.sendmail("partner@company.test", ["ubnd@dienbien.gov.vn"], MSG)
    time.sleep(2)
    s = wait_for(lambda: (got := scrape(port)) and value(got, "relay_queue_messages") == 1
                 and value(got, "relay_queue_oldest_message_age_seconds") >= 2 and got)
    assert 2 <= value(s, "relay_queue_oldest_message_age_seconds") < 60
    assert value(s, "relay_delivery_duration_seconds_count", route="smtp",
                 status="temporary") >= 1


def test_the_milter_exports_no_queue(tmp_path):
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(to_toml({"server": {"state_dir": "var"},
                               "milter": {"bind": f"127.0.0.1:{free_port()}",
                                          "metrics_bind": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen([sys.executable, "-m", "relay", "milter", "-c", str(config)],
                            env=relay_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        s = wait_for(lambda: _try_scrape(port), timeout=20)
        assert s, "the milter's metrics never answered"
        names = {name for name, _ in s}
        assert "relay_build_info" in names and "relay_connections" in names
        assert not {n for n in names if n.startswith("relay_queue")}, names
    finally:
        proc.terminate()
        proc.wait(10)


def _try_scrape(port: int) -> Any:
    try:
        return scrape(port)
    except OSError:
        return None


def test_definitions_work_in_multiprocess_mode(tmp_path):
    """What the lead's several front and worker processes will do: each process writes
    its values to PROMETHEUS_MULTIPROC_DIR, one collector adds them up."""
    env = {**relay_env(), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = textwrap.dedent("""
        import sys
        from relay import metrics
        metrics.TRANSACTION_SECONDS.labels("mx", "accept").observe(0.2)
        metrics.POLICY_SECONDS.labels("headers", "data").observe(0.001)
        metrics.AUTH_FAILURES.labels("wrong_password").inc()
        metrics.CONNECTIONS.inc()
        metrics.ARCHIVE_UNSIGNED.set(int(sys.argv[1]))
        if sys.argv[1] == "7":  # the queue runner's process
            metrics.queue_metrics().messages.set(3)
    """)
    for unsigned in ("5", "7"):
        subprocess.run([sys.executable, "-c", worker, unsigned], env=env, check=True,
                       timeout=60)
    collect = textwrap.dedent("""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
    """)
    out = subprocess.run([sys.executable, "-c", collect], env=env, check=True,
                         capture_output=True, timeout=60).stdout.decode()
    s = {(x.name, frozenset(x.labels.items())): x.value
         for family in text_string_to_metric_families(out) for x in family.samples}
    assert value(s, "relay_transaction_duration_seconds_count", listener="mx",
                 action="accept") == 2
    assert value(s, "relay_auth_failures_total", reason="wrong_password") == 2
    assert value(s, "relay_archive_unsigned_entries") == 7  # max over processes
    assert value(s, "relay_build_info", version=__import__("relay.metrics").metrics
                 .package_version(), python=".".join(map(str, sys.version_info[:3]))) == 1
    # live* gauges of exited processes are dropped by mark_process_dead, not by reading
    assert os.listdir(tmp_path)


async def test_batched_observations_land_in_the_buckets_observe_would_choose():
    """The engine's policy timers add up in process and write once a second: the child
    then holds what Histogram.observe would have written, bucket by bucket."""
    import asyncio

    from prometheus_client import CollectorRegistry, Histogram

    from relay.metrics import FAST_BUCKETS, BatchedHistogram

    registry = CollectorRegistry()
    direct = Histogram("direct", "d", buckets=FAST_BUCKETS, registry=registry)
    batched_child = Histogram("batched", "b", buckets=FAST_BUCKETS, registry=registry)
    batched = BatchedHistogram(batched_child)
    samples = [0.0, 0.0005, 0.00051, 0.001, 0.003, 0.2, 9.9, 10.0, 42.0] * 3

    def buckets(name: str) -> list[tuple[str, float]]:
        return [(s.labels["le"], s.value) for m in registry.collect() if m.name == name
                for s in m.samples if s.name.endswith("_bucket")]

    for seconds in samples:
        direct.observe(seconds)
        batched.observe(seconds)
    assert registry.get_sample_value("batched_count") == 0  # not written yet
    await asyncio.sleep(1.2)
    assert buckets("batched") == buckets("direct")
    assert registry.get_sample_value("batched_sum") == pytest.approx(sum(samples))
    batched.observe(0.002)  # a new batch after the flush
    await asyncio.sleep(1.2)
    assert registry.get_sample_value("batched_count") == len(samples) + 1


def test_batched_counts_are_written_on_every_loop_and_once():
    """A batched child is shared by everything that counts with the same labels; a flush
    that was due on a loop that ended must not stop the counts of the next loop."""
    import asyncio

    from prometheus_client import CollectorRegistry, Counter, Gauge

    from relay.metrics import FLUSH_EVERY, batched_counter

    registry = CollectorRegistry()
    counter = Counter("c", "c", ["kind"], registry=registry)
    gauge = Gauge("g", "g", registry=registry)

    async def count(n: int, wait: bool) -> None:
        for _ in range(n):
            batched_counter(counter, "a").inc()
            batched_counter(gauge).inc()
        batched_counter(gauge).dec()
        if wait:
            await asyncio.sleep(FLUSH_EVERY + 0.2)

    asyncio.run(count(3, wait=False))  # ends before its flush is due
    assert registry.get_sample_value("c_total", {"kind": "a"}) == 0  # not written yet
    asyncio.run(count(2, wait=True))
    assert registry.get_sample_value("c_total", {"kind": "a"}) == 5
    assert registry.get_sample_value("g") == 3

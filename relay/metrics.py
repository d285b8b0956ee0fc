"""Prometheus metrics, served on `server.metrics_bind` (`milter.metrics_bind`) when set.

Counted where the fact is recorded anyway: transactions and findings where the
decision log is written, deliveries where the queue runner records a result.
The daemons run in several processes (front processes, inspection workers); each
counts into files in PROMETHEUS_MULTIPROC_DIR (set by `relay.launch`) and the
endpoint sums them, so one scrape sees the whole relay.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    multiprocess,
    start_http_server,
)
from prometheus_client.registry import Collector

TRANSACTIONS = Counter("relay_transactions", "SMTP transactions by outcome",
                       ["listener", "action"])
FINDINGS = Counter("relay_findings", "Policy findings by code and configured action",
                   ["policy", "code", "action"])
CONNECTIONS = Gauge("relay_connections", "SMTP sessions open now", multiprocess_mode="livesum")
REFUSED_CONNECTIONS = Counter("relay_connections_refused",
                              "Sessions refused (connection limits)")
DELIVERIES = Counter("relay_deliveries", "Delivery attempts per recipient by result",
                     ["status"])
QUEUE = Gauge("relay_queue_messages", "Messages in the queue (active and deferred)",
              multiprocess_mode="livemax")
INSPECTION_WORKERS = Gauge("relay_inspection_workers", "Inspection worker processes running",
                           multiprocess_mode="livesum")
RATE_LIMITED = Counter("relay_rate_limited",
                       "Messages refused by the rate_limit policy, by scope (login, ip)",
                       ["scope"])
DNS_FAILURES = Counter("relay_dns_failures",
                       "DNS lookups of the policies that got no usable answer (temperror)")
INSPECTION_KILLS = Counter("relay_inspection_failures",
                           "Messages whose inspection worker was killed or died, by reason",
                           ["reason"])
FRONT_RESTARTS = Counter("relay_front_restarts", "Front processes restarted after they died")
PETITIONS_OPENED = Counter("relay_petitions_opened", "Petition cases opened (Điều 8)")
PETITION_ERRORS = Counter("relay_petitions_errors",
                          "Accepted messages the petitions step could not file (see the log)")


def serve(bind: tuple[str, int], collectors: Sequence[Collector] = ()) -> None:
    """The endpoint: every process's counts when the daemon runs as several processes.

    `collectors` are asked at each scrape, in this process (values read from the
    database, such as the petitions' open and overdue counts)."""
    host, port = bind
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr=host, registry=registry)


def process_gone(pid: int) -> None:
    """A process of the relay exited: its live gauges no longer count."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)


def remove_files() -> None:
    """At exit of the process that made the directory (relay.launch)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.environ.get("RELAY_METRICS_DIR_OWNER") == str(os.getpid()):
        shutil.rmtree(path, ignore_errors=True)

"""Prometheus metrics, served on `server.metrics_bind` (`milter.metrics_bind`) when set.

Counted where the fact is recorded anyway: transactions, findings and their duration
where the decision log is written; each policy's time where the engine calls it; clamd
scans, DNS look-ups, AUTH failures and deliveries where they happen. docs/monitoring.md
says what each one answers; the dashboard and alert rules in docs/monitoring/ are built
on them.

The daemons run in several processes (front processes, inspection workers); each
counts into files in PROMETHEUS_MULTIPROC_DIR (set by `relay.launch`) and the endpoint
sums them, so one scrape sees the whole relay: counters and histograms add up as they
are; every gauge says how its processes' values combine (`multiprocess_mode`); gauges
only the queue runner knows are created by the queue runner alone (`queue_metrics()`),
so a milter process never exports a queue. Nothing here uses `Gauge.set_function`,
which multiprocess mode cannot collect.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.registry import Collector

# seconds; SMTP transactions include slow clients, policies are mostly sub-millisecond
TRANSACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                10)
NETWORK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- transactions (written with the decision log) -------------------------------------
TRANSACTIONS = Counter("relay_transactions", "SMTP transactions by outcome",
                       ["listener", "action"])
TRANSACTION_SECONDS = Histogram(
    "relay_transaction_duration_seconds",
    "From MAIL FROM to the decision (the decision-log line), by listener and outcome",
    ["listener", "action"], buckets=TRANSACTION_BUCKETS)
FINDINGS = Counter("relay_findings", "Policy findings by code and configured action",
                   ["policy", "code", "action"])
POLICY_SECONDS = Histogram("relay_policy_duration_seconds",
                           "Time one policy took at one stage", ["policy", "stage"],
                           buckets=FAST_BUCKETS)

# --- sessions --------------------------------------------------------------------------
CONNECTIONS = Gauge("relay_connections", "SMTP (or milter) sessions open now",
                    multiprocess_mode="livesum")
REFUSED_CONNECTIONS = Counter("relay_connections_refused",
                              "Sessions refused (connection limits)")
AUTH_FAILURES = Counter("relay_auth_failures",
                        "SMTP AUTH refusals by reason (wrong_password, unknown_login, "
                        "mailbox_suspended, locked_out, ...)", ["reason"])
AUTH_LOCKOUTS = Counter("relay_auth_lockouts",
                        "Lock-outs started (Điều 7.4 throttling), per login or client IP",
                        ["scope"])

# --- what the policies wait for --------------------------------------------------------
CLAMD_SECONDS = Histogram("relay_clamd_scan_duration_seconds",
                          "clamd INSTREAM scans by result (clean, infected, error)",
                          ["result"], buckets=NETWORK_BUCKETS)
DNS_SECONDS = Histogram("relay_dns_lookup_duration_seconds",
                        "DNS look-ups by record type and outcome", ["type", "outcome"],
                        buckets=NETWORK_BUCKETS)

# --- delivery --------------------------------------------------------------------------
DELIVERIES = Counter("relay_deliveries", "Delivery attempts per recipient by result",
                     ["status"])
DELIVERY_SECONDS = Histogram(
    "relay_delivery_duration_seconds",
    "One delivery attempt (all its recipients) by route (maildir, smtp, lmtp, relayhost) "
    "and result (delivered, temporary, permanent: the worst of its recipients)",
    ["route", "status"], buckets=NETWORK_BUCKETS)

# --- the processes ------------------------------------------------------------------------
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

# --- the archive (Điều 8) ----------------------------------------------------------------
ARCHIVE_UNSIGNED = Gauge("relay_archive_unsigned_entries",
                         "Archive entries newer than the last signed checkpoint",
                         multiprocess_mode="max")
ARCHIVE_CHECKPOINT = Gauge("relay_archive_last_checkpoint_timestamp_seconds",
                           "When the last checkpoint was signed (Unix time; 0: never). "
                           "Its age is time() - this.", multiprocess_mode="max")

BUILD_INFO = Gauge("relay_build_info", "The relay's version and Python, always 1",
                   ["version", "python"], multiprocess_mode="max")


def package_version() -> str:
    try:
        return version("dienbien-relay")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


BUILD_INFO.labels(package_version(), platform.python_version()).set(1)


@dataclass(frozen=True)
class QueueMetrics:
    messages: Gauge
    oldest_age: Gauge


@cache
def queue_metrics() -> QueueMetrics:
    """The queue's gauges, created by the queue runner only (see the module doc)."""
    return QueueMetrics(
        Gauge("relay_queue_messages", "Messages in the queue (active and deferred)",
              multiprocess_mode="livemax"),
        Gauge("relay_queue_oldest_message_age_seconds",
              "Age of the oldest message waiting in the queue (held ones excepted); "
              "0 when the queue is empty", multiprocess_mode="livemax"))


FLUSH_EVERY = 1.0  # seconds a batched count may wait before it is written


class _Batched:
    """Counts added up in this process and written to a metric child at most once a
    second (FLUSH_EVERY). In multiprocess mode each write is a lock, a getpid() and an
    mmap store, and `.labels()` a lock and a look-up: 4.5 us for a timed block
    (measured), and per message the fronts and the queue runner counted a dozen times,
    about 60 us in all. What is not yet written when a process is killed is lost (at
    most a second's)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # where a flush is due

    def _due(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): written now
            self.flush()
            return
        # the children are shared (batched_counter): a flush due on a loop that has
        # ended since (a test's, a CLI command's) would never come
        if self._loop is not loop:
            self._loop = loop
            loop.call_later(FLUSH_EVERY, self.flush)

    def flush(self) -> None:
        raise NotImplementedError


class BatchedCounter(_Batched):
    """A counter's (or a gauge's) inc() and dec(), batched."""

    def __init__(self, child: Counter | Gauge) -> None:
        super().__init__()
        self.child = child
        self._delta = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._delta += amount
        self._due()

    def dec(self, amount: float = 1.0) -> None:  # a gauge's
        self.inc(-amount)

    def flush(self) -> None:
        delta, self._delta = self._delta, 0.0
        self._loop = None
        if delta:
            self.child.inc(delta)


class BatchedHistogram(_Batched):
    """A histogram's observe(), batched. It writes the child's `_buckets` and `_sum`, as
    `Histogram.observe` does (prometheus_client has kept them since 0.4)."""

    def __init__(self, child: Histogram) -> None:
        super().__init__()
        self.child = child
        self._bounds = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1  # Histogram's bucket
        self._sum += seconds
        self._due()

    def flush(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        self._loop = None
        for bucket, count in zip(self.child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self.child._sum.inc(total)


@cache
def batched_counter(metric: Counter | Gauge, *labels: str) -> BatchedCounter:
    """The batched child of METRIC with these label values (made once)."""
    return BatchedCounter(metric.labels(*labels) if labels else metric)


@cache
def batched_histogram(metric: Histogram, *labels: str) -> BatchedHistogram:
    return BatchedHistogram(metric.labels(*labels) if labels else metric)


def worst(statuses: list[str]) -> str:
    """The label of an attempt with several recipients: its worst result."""
    for status in ("permanent", "temporary"):
        if status in statuses:
            return status
    return "delivered"


def age_of_id(queue_id: str, now: float | None = None) -> float | None:
    """Seconds since a queue id was made (`relay.model.new_id` begins with the time in
    milliseconds, in 11 hex digits); None for an id of another shape."""
    try:
        made = int(queue_id[:11], 16) / 1000
    except ValueError:
        return None
    return max(0.0, (now or time.time()) - made)


def serve(bind: tuple[str, int], collectors: Sequence[Collector] = ()) -> None:
    """/metrics on BIND; with PROMETHEUS_MULTIPROC_DIR, what every process wrote there.

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

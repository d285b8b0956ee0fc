"""Prometheus metrics, served on `server.metrics_bind` when it is set.

Counted where the fact is recorded anyway: transactions and findings where the
decision log is written, deliveries where the queue runner records a result.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

TRANSACTIONS = Counter("relay_transactions", "SMTP transactions by outcome",
                       ["listener", "action"])
FINDINGS = Counter("relay_findings", "Policy findings by code and configured action",
                   ["policy", "code", "action"])
CONNECTIONS = Gauge("relay_connections", "SMTP sessions open now")
REFUSED_CONNECTIONS = Counter("relay_connections_refused", "Sessions refused at the cap")
DELIVERIES = Counter("relay_deliveries", "Delivery attempts per recipient by result",
                     ["status"])
QUEUE = Gauge("relay_queue_messages", "Messages in the queue (active and deferred)")


def serve(bind: tuple[str, int]) -> None:
    host, port = bind
    start_http_server(port, addr=host)
INSPECTION_WORKERS = Gauge("relay_inspection_workers", "Inspection worker processes running")
INSPECTION_KILLS = Counter("relay_inspection_failures",
                           "Messages whose inspection worker was killed or died, by reason",
                           ["reason"])

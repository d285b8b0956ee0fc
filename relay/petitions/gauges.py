"""`relay_petitions_open` and `relay_petitions_overdue` per intake mailbox, at each scrape.

Counted in the database (every node's cases), by the process that serves /metrics,
at most every `MIN_INTERVAL` seconds however often Prometheus asks; a database that
cannot be read leaves the gauges out of that scrape (and logs why) rather than
failing the endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from relay.config import Config
from relay.petitions.store import PetitionStore

log = logging.getLogger("relay.petitions")
MIN_INTERVAL = 30.0


class PetitionGauges(Collector):
    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: PetitionStore | None = None
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] | None = None
        self._at = float("-inf")

    def _read(self) -> dict[str, tuple[int, int]] | None:
        with self._lock:
            if time.monotonic() - self._at < MIN_INTERVAL:
                return self._counts
            try:
                if self._store is None:
                    self._store = PetitionStore.open(self.config, migrate=False)
                self._counts = self._store.counts()
            except Exception as exc:
                log.warning("petitions: metrics not read: %s", exc)
                self._counts = None
            self._at = time.monotonic()
            return self._counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._read()
        if counts is None:
            return
        waiting = GaugeMetricFamily("relay_petitions_open",
                                    "Petition cases waiting for an answer (overdue included)",
                                    labels=["mailbox"])
        overdue = GaugeMetricFamily("relay_petitions_overdue",
                                    "Petition cases past their deadline without an answer",
                                    labels=["mailbox"])
        for mailbox, (n_open, n_overdue) in sorted(counts.items()):
            waiting.add_metric([mailbox], n_open)
            overdue.add_metric([mailbox], n_overdue)
        yield waiting
        yield overdue

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def collectors(config: Config) -> list[Collector]:
    """What `relay.metrics.serve` should also ask, for this configuration."""
    return [PetitionGauges(config)] if config.petitions.enabled else []

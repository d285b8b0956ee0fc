"""Measured, not guessed: the cost of a cached directory look-up and of a database one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relay.directory import Directory, DirectoryStore
from tests.test_directory import DOMAIN, make_config, seed


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_lookup_cost(tmp_path: Path, request: pytest.FixtureRequest, backend: str):
    url = "" if backend == "sqlite" else request.getfixturevalue("pg_url")
    d = Directory(make_config(tmp_path, url, poll_interval=2))
    seed(d)
    store = DirectoryStore(d.config, d)
    address = f"stttt@{DOMAIN}"  # an official mailbox: owner and delegates resolved too
    assert (await store.mailbox(address)).kind == "official"
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        await store.mailbox(address)
    hit_us = (time.perf_counter() - start) / n * 1e6
    m = 200
    start = time.perf_counter()
    for _ in range(m):
        store._cache.clear()  # force a database read (thread offload included)
        await store.mailbox(address)
    miss_us = (time.perf_counter() - start) / m * 1e6
    print(f"\n{backend}: cached look-up {hit_us:.1f} µs, uncached {miss_us:.0f} µs")
    assert hit_us < 200  # two orders of magnitude below a database read
    assert hit_us * 10 < miss_us
    await store.aclose()

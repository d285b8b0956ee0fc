"""Measure the content policies (not a test): clamd INSTREAM latency and the engine cost
per message of webmail, attachments and antivirus, against a private EICAR-only clamd.

    PYTHONPATH=. /tmp/venv/bin/python tests/measure_content.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from relay.clamd import ClamdClient
from relay.config import from_dict
from relay.model import Transaction
from relay.runtime import Runtime
from tests.content_helpers import make_message
from tests.fixtures.clamd import start_clamd


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1000:.2f} ms, "
            f"p95 {xs[int(len(xs) * 0.95)] * 1000:.2f} ms, n={len(xs)}")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        await measure(Path(tmp))


async def measure(tmp: Path) -> None:
    clamd = start_clamd(tmp)
    try:
        m100 = make_message(attachments=[("data.bin", os.urandom(75 * 1024),
                                          "application/octet-stream")])
        m10 = make_message(body="Xin chào.\n" * 100,
                           attachments=[("bao-cao.pdf", b"%PDF-1.4\n" + os.urandom(6000),
                                         "application/pdf")])
        print(f"messages: {len(m100)} and {len(m10)} bytes")
        for label, address in (("tcp", clamd.tcp), ("unix", clamd.unix)):
            client = ClamdClient(address)
            for _ in range(10):
                await client.instream(m100)
            for size, raw in (("100KB", m100), ("10KB", m10)):
                xs = []
                for _ in range(200):
                    t = time.perf_counter()
                    result = await client.instream(raw)
                    xs.append(time.perf_counter() - t)
                    assert result.status == "clean", result
                print(f"INSTREAM {size} over {label}: {stats(xs)}")
        client = ClamdClient(clamd.tcp)
        t = time.perf_counter()
        await asyncio.gather(*(client.instream(m100) for _ in range(400)))
        print(f"400 x 100KB concurrent over tcp: {400 / (time.perf_counter() - t):.0f} msgs/s")
        for policies in ({}, {"webmail": {}}, {"attachments": {}},
                         {"antivirus": {"clamd": clamd.unix}},
                         {"webmail": {}, "attachments": {}, "antivirus": {"clamd": clamd.unix}}):
            runtime = await Runtime.build(from_dict({"policies": policies}), archive=False,
                                          inline=True)
            engine = runtime.engine
            xs = []
            for _ in range(300):
                tx = Transaction()
                t = time.perf_counter()
                await engine.mail(tx, "a@example.org")
                await engine.rcpt(tx, "b@dienbien.gov.vn")
                verdict = await engine.data(tx, m10)
                xs.append(time.perf_counter() - t)
                assert verdict.outcome == "accept"
            await runtime.aclose()
            print(f"engine, 10KB message, policies={list(policies) or 'none'}: {stats(xs[20:])}")
    finally:
        clamd.remove()


if __name__ == "__main__":
    asyncio.run(main())

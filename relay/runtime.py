"""One loaded configuration and everything built from it, swapped whole on reload.

A `Runtime` is what a session needs from the configuration: the config, the
policy set, the stores (`Services`), the policy engine and the inspector that
runs the DATA stage. The daemons build one at start and a new one on SIGHUP;
each client connection holds the runtime it started under until it ends (so a
transaction never runs MAIL under one configuration and DATA under another), and
a replaced runtime is closed once the last connection holding it is gone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from relay.config import Config
from relay.engine import Engine
from relay.inspection.inline import Inline, Inspector
from relay.policyset import PolicySet, configure
from relay.services import Services

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Runtime:
    config: Config
    policies: PolicySet
    services: Services
    engine: Engine
    inspector: Inspector
    _holders: int = field(default=0, init=False)
    _retired: bool = field(default=False, init=False)
    _closed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    @classmethod
    async def build(cls, config: Config, policies: PolicySet | None = None, *,
                    archive: bool = True, inline: bool = False) -> Runtime:
        """Everything a configuration needs. `archive=False, inline=True` for dry runs
        (test-message): no archive, no trace, the DATA stage in this process."""
        policies = policies if policies is not None else configure(config)
        services = Services.build(config, archive=archive)
        engine = Engine(config, policies, services)
        try:
            inspector: Inspector = Inline(engine) if inline else await _pool(config)
        except BaseException:
            await engine.close()
            await services.aclose()
            raise
        return cls(config, policies, services, engine, inspector)

    # --- who uses it ------------------------------------------------------------------
    def hold(self) -> Runtime:
        self._holders += 1
        return self

    def release(self) -> None:
        self._holders -= 1
        if self._retired and self._holders == 0:
            asyncio.get_running_loop().create_task(self.aclose())

    def retire(self) -> None:
        """Replaced by a reload: close once no connection holds it any more."""
        self._retired = True
        if self._holders == 0:
            asyncio.get_running_loop().create_task(self.aclose())

    async def aclose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for closer in (self.inspector.aclose, self.engine.close, self.services.aclose):
            try:
                await closer()
            except Exception:
                log.exception("closing the runtime: %s failed", closer.__qualname__)

    async def closed(self) -> None:
        await self._closed.wait()


async def _pool(config: Config) -> Inspector:
    from relay.inspection.pool import WorkerPool  # the fork server only where it is used

    pool = WorkerPool(config)
    await pool.start()
    return pool

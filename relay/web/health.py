"""The admin's health page: queue, last checkpoint, database, clamd, on one screen.

Each check is bounded (a few seconds) and reports its failure as data: the page is
for the moment something is wrong, so nothing here may raise or hang.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from relay import spool
from relay.archive import Archive
from relay.archive.browse import head, last_checkpoint
from relay.config import Config
from relay.web.schema import now

CHECK_TIMEOUT = 3.0


@dataclass
class Health:
    node: str
    queue_waiting: int | None = None
    queue_held: int | None = None
    queue_error: str | None = None
    checkpoint_seq: int | None = None
    checkpoint_at: datetime | None = None
    checkpoint_age: float | None = None
    checkpoint_interval: float = 0.0
    archive_head: int | None = None
    database_ok: bool = False
    database_ms: float | None = None
    database_error: str | None = None
    clamd_address: str | None = None  # None: the antivirus policy is not configured
    clamd_ok: bool | None = None

    @property
    def checkpoint_late(self) -> bool:
        """Older than twice the interval while the archive has entries: not signing."""
        return bool(self.archive_head) and (
            self.checkpoint_age is None or self.checkpoint_age > 2 * self.checkpoint_interval)

    @property
    def ok(self) -> bool:
        return self.database_ok and self.queue_error is None and self.clamd_ok is not False \
            and not self.checkpoint_late


def _queue(config: Config, health: Health) -> None:
    try:
        health.queue_waiting, health.queue_held = spool.count(config.spool_path)
    except OSError as exc:
        health.queue_error = f"{config.spool_path}: {exc.strerror or exc}"


def _database(archive: Archive, health: Health) -> None:
    started = time.perf_counter()
    try:
        with archive.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        health.database_ok = True
        health.database_ms = (time.perf_counter() - started) * 1000
        health.archive_head = head(archive)
        cp = last_checkpoint(archive)
    except sa.exc.SQLAlchemyError as exc:
        health.database_error = str(exc.__cause__ or exc).splitlines()[0][:300]
        return
    if cp is not None:
        health.checkpoint_seq = int(cp["seq"])
        health.checkpoint_at = cp["signed_at"]
        health.checkpoint_age = (now() - cp["signed_at"]).total_seconds()


def clamd_address(config: Config) -> str | None:
    """Where clamd is, when the antivirus policy is enabled."""
    options = config.policies.get("antivirus")
    if options is None:
        return None
    from policies.antivirus import Options

    try:
        return Options.model_validate(options).clamd
    except ValueError:
        return str(options.get("clamd", "?"))


async def check(config: Config, archive: Archive) -> Health:
    health = Health(node=config.server.hostname,
                    checkpoint_interval=config.archive.checkpoint_interval)
    _queue(config, health)
    try:
        await asyncio.wait_for(asyncio.to_thread(_database, archive, health), CHECK_TIMEOUT * 2)
    except TimeoutError:
        health.database_error = f"no answer within {CHECK_TIMEOUT * 2:g} s"
    health.clamd_address = clamd_address(config)
    if health.clamd_address is not None:
        from relay.clamd import ClamdClient

        try:
            health.clamd_ok = await ClamdClient(health.clamd_address,
                                                timeout=CHECK_TIMEOUT).ping()
        except ValueError:
            health.clamd_ok = False
    return health

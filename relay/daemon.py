"""What both daemons (`relay serve`, `relay milter`) need from systemd and journald.

sd_notify(3) without a dependency, stderr lines with `<N>` priority prefixes, a
watchdog ping from the event loop (so a stuck loop is restarted), and the reload
step: RELOADING=1, load and build, READY=1; a refused file changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay import maillog, metrics
from relay.config import Config, ConfigError, load
from relay.files import DAEMON_UMASK
from relay.policyset import PolicySet, configure
from relay.runtime import Runtime
from relay.transaction import Hub

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger("relay")

# syslog levels for journald's <N> prefixes (sd-daemon(3))
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str, tag: str = "") -> None:
    """`tag` names the process (front1, front2...) when a daemon runs as several."""
    handler = logging.StreamHandler(sys.stderr)
    where = f"[{tag}]" if tag else ""
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s{where}: %(message)s"))
    else:  # journald or a pipe: let the priority prefix carry the level
        handler.setFormatter(JournalFormatter(f"%(name)s{where}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # no format here (nor the mail log's) shows the caller, thread or process: not
    # looking them up makes each record cheaper, and the mail log writes several per
    # message (the logging HOWTO's "Optimization")
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    # noise on every start or login that no one can act on: Alembic saying which
    # dialect it found, aiosmtpd's deprecation of the attribute it sets itself on AUTH,
    # and its warning about AUTH without STARTTLS, given to our implicit-TLS listener
    logging.getLogger("alembic.runtime.migration").addFilter(
        _Drop("Context impl", "Will assume"))
    logging.getLogger("mail.log").addFilter(_Drop("Session.login_data is deprecated"))
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")


class _Drop(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def sd_notify(state: str) -> None:
    """The sd_notify(3) datagram; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)



class ListenError(OSError):
    """An address a daemon must listen on is taken or refused; str() names the key,
    the address and the reason in one line (`relay` exits 69, EX_UNAVAILABLE)."""

    def __init__(self, key: str, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address} ({key}): {reason}")


@contextmanager
def listening(addresses: dict[str, tuple[str, int] | str]) -> Iterator[None]:
    """Binding the addresses of these config keys: an OSError becomes a ListenError
    naming the one that failed (asyncio's message says which, `... bind on address
    ('127.0.0.1', 2525): address already in use`, and so does relay.supervisor's,
    `cannot listen on 127.0.0.1:2525 (mx): Address already in use`)."""
    try:
        yield
    except OSError as exc:
        text = str(exc)
        failed = [(key, a) for key, a in addresses.items()
                  if (isinstance(a, tuple) and repr(a) in text) or f"{_address(a)} " in text
                  ] or list(addresses.items())
        key = ", ".join(k for k, _ in failed)
        where = ", ".join(_address(a) for _, a in failed)
        reason = (exc.strerror or text).rpartition(": ")[2] or text
        raise ListenError(key, where, reason) from exc


def _address(address: tuple[str, int] | str) -> str:
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Daemon:
    """What `relay serve` and `relay milter` share: stop on SIGTERM/SIGINT, reload on
    SIGHUP, ping the watchdog, and keep background tasks referenced until they end.

    `self.hub.runtime` is the configuration in force; a reload builds a new runtime
    and swaps it in: connections already open keep theirs until they end."""

    hub: Hub

    def __init__(self, config: Config, policies: PolicySet, config_path: Path | None) -> None:
        # files created without an explicit mode stay out of other users' reach (files.py)
        os.umask(DAEMON_UMASK)
        self.config = config
        self.policies = policies
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        maillog.setup(config.server)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stop_on_signals(self) -> None:
        """SIGTERM and SIGINT, from the first moment: one that comes while the front
        processes start stops them too (the default action killed this process alone)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_on_signals()
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self.reload()))
        # logrotate's postrotate (no copytruncate): write to a new decision-log file
        loop.add_signal_handler(signal.SIGUSR2, self.reopen_logs)
        self.spawn(watchdog())
        self.spawn(self.refresh_gauges())

    def reopen_logs(self) -> None:
        """SIGUSR2, and SIGHUP before it reloads: reopen the decision log by its name,
        here or, when front processes write it, in each of them."""
        supervisor = getattr(self, "supervisor", None)
        if supervisor is not None:
            supervisor.reopen_logs()
            return
        hub = getattr(self, "hub", None)
        if hub is not None and hub.decisions is not None:
            hub.decisions.reopen()

    async def refresh_gauges(self, every: float = 5.0) -> None:
        """Gauges read from stores while the daemon runs: the archive's signing backlog
        (its own small connection pool, also where front processes do the archiving)."""
        from relay.db import make_engine

        engine = None
        try:
            while True:
                if self.config.archive.enabled:
                    try:
                        engine = engine or make_engine(self.config.directory_url)
                        await asyncio.to_thread(refresh_archive_gauges, engine)
                    except Exception as exc:  # no archive yet, or the database is away
                        log.debug("archive gauges not refreshed: %s", exc)
                await asyncio.sleep(every)
        finally:
            if engine is not None:
                engine.dispose()

    async def reload(self) -> None:
        """SIGHUP: RELOADING=1, load and build, READY=1; a refused file changes nothing."""
        self.reopen_logs()
        sd_notify("RELOADING=1\nMONOTONIC_USEC="
                  f"{int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)}")
        try:
            config = load(self.config_path)
            policies = configure(config)
            self.note_restart_needed(self.config, config)
            await self.apply(config, policies)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        except Exception:
            log.exception("reload failed, keeping the running configuration")
            return
        finally:
            sd_notify("READY=1")
        self.config, self.policies = config, policies
        maillog.setup(config.server)
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")

    async def apply(self, config: Config, policies: PolicySet) -> None:
        """Serve new connections under a new configuration (one process: a new runtime)."""
        self.hub.swap(await Runtime.build(config, policies))

    def note_restart_needed(self, old: Config, new: Config) -> None:
        """Log the changes a reload cannot apply (listening addresses)."""


def refresh_archive_gauges(engine: Engine) -> None:
    """relay_archive_unsigned_entries and ..._last_checkpoint_timestamp_seconds from the
    archive's database: two indexed MAX() queries."""
    import sqlalchemy as sa

    from relay.archive import schema

    with engine.connect() as conn:
        head = conn.execute(sa.select(sa.func.max(schema.entry.c.seq))).scalar() or 0
        c = schema.checkpoint
        signed, at = conn.execute(sa.select(sa.func.max(c.c.seq),
                                            sa.func.max(c.c.signed_at))).one()
    metrics.ARCHIVE_UNSIGNED.set(max(0, head - (signed or 0)))
    if at is not None and at.tzinfo is None:  # stored as naive UTC
        at = at.replace(tzinfo=UTC)
    metrics.ARCHIVE_CHECKPOINT.set(at.timestamp() if at is not None else 0)


async def watchdog() -> None:
    """Ping WATCHDOG=1 at half of WatchdogSec= while the event loop runs; no-op without it."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(int(usec) / 2_000_000)

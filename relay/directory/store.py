"""The directory as the relay's hot path sees it: cached look-ups and SMTP AUTH.

Cache invalidation across nodes: every write transaction bumps the single row
`directory_state.version` (see `admin.py`). Each node asks for that number at
most every `poll_interval` (2 s by default) and drops its whole cache when it
moved; every entry also expires after `cache_ttl`, so even with the database
unreachable no answer is older than `cache_ttl`. A counter rather than
PostgreSQL LISTEN/NOTIFY because it works the same on SQLite (the CLI and the
relay are separate processes there too), needs no dedicated long-lived
connection per node, and cannot miss a notification across a reconnect; its
cost is one primary-key read per node every couple of seconds. The counter is
an UPDATE of one row, so it becomes visible in commit order (a sequence or
max(id) could be read before an earlier transaction commits).

Database calls run in a worker thread: the event loop never blocks on SQL or
on argon2.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased, joinedload

from relay.config import Config
from relay.directory import lockout, naming, passwords
from relay.directory.admin import LIVE, Directory, personal_address
from relay.directory.lockout import IP, LOGIN, SWEEP_EVERY
from relay.directory.schema import Delegation, Kind, Mailbox, State, Status, utcnow
from relay.metrics import AUTH_FAILURES, AUTH_LOCKOUTS

log = logging.getLogger("relay.directory")
auth_log = logging.getLogger("relay.auth")

MAX_DELAY = 5.0


@dataclass(frozen=True)
class MailboxInfo:
    """One live mailbox (active or suspended) as policies see it."""

    address: str
    kind: str  # personal | official | citizen_intake
    status: str  # active | suspended
    agency: str
    owner: str | None  # the owner's personal address (itself for a personal mailbox)
    owner_person: str | None  # the owner's full name
    delegates: frozenset[str]  # personal addresses currently delegated (Điều 8)

    @property
    def active(self) -> bool:
        return self.status == Status.ACTIVE.value

    def may_be_used_by(self, login: str) -> bool:
        """Điều 7.3, 8: one's own address, or an official mailbox one holds or is delegated."""
        login = login.lower()
        if login == self.address:
            return True
        if self.kind == Kind.PERSONAL.value:
            return False
        return login == self.owner or login in self.delegates


def load_info(session: Session, address: str) -> tuple[MailboxInfo | None, datetime | None]:
    """The mailbox and the next instant a delegation starts or ends (the entry's expiry).

    One query for a personal mailbox, three for an official one."""
    box = session.scalars(
        sa.select(Mailbox).options(joinedload(Mailbox.agency), joinedload(Mailbox.owner))
        .where(Mailbox.address == address, Mailbox.status.in_(LIVE))).first()
    if box is None:
        return None, None
    now = utcnow()
    delegates: set[str] = set()
    boundary: datetime | None = None
    if box.kind != Kind.PERSONAL.value:
        personal = aliased(Mailbox)
        rows = session.execute(
            sa.select(Delegation.valid_from, Delegation.valid_until, personal.address)
            .outerjoin(personal, sa.and_(personal.owner_id == Delegation.person_id,
                                         personal.kind == Kind.PERSONAL.value,
                                         personal.status.in_(LIVE)))
            .where(Delegation.mailbox_id == box.id,
                   sa.or_(Delegation.valid_until.is_(None), Delegation.valid_until > now)))
        for valid_from, valid_until, delegate in rows:
            for edge in (valid_from, valid_until):
                if edge is not None and edge > now and (boundary is None or edge < boundary):
                    boundary = edge
            if valid_from <= now and delegate is not None:
                delegates.add(delegate)
    owner = box.address if box.kind == Kind.PERSONAL.value else personal_address(
        session, box.owner_id)
    info = MailboxInfo(address=box.address, kind=box.kind, status=box.status,
                       agency=box.agency.code, owner=owner,
                       owner_person=box.owner.full_name if box.owner else None,
                       delegates=frozenset(delegates))
    return info, boundary


class DirectoryStore:
    """`mailbox()` and `authenticate()` for policies and the SMTP front."""

    def __init__(self, config: Config, directory: Directory | None = None) -> None:
        self.config = config
        self.directory = directory or Directory(config)
        self.ttl = config.directory.cache_ttl
        self.poll_interval = min(config.directory.poll_interval, self.ttl)
        # least recently used first; bounded, since every unknown address makes an entry
        self._cache: OrderedDict[str, tuple[MailboxInfo | None, float]] = OrderedDict()
        self.cache_size = config.directory.cache_size
        self._version: int | None = None
        self._checked = float("-inf")  # monotonic time of the last version check
        self._lock = asyncio.Lock()
        d = config.directory
        self._login_limits = lockout.Limits(d.auth_max_failures, d.auth_window, d.auth_lockout)
        self._ip_limits = lockout.Limits(d.auth_ip_max_failures, d.auth_window, d.auth_lockout)
        self._swept = 0.0
        self.hits = self.misses = 0

    # --- look-ups ----------------------------------------------------------------
    async def mailbox(self, address: str) -> MailboxInfo | None:
        """The live mailbox at ADDRESS, or None; at most `cache_ttl` old (usually far less).

        Raises when the database is unreachable and the cached answer has expired:
        the policy engine turns that into a temporary failure, never an accept."""
        address = address.strip().lower()
        now = time.monotonic()
        if now - self._checked >= self.poll_interval:
            await self._check_version()
        entry = self._cache.get(address)
        if entry is not None and now < entry[1]:
            self.hits += 1
            self._cache.move_to_end(address)
            return entry[0]
        self.misses += 1
        info, boundary = await asyncio.to_thread(self._load, address)
        expires = time.monotonic() + self.ttl
        if boundary is not None:
            expires = min(expires, time.monotonic() + (boundary - utcnow()).total_seconds())
        self._cache[address] = (info, expires)
        self._cache.move_to_end(address)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return info

    async def kind(self, address: str) -> str:
        """personal | official | citizen_intake: the directory's word, else the name's."""
        info = await self.mailbox(address)
        return info.kind if info is not None else naming.kind_of(address)

    def _load(self, address: str) -> tuple[MailboxInfo | None, datetime | None]:
        with Session(self.directory.db) as session:
            return load_info(session, address)

    def _read_version(self) -> int:
        with self.directory.db.connect() as conn:
            return int(conn.execute(sa.select(State.version).where(State.id == 1)).scalar_one())

    async def _check_version(self) -> None:
        async with self._lock:
            if time.monotonic() - self._checked < self.poll_interval:
                return  # another task checked while we waited
            try:
                version = await asyncio.to_thread(self._read_version)
            except Exception as exc:  # entries still expire after cache_ttl
                log.warning("directory: cannot read the change counter: %s", exc)
                self._checked = time.monotonic()
                return
            if version != self._version:
                if self._version is not None:
                    log.info("directory changed (version %s -> %s): cache dropped",
                             self._version, version)
                self._cache.clear()
                self._version = version
            self._checked = time.monotonic()

    def invalidate(self) -> None:
        """Forget everything now (after a write in this process)."""
        self._cache.clear()
        self._checked = float("-inf")

    # --- SMTP AUTH (Điều 5.1, 7.4) -----------------------------------------------
    async def authenticate(self, login: str, password: str, client_ip: str) -> bool:
        """True when LOGIN/PASSWORD opens an active mailbox. Never logs the password.

        Attempts are counted per login and per client network in the database before
        the password is checked (`lockout.py`): past the limit the login or network is
        locked out for `auth_lockout`, on every node, across reloads and restarts, and
        even the right password is refused. Failures also get a growing delay."""
        login = self.normalise_login(login)
        network = lockout.network_key(client_ip)
        ok, reason, failures, locked = await asyncio.to_thread(
            self._attempt, login, network, password)
        if reason == "locked out":
            auth_log.warning("auth refused (locked out): login=%r ip=%s", login, client_ip)
            AUTH_FAILURES.labels("locked_out").inc()
            return False
        if ok:
            auth_log.info("auth ok: login=%r ip=%s", login, client_ip)
            return True
        AUTH_FAILURES.labels(reason.replace(" ", "_")).inc()  # a few fixed reasons
        for scope in (LOGIN, IP):
            if scope in locked:
                AUTH_LOCKOUTS.labels(scope).inc()
        auth_log.warning("auth failed (%s): login=%r ip=%s%s%s", reason, login, client_ip,
                         "; login locked out" if LOGIN in locked else "",
                         "; client IP locked out" if IP in locked else "")
        delay = min(MAX_DELAY, self.config.directory.auth_failure_delay * failures)
        if delay > 0:
            await asyncio.sleep(delay)
        return False

    def _attempt(self, login: str, network: str, password: str
                 ) -> tuple[bool, str, int, set[str]]:
        """(ok, reason, the login's failures, the scopes this attempt locked); in a thread."""
        db = self.directory.db
        now = time.time()
        if now - self._swept >= SWEEP_EVERY:
            self._swept = now
            with db.begin() as conn:
                lockout.sweep(conn, self.config.directory.auth_window, now)
        with db.begin() as conn:  # each reservation is one atomic statement
            by_ip = lockout.reserve(conn, IP, network, self._ip_limits, now)
        if not by_ip.allowed:
            return False, "locked out", by_ip.failures, set()
        with db.begin() as conn:
            by_login = lockout.reserve(conn, LOGIN, login, self._login_limits, now)
            if not by_login.allowed:
                # no password was tried: a mail client retrying a locked login must not
                # lock out its whole office network as well
                lockout.release(conn, by_ip)
        if not by_login.allowed:
            return False, "locked out", by_login.failures, set()
        ok, reason = self._verify(login, password)
        now = time.time()
        locked: set[str] = set()
        with db.begin() as conn:
            if ok:
                lockout.succeed(conn, by_login, now)
                lockout.succeed(conn, by_ip, now)
            else:
                if lockout.fail(conn, by_login, self._login_limits, now):
                    locked.add(LOGIN)
                if lockout.fail(conn, by_ip, self._ip_limits, now):
                    locked.add(IP)
        return ok, reason, by_login.failures, locked

    async def locked_out(self, login: str, client_ip: str) -> bool:
        keys = [(LOGIN, self.normalise_login(login)), (IP, lockout.network_key(client_ip))]

        def query() -> bool:
            with self.directory.db.connect() as conn:
                return lockout.locked(conn, keys)

        return await asyncio.to_thread(query)

    def normalise_login(self, login: str) -> str:
        return lockout.login_key(login, self.config.server.local_domains)

    def _verify(self, login: str, password: str) -> tuple[bool, str]:
        with Session(self.directory.db) as session, session.begin():
            box = session.scalars(sa.select(Mailbox).where(Mailbox.address == login,
                                                           Mailbox.status.in_(LIVE))).first()
            stored = box.password_hash if box is not None else None
            good = passwords.verify(stored, password)  # constant work even when unknown
            if box is None:
                return False, "unknown login"
            if not good:
                return False, "wrong password"
            if box.status != Status.ACTIVE.value:
                return False, f"mailbox {box.status}"
            if stored is not None and (new := passwords.rehash_if_needed(stored, password)):
                box.password_hash = new
            return True, "ok"

    # --- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        """Connect and migrate now (at startup) rather than on the first look-up."""
        await asyncio.to_thread(lambda: self.directory.db)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.directory.close)

"""SMTP AUTH lockout (Điều 7.4), kept in the directory database.

Why the database: the counters were per process, so a SIGHUP reload forgot every
lockout and each relay node (and each front process) counted on its own. Why a
reservation: the lockout check and the failure count were separate steps around a
100 ms argon2 verification, so 24 parallel wrong-password connections all passed
the check before any failure was counted (23 failures, then the right password
worked: issue 10, item 3).

So an attempt is counted *before* the password is verified, in one atomic
statement (`INSERT … ON CONFLICT DO UPDATE … RETURNING`, on SQLite and
PostgreSQL alike): `failures` holds the failed and the in-flight attempts of the
current window. An attempt whose reservation goes over the limit, or that finds
the key locked, is refused without looking at the password. A wrong password that
leaves the count at the limit locks the key for `auth_lockout`; a right password
clears the login's count and gives its reservation back to the client network.

Keys: the login (lowercased, with the first local domain when given without one)
and the client network: an IPv4 address, or the /64 of an IPv6 one (one host
owns a whole /64 and can pick any address in it). The window is fixed, starting
at the first failure; it restarts when it is over or when a lockout ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from relay.anvil import client_key
from relay.directory.schema import AuthThrottle

T = AuthThrottle.__table__
LOGIN, IP = "login", "ip"
SWEEP_EVERY = 60.0  # seconds between deletions of finished windows, per process
MAX_SUBJECT = 254


def login_key(login: str, local_domains: list[str]) -> str:
    """How a login is counted: lowercased, with the first local domain when it has none;
    controls (a NUL from AUTH LOGIN) become U+FFFD so every database can store it."""
    login = login.strip().lower()
    if "@" not in login and local_domains:
        login = f"{login}@{local_domains[0]}"
    login = "".join(ch if ch.isprintable() else "\ufffd" for ch in login)
    return login[:MAX_SUBJECT]


def network_key(client_ip: str) -> str:
    """The client's address, or its /64 for IPv6 (`relay.anvil.client_key`), bounded."""
    return client_key(client_ip)[:MAX_SUBJECT]


@dataclass(frozen=True)
class Reservation:
    scope: str
    subject: str
    allowed: bool  # False: over the limit or locked; the password is not to be checked
    failures: int  # including this attempt
    locked: bool


@dataclass(frozen=True)
class Limits:
    max_failures: int
    window: float
    lockout: float


def reserve(conn: Connection, scope: str, subject: str, limits: Limits,
            now: float | None = None) -> Reservation:
    """Count one attempt for (scope, subject), atomically; see the module docstring."""
    now = time.time() if now is None else now
    locked_now = sa.func.coalesce(T.c.locked_until, 0.0) > now
    # a new window once the old one is over, or once a lockout has ended
    fresh = sa.and_(sa.not_(locked_now),
                    sa.or_(T.c.window_start <= now - limits.window,
                           T.c.locked_until.is_not(None)))
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(T)
    statement = insert.values(scope=scope, subject=subject, failures=1, window_start=now,
                              locked_until=None, last_attempt=now).on_conflict_do_update(
        index_elements=[T.c.scope, T.c.subject],
        set_={
            "failures": sa.case((fresh, 1), else_=T.c.failures + 1),
            "window_start": sa.case((fresh, now), else_=T.c.window_start),
            "locked_until": sa.case((fresh, sa.null()), else_=T.c.locked_until),
            "last_attempt": now,
        },
    ).returning(T.c.failures, T.c.locked_until)
    failures, locked_until = conn.execute(statement).one()
    locked = locked_until is not None and locked_until > now
    return Reservation(scope, subject, not locked and failures <= limits.max_failures,
                       failures, locked)


def fail(conn: Connection, r: Reservation, limits: Limits, now: float | None = None) -> bool:
    """A wrong password: lock the key when its count reached the limit. True when this
    call locked it (to say so once in the log)."""
    now = time.time() if now is None else now
    result = conn.execute(
        sa.update(T).where(T.c.scope == r.scope, T.c.subject == r.subject,
                           T.c.failures >= limits.max_failures,
                           sa.func.coalesce(T.c.locked_until, 0.0) <= now)
        .values(locked_until=now + limits.lockout))
    return result.rowcount > 0


def succeed(conn: Connection, r: Reservation, now: float | None = None) -> None:
    """A right password: the login starts afresh (unless parallel failures locked it
    meanwhile); the network gets its attempt back."""
    now = time.time() if now is None else now
    where = (T.c.scope == r.scope, T.c.subject == r.subject)
    if r.scope == LOGIN:
        conn.execute(sa.delete(T).where(*where,
                                        sa.func.coalesce(T.c.locked_until, 0.0) <= now))
    else:
        release(conn, r)


def release(conn: Connection, r: Reservation) -> None:
    """Give a reservation back: the attempt was not a failure."""
    conn.execute(sa.update(T).where(T.c.scope == r.scope, T.c.subject == r.subject,
                                    T.c.failures > 0).values(failures=T.c.failures - 1))


def sweep(conn: Connection, window: float, now: float | None = None) -> int:
    """Forget finished windows and ended lockouts, so guessed logins do not pile up."""
    now = time.time() if now is None else now
    return conn.execute(sa.delete(T).where(
        T.c.window_start <= now - window,
        sa.func.coalesce(T.c.locked_until, 0.0) <= now)).rowcount


def locked(conn: Connection, keys: list[tuple[str, str]], now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return any(conn.execute(sa.select(T.c.locked_until).where(
        T.c.scope == scope, T.c.subject == subject, T.c.locked_until > now)).first()
        for scope, subject in keys)


def entries(engine: Engine, locked_only: bool = False, now: float | None = None
            ) -> list[dict[str, Any]]:
    """What `relay directory lockout list` shows."""
    now = time.time() if now is None else now
    query = sa.select(T).order_by(T.c.scope, T.c.subject)
    if locked_only:
        query = query.where(T.c.locked_until > now)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{"scope": r["scope"], "subject": r["subject"], "failures": r["failures"],
             "locked": r["locked_until"] is not None and r["locked_until"] > now,
             "locked_until": r["locked_until"], "window_start": r["window_start"],
             "last_attempt": r["last_attempt"]} for r in rows]


def clear(engine: Engine, keys: list[tuple[str, str]] | None) -> int:
    """Delete the given (scope, subject) keys, or every key when None."""
    with engine.begin() as conn:
        if keys is None:
            return conn.execute(sa.delete(T)).rowcount
        return sum(conn.execute(sa.delete(T).where(T.c.scope == scope, T.c.subject == subject)
                                ).rowcount for scope, subject in keys)

"""Web accounts: their own table, not mailbox logins (an auditor needs no mailbox).

argon2id hashes through `relay.directory.passwords` (the hashes SMTP AUTH uses), a
lockout after `max_failures` failed logins in a row, kept in the database so that
every node serving the console counts the same failures.
"""

from __future__ import annotations

import re
import secrets as pysecrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from relay.directory import passwords
from relay.web import schema
from relay.web.schema import now


class Role(StrEnum):
    AUDITOR = "auditor"  # the archive: search, read, download, integrity, access log
    PETITIONS = "petitions"  # the petitions of assigned mailboxes; never archive entries
    ADMIN = "admin"  # everything, plus web users and the relay's health


# what each role may do; a page names the permission it needs, never a role
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.AUDITOR: frozenset({"archive"}),
    Role.PETITIONS: frozenset({"petitions"}),
    Role.ADMIN: frozenset({"archive", "petitions", "admin"}),
}

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
_MAILBOX = re.compile(r"[a-z0-9._+-]+@[a-z0-9.-]+\.[a-z]{2,63}")


class AccountError(Exception):
    """The request cannot be done; str() is for the person at the terminal."""


@dataclass(frozen=True)
class WebUser:
    username: str
    role: Role
    enabled: bool
    failed_count: int
    locked_until: datetime | None
    last_login_at: datetime | None
    session_epoch: int
    mailboxes: tuple[str, ...] = ()

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    def locked(self, at: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (at or now())


def check_username(name: str) -> str:
    if not USERNAME.fullmatch(name):
        raise AccountError("a user name is 2–64 characters: a-z, 0-9, '.', '_', '-' "
                           "(starting with a letter or digit)")
    return name


def check_mailbox(address: str) -> str:
    address = address.strip().lower()
    if not _MAILBOX.fullmatch(address) or len(address) > 320:
        raise AccountError(f"not a mailbox address: {address[:80]!r}")
    return address


def _hash(password: str) -> str:
    try:
        return passwords.hash_password(password)
    except ValueError as exc:
        raise AccountError(str(exc)) from None


class Accounts:
    def __init__(self, db: Engine) -> None:
        self.db = db

    # --- administration (the CLI, and the admin pages) -------------------------------
    def add(self, username: str, role: str, password: str,
            mailboxes: Iterable[str] = ()) -> WebUser:
        check_username(username)
        try:
            role = Role(role)
        except ValueError:
            raise AccountError(f"role must be one of {', '.join(Role)}") from None
        boxes = sorted({check_mailbox(m) for m in mailboxes})
        hashed = _hash(password)
        at = now()
        with self.db.begin() as conn:
            if conn.execute(sa.select(schema.user.c.username)
                            .where(schema.user.c.username == username)).first():
                raise AccountError(f"user {username} exists")
            conn.execute(schema.user.insert().values(
                username=username, role=role.value, password_hash=hashed, enabled=True,
                created_at=at, password_changed_at=at, failed_count=0, session_epoch=0))
            if boxes:
                conn.execute(schema.user_mailbox.insert(),
                             [{"username": username, "mailbox": m} for m in boxes])
        user = self.get(username)
        assert user is not None
        return user

    def get(self, username: str) -> WebUser | None:
        u = schema.user
        with self.db.connect() as conn:
            row = conn.execute(sa.select(u).where(u.c.username == username)).mappings().first()
            if row is None:
                return None
            boxes = conn.execute(sa.select(schema.user_mailbox.c.mailbox)
                                 .where(schema.user_mailbox.c.username == username)
                                 .order_by(schema.user_mailbox.c.mailbox)).scalars().all()
        return _user(row, boxes)

    def users(self) -> list[WebUser]:
        u, m = schema.user, schema.user_mailbox
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(u).order_by(u.c.username)).mappings().all()
            boxes: dict[str, list[str]] = {}
            for name, box in conn.execute(sa.select(m.c.username, m.c.mailbox)
                                          .order_by(m.c.mailbox)):
                boxes.setdefault(name, []).append(box)
        return [_user(r, boxes.get(r["username"], [])) for r in rows]

    def _update(self, username: str, **values: object) -> None:
        u = schema.user
        with self.db.begin() as conn:
            done = conn.execute(sa.update(u).where(u.c.username == username).values(**values))
        if not done.rowcount:
            raise AccountError(f"no user {username}")

    def set_enabled(self, username: str, enabled: bool) -> None:
        """Disabling also ends the user's open sessions."""
        self._update(username, enabled=enabled,
                     session_epoch=schema.user.c.session_epoch + (0 if enabled else 1))

    def set_password(self, username: str, password: str) -> None:
        """A new password ends every open session and lifts a lockout."""
        self._update(username, password_hash=_hash(password), password_changed_at=now(),
                     failed_count=0, locked_until=None,
                     session_epoch=schema.user.c.session_epoch + 1)

    def unlock(self, username: str) -> None:
        self._update(username, failed_count=0, locked_until=None)

    def end_sessions(self, username: str) -> None:
        """Logout: every cookie this user holds, on any device, stops working."""
        self._update(username, session_epoch=schema.user.c.session_epoch + 1)

    def assign(self, username: str, mailboxes: Iterable[str]) -> None:
        """The mailboxes whose petitions this user sees (replaces the list)."""
        boxes = sorted({check_mailbox(m) for m in mailboxes})
        m = schema.user_mailbox
        with self.db.begin() as conn:
            if not conn.execute(sa.select(schema.user.c.username)
                                .where(schema.user.c.username == username)).first():
                raise AccountError(f"no user {username}")
            conn.execute(m.delete().where(m.c.username == username))
            if boxes:
                conn.execute(m.insert(), [{"username": username, "mailbox": b} for b in boxes])

    # --- login ------------------------------------------------------------------------
    def authenticate(self, username: str, password: str, max_failures: int,
                     lockout: float) -> WebUser | None:
        """The user when the password is right and the account is enabled and not locked.

        Always does the full argon2 work (also for unknown names and locked accounts),
        so the answer's timing does not tell which of these it was. A failure counts
        towards the lockout; `max_failures` in a row lock the account for `lockout`.
        """
        u = schema.user
        user = self.get(username) if USERNAME.fullmatch(username) else None
        with self.db.connect() as conn:
            stored = None if user is None else conn.execute(
                sa.select(u.c.password_hash).where(u.c.username == username)).scalar()
        good = passwords.verify(stored, password)
        if user is None:
            return None
        at = now()
        if user.locked(at) or not user.enabled:
            return None
        if not good:
            with self.db.begin() as conn:
                count = conn.execute(sa.update(u).where(u.c.username == username)
                                     .values(failed_count=u.c.failed_count + 1)
                                     .returning(u.c.failed_count)).scalar() or 0
                if count >= max_failures:
                    conn.execute(sa.update(u).where(u.c.username == username).values(
                        failed_count=0, locked_until=at + timedelta(seconds=lockout)))
            return None
        values: dict[str, object] = {"failed_count": 0, "locked_until": None,
                                     "last_login_at": at}
        if stored and (new := passwords.rehash_if_needed(stored, password)):
            values["password_hash"] = new
        self._update(username, **values)
        return self.get(username)

    # --- the key that signs session cookies ------------------------------------------------
    def secret(self, name: str = "session") -> str:
        """Made once and kept in the database: every node serving the console signs and
        checks cookies with the same key, so a session works behind any of them."""
        s = schema.secret
        with self.db.connect() as conn:
            value = conn.execute(sa.select(s.c.value).where(s.c.name == name)).scalar()
        if value:
            return value
        try:
            with self.db.begin() as conn:
                conn.execute(s.insert().values(name=name, value=pysecrets.token_hex(32),
                                               created_at=now()))
        except sa.exc.IntegrityError:
            pass  # another node made it first: use theirs
        with self.db.connect() as conn:
            return conn.execute(sa.select(s.c.value).where(s.c.name == name)).scalar_one()


def _user(row: sa.RowMapping, mailboxes: Iterable[str]) -> WebUser:
    return WebUser(username=row["username"], role=Role(row["role"]), enabled=bool(row["enabled"]),
                   failed_count=int(row["failed_count"]), locked_until=row["locked_until"],
                   last_login_at=row["last_login_at"], session_epoch=int(row["session_epoch"]),
                   mailboxes=tuple(mailboxes))

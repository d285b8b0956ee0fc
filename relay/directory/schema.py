"""The directory (danh bạ điện tử, Điều 4): agencies, people, mailboxes, delegations.

Every table is prefixed `directory_` because the archive keeps its own tables
in the same database. `directory_changes` is append-only (triggers in the
migration refuse UPDATE and DELETE); `directory_state.version` is bumped by
every write transaction so that each relay node notices a change with one
cheap query (see `store.py`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Kind(enum.StrEnum):
    PERSONAL = "personal"
    OFFICIAL = "official"
    CITIZEN_INTAKE = "citizen_intake"


class Status(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REMOVED = "removed"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Agency(Base):
    __tablename__ = "directory_agencies"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(400))
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directory_agencies.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default="active")  # active | closed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[Agency | None] = relationship(remote_side=[id])

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name,
                "parent": self.parent.code if self.parent else None, "status": self.status}


class Person(Base):
    __tablename__ = "directory_people"

    id: Mapped[int] = mapped_column(primary_key=True)
    hr_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    full_name: Mapped[str] = mapped_column(sa.String(400))  # Unicode NFC
    title: Mapped[str] = mapped_column(sa.String(400), default="")
    agency_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directory_agencies.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default="active")  # active | left
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    agency: Mapped[Agency | None] = relationship()

    def as_dict(self) -> dict[str, Any]:
        return {"hr_id": self.hr_id, "full_name": self.full_name, "title": self.title,
                "agency": self.agency.code if self.agency else None, "status": self.status}


class Mailbox(Base):
    __tablename__ = "directory_mailboxes"
    __table_args__ = (
        # one live mailbox per address; removed ones stay for the record (and the archive)
        sa.Index("directory_mailboxes_live_address", "address", unique=True,
                 sqlite_where=sa.text("status != 'removed'"),
                 postgresql_where=sa.text("status != 'removed'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(254), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("directory_agencies.id"))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directory_people.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default=Status.ACTIVE.value)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column()

    agency: Mapped[Agency] = relationship()
    owner: Mapped[Person | None] = relationship()

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "kind": self.kind, "status": self.status,
                "agency": self.agency.code, "owner_hr_id": self.owner.hr_id if self.owner else None,
                "owner_name": self.owner.full_name if self.owner else None,
                "has_password": self.password_hash is not None,
                "created_at": self.created_at, "removed_at": self.removed_at}


class Delegation(Base):
    """Điều 8: the head lets a person use the official (or citizen-intake) mailbox."""

    __tablename__ = "directory_delegations"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(sa.ForeignKey("directory_mailboxes.id"), index=True)
    person_id: Mapped[int] = mapped_column(sa.ForeignKey("directory_people.id"), index=True)
    granted_by: Mapped[str] = mapped_column(sa.String(200))
    basis: Mapped[str] = mapped_column(sa.String(400))
    valid_from: Mapped[datetime] = mapped_column(default=utcnow)
    valid_until: Mapped[datetime | None] = mapped_column()

    mailbox: Mapped[Mailbox] = relationship()
    person: Mapped[Person] = relationship()

    def active_at(self, when: datetime) -> bool:
        return self.valid_from <= when and (self.valid_until is None or when < self.valid_until)


class AddressRelease(Base):
    """An address given up by a removal or a rename: quarantined before reissue (Điều 4, 6)."""

    __tablename__ = "directory_address_releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(254), index=True)
    mailbox_id: Mapped[int] = mapped_column(sa.ForeignKey("directory_mailboxes.id"))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("directory_people.id"))
    released_at: Mapped[datetime] = mapped_column(default=utcnow)


class Change(Base):
    """Append-only change log: who, when, what before and after, and the legal basis."""

    __tablename__ = "directory_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(64))
    entity: Mapped[str] = mapped_column(sa.String(32))
    key: Mapped[str] = mapped_column(sa.String(254), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    basis: Mapped[str] = mapped_column(sa.String(400))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action,
                "entity": self.entity, "key": self.key, "before": self.before,
                "after": self.after, "basis": self.basis}


class State(Base):
    """One row; `version` grows with every committed write (cache invalidation)."""

    __tablename__ = "directory_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class RateCounter(Base):
    """Messages per login or client IP in one fixed window (`relay.ratelimit`), shared by
    every relay node; `refused` counts the attempts the limit turned away."""

    __tablename__ = "directory_rate_counters"

    scope: Mapped[str] = mapped_column(sa.String(16), primary_key=True)  # login | ip
    key: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
    window_start: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)  # Unix seconds
    window: Mapped[int] = mapped_column(sa.Integer)  # its length in seconds
    count: Mapped[int] = mapped_column(sa.Integer, default=0)
    refused: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuthThrottle(Base):
    """SMTP AUTH attempts per login and per client network (Điều 7.4), in the database so
    that every node, every front process and every reload sees the same count (see
    `lockout.py`). Times are Unix seconds: the nodes compare them with their own clock."""

    __tablename__ = "directory_auth_throttle"
    __table_args__ = (sa.Index("directory_auth_throttle_window", "window_start"),)

    scope: Mapped[str] = mapped_column(sa.String(8), primary_key=True)  # login | ip
    subject: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
    failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    window_start: Mapped[float] = mapped_column(sa.Float)
    locked_until: Mapped[float | None] = mapped_column(sa.Float)
    last_attempt: Mapped[float] = mapped_column(sa.Float)

"""Writing the directory: every change checked against Điều 4 and logged with its legal basis.

`Directory.write(actor, basis)` opens one transaction and yields a `Writer`;
the admin CLI makes one change per transaction, `directory_sync` a whole plan.
Each change appends to `directory_changes` (who, when, before, after, basis),
and the transaction bumps `directory_state.version` so every relay node drops
its cache (see `store.py`).
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relay.config import Config
from relay.directory import naming, passwords
from relay.directory.database import open_engine
from relay.directory.naming import NamingError
from relay.directory.schema import (
    AddressRelease,
    Agency,
    Change,
    Delegation,
    Kind,
    Mailbox,
    Person,
    State,
    Status,
    utcnow,
)

LIVE = (Status.ACTIVE.value, Status.SUSPENDED.value)


class DirectoryError(Exception):
    """A change the directory refuses; str() is what the administrator sees."""


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Directory:
    """The directory database of one configuration (opened and migrated on first use)."""

    def __init__(self, config: Config, db: Engine | None = None) -> None:
        self.config = config
        self._db = db
        self._opening = threading.Lock()

    @property
    def db(self) -> Engine:
        if self._db is None:
            with self._opening:  # first look-ups may arrive together from several threads
                if self._db is None:
                    self._db = open_engine(self.config.directory_url)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.db, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self, actor: str, basis: str) -> Iterator[Writer]:
        """One transaction: all changes made through the writer, or none."""
        try:
            with Session(self.db, expire_on_commit=False) as session, session.begin():
                writer = Writer(session, self.config, actor, basis)
                yield writer
                if writer.changes:
                    session.execute(sa.update(State).where(State.id == 1)
                                    .values(version=State.version + 1))
        except NamingError as exc:
            raise DirectoryError(str(exc)) from None
        except IntegrityError as exc:
            raise DirectoryError(f"conflicting change (someone else wrote first?): "
                                 f"{exc.orig}") from None

    # --- reading ---------------------------------------------------------------
    def version(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(sa.select(State.version).where(State.id == 1)).scalar_one())

    def agencies(self) -> list[dict[str, Any]]:
        with self.read() as s:
            return [a.as_dict() for a in s.scalars(sa.select(Agency).order_by(Agency.code))]

    def mailboxes(self, agency: str | None = None, kind: str | None = None,
                  status: str | None = None) -> list[dict[str, Any]]:
        with self.read() as s:
            q = sa.select(Mailbox).join(Agency).order_by(Mailbox.address, Mailbox.id)
            if agency:
                q = q.where(Agency.code == agency.lower())
            if kind:
                q = q.where(Mailbox.kind == kind)
            q = q.where(Mailbox.status == status) if status else q.where(
                Mailbox.status.in_(LIVE))
            return [m.as_dict() for m in s.scalars(q)]

    def mailbox(self, address: str) -> dict[str, Any] | None:
        with self.read() as s:
            box = s.scalars(sa.select(Mailbox).where(Mailbox.address == address.lower())
                            .order_by(Mailbox.status.in_(LIVE).desc(), Mailbox.id.desc())
                            ).first()
            if box is None:
                return None
            out = box.as_dict()
            now = utcnow()
            dels = s.scalars(sa.select(Delegation).where(Delegation.mailbox_id == box.id)
                             .order_by(Delegation.id))
            out["delegations"] = [
                {"person": d.person.full_name, "hr_id": d.person.hr_id,
                 "address": personal_address(s, d.person_id), "granted_by": d.granted_by,
                 "basis": d.basis, "valid_from": d.valid_from, "valid_until": d.valid_until,
                 "active": d.active_at(now)} for d in dels]
            return out

    def log(self, key: str | None = None, actor: str | None = None,
            since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.read() as s:
            q = sa.select(Change).order_by(Change.id.desc()).limit(limit)
            if key:
                q = q.where(Change.key == key.lower())
            if actor:
                q = q.where(Change.actor == actor)
            if since:
                q = q.where(Change.at >= since)
            return [c.as_dict() for c in reversed(list(s.scalars(q)))]

    def suggest_address(self, full_name: str, agency: str | None = None,
                        pattern: str | None = None) -> str:
        with self.read() as s:
            return suggest(s, self.config, full_name, agency, pattern)


def personal_address(session: Session, person_id: int | None) -> str | None:
    if person_id is None:
        return None
    return session.scalars(
        sa.select(Mailbox.address).where(Mailbox.owner_id == person_id,
                                         Mailbox.kind == Kind.PERSONAL.value,
                                         Mailbox.status.in_(LIVE))
    ).first()


def suggest(session: Session, config: Config, full_name: str, agency: str | None = None,
            pattern: str | None = None, exclude: frozenset[str] | set[str] = frozenset(),
            ) -> str:
    """A free personal address for the name, numbered when the plain one is taken
    (or in EXCLUDE: addresses a sync plan has already promised)."""
    domain = config.server.local_domains[0]
    base = naming.render_pattern(pattern or config.directory.address_pattern, full_name,
                                 agency or "")
    checker = Writer(session, config, "suggest", "-")
    for n in range(1, 100):
        local = base if n == 1 else f"{base}{n}"
        if f"{local}@{domain}" in exclude:
            continue
        try:
            checker.check_address(f"{local}@{domain}", Kind.PERSONAL.value, None, None)
        except (NamingError, DirectoryError):
            continue
        return f"{local}@{domain}"
    raise DirectoryError(f"no free address for {full_name!r} with pattern {base!r}")


class Writer:
    """Changes inside one transaction; each one checked and logged."""

    def __init__(self, session: Session, config: Config, actor: str, basis: str) -> None:
        self.s = session
        self.config = config
        self.actor = actor
        self.basis = basis
        self.changes: list[Change] = []

    # --- helpers ---------------------------------------------------------------
    def _log(self, action: str, entity: str, key: str, before: dict[str, Any] | None,
             after: dict[str, Any] | None, basis: str | None = None) -> None:
        basis = (basis or self.basis or "").strip()
        if not basis:
            raise DirectoryError("a legal basis is required: --basis \"QĐ số …/… ngày …\" "
                                 "(Điều 5.3, 6)")
        change = Change(actor=self.actor, action=action, entity=entity, key=key,
                        before=_jsonable(before), after=_jsonable(after), basis=basis)
        self.s.add(change)
        self.changes.append(change)

    def agency(self, code: str) -> Agency:
        agency = self.s.scalars(sa.select(Agency).where(Agency.code == code.lower())).first()
        if agency is None:
            raise DirectoryError(f"no agency {code!r}")
        return agency

    def live_mailbox(self, address: str) -> Mailbox:
        box = self.s.scalars(sa.select(Mailbox).where(Mailbox.address == address.lower(),
                                                      Mailbox.status.in_(LIVE))).first()
        if box is None:
            raise DirectoryError(f"no mailbox {address!r}")
        return box

    def person(self, ref: str) -> Person:
        """A person by the address of their personal mailbox or by HR id."""
        if "@" in ref:
            box = self.live_mailbox(ref)
            if box.kind != Kind.PERSONAL.value or box.owner is None:
                raise DirectoryError(f"{ref} is not a personal mailbox")
            return box.owner
        person = self.s.scalars(sa.select(Person).where(Person.hr_id == ref)).first()
        if person is None:
            raise DirectoryError(f"no person with HR id {ref!r}")
        return person

    def person_by_hr_id(self, hr_id: str) -> Person | None:
        return self.s.scalars(sa.select(Person).where(Person.hr_id == hr_id)).first()

    def check_address(self, address: str, kind: str, agency: Agency | None,
                      owner: Person | None, mailbox_id: int | None = None) -> str:
        """Điều 4 on one address: shape, reservation, uniqueness, quarantine."""
        local, domain = naming.split_address(address, self.config.server.local_domains)
        codes = set(self.s.scalars(sa.select(Agency.code)))
        if kind in (Kind.OFFICIAL.value, Kind.CITIZEN_INTAKE.value) and agency is None:
            raise DirectoryError(f"an {kind} mailbox needs an agency")
        naming.check_kind(local, kind, agency.code if agency else "", codes,
                          self.config.directory.reserved)
        address = f"{local}@{domain}"
        taken = self.s.scalars(sa.select(Mailbox).where(
            Mailbox.address == address, Mailbox.status.in_(LIVE),
            Mailbox.id != (mailbox_id or -1))).first()
        if taken is not None:
            raise DirectoryError(f"{address} is already in use (Điều 4: one unique name)")
        if kind == Kind.PERSONAL.value:
            cutoff = utcnow() - timedelta(seconds=self.config.directory.quarantine)
            for release in self.s.scalars(sa.select(AddressRelease).where(
                    AddressRelease.address == address, AddressRelease.released_at > cutoff)):
                same = (release.mailbox_id == mailbox_id
                        or (owner is not None and release.owner_id == owner.id))
                if not same:
                    until = release.released_at + timedelta(
                        seconds=self.config.directory.quarantine)
                    raise DirectoryError(
                        f"{address} was released on {release.released_at:%Y-%m-%d} and is "
                        f"quarantined until {until:%Y-%m-%d} (mail for its former owner must "
                        "not reach someone else)")
        return address

    def _release(self, box: Mailbox) -> None:
        self.s.add(AddressRelease(address=box.address, mailbox_id=box.id, owner_id=box.owner_id))

    def _end_delegations(self, *, mailbox: Mailbox | None = None,
                         person: Person | None = None) -> list[Delegation]:
        now = utcnow()
        q = sa.select(Delegation).where(sa.or_(Delegation.valid_until.is_(None),
                                               Delegation.valid_until > now))
        if mailbox is not None:
            q = q.where(Delegation.mailbox_id == mailbox.id)
        if person is not None:
            q = q.where(Delegation.person_id == person.id)
        ended = list(self.s.scalars(q))
        for d in ended:
            d.valid_until = max(now, d.valid_from)
        return ended

    # --- agencies --------------------------------------------------------------
    def add_agency(self, code: str, name: str, parent: str | None = None,
                   basis: str | None = None) -> Agency:
        code = naming.check_code(code)
        if self.s.scalars(sa.select(Agency).where(Agency.code == code)).first():
            raise DirectoryError(f"agency {code} already exists")
        domains = self.config.server.local_domains
        squatter = self.s.scalars(sa.select(Mailbox).where(
            Mailbox.address.in_([f"{code}@{d}" for d in domains]
                                + [f"{naming.intake_local(code)}@{d}" for d in domains]),
            Mailbox.status.in_(LIVE), Mailbox.kind == Kind.PERSONAL.value)).first()
        if squatter is not None:
            raise DirectoryError(f"{squatter.address} is a personal mailbox; the agency code "
                                 f"{code} needs that address for its official mailbox (Điều 4)")
        agency = Agency(code=code, name=naming.nfc(name), status="active",
                        parent=self.agency(parent) if parent else None)
        self.s.add(agency)
        self.s.flush()
        self._log("agency.add", "agency", code, None, agency.as_dict(), basis)
        return agency

    def update_agency(self, code: str, *, name: str | None = None,
                      parent: str | None = None, basis: str | None = None) -> Agency:
        agency = self.agency(code)
        before = agency.as_dict()
        if name is not None:
            agency.name = naming.nfc(name)
        if parent is not None:
            new_parent = self.agency(parent) if parent else None
            walk = new_parent
            while walk is not None:
                if walk.id == agency.id:
                    raise DirectoryError(f"{parent} is inside {code}: no cycles")
                walk = walk.parent
            agency.parent = new_parent
        if agency.as_dict() != before:
            agency.updated_at = utcnow()
            self._log("agency.update", "agency", agency.code, before, agency.as_dict(), basis)
        return agency

    def close_agency(self, code: str, basis: str | None = None) -> Agency:
        """An agency that ceased to exist: its official mailboxes are removed (never its mail)."""
        agency = self.agency(code)
        if agency.status == "closed":
            return agency
        staff = self.s.scalars(sa.select(Mailbox.address).where(
            Mailbox.agency_id == agency.id, Mailbox.kind == Kind.PERSONAL.value,
            Mailbox.status.in_(LIVE))).all()
        if staff:
            raise DirectoryError(f"{code} still has {len(staff)} personal mailboxes "
                                 f"({', '.join(staff[:5])}…): transfer or remove them first")
        for box in self.s.scalars(sa.select(Mailbox).where(Mailbox.agency_id == agency.id,
                                                           Mailbox.status.in_(LIVE))).all():
            self.set_status(box.address, Status.REMOVED, basis)
        before = agency.as_dict()
        agency.status = "closed"
        agency.updated_at = utcnow()
        self._log("agency.close", "agency", code, before, agency.as_dict(), basis)
        return agency

    # --- people ----------------------------------------------------------------
    def add_person(self, full_name: str, agency: str | None, hr_id: str | None = None,
                   title: str = "", basis: str | None = None) -> Person:
        if hr_id and self.person_by_hr_id(hr_id):
            raise DirectoryError(f"HR id {hr_id} already exists")
        person = Person(hr_id=hr_id or None, full_name=naming.nfc(full_name), title=title,
                        agency=self.agency(agency) if agency else None, status="active")
        self.s.add(person)
        self.s.flush()
        self._log("person.add", "person", hr_id or person.full_name, None, person.as_dict(),
                  basis)
        return person

    def update_person(self, person: Person, *, full_name: str | None = None,
                      title: str | None = None, agency: str | None = None,
                      status: str | None = None, basis: str | None = None) -> None:
        before = person.as_dict()
        if full_name is not None:
            person.full_name = naming.nfc(full_name)
        if title is not None:
            person.title = title
        if agency is not None:
            person.agency = self.agency(agency)
        if status is not None:
            person.status = status
        if person.as_dict() != before:
            person.updated_at = utcnow()
            self._log("person.update", "person", person.hr_id or person.full_name, before,
                      person.as_dict(), basis)

    def depart(self, person: Person, basis: str | None = None) -> list[str]:
        """Điều 6.3: leaving the province or retiring removes the person's mailboxes."""
        removed = []
        for box in self.s.scalars(sa.select(Mailbox).where(
                Mailbox.owner_id == person.id, Mailbox.kind == Kind.PERSONAL.value,
                Mailbox.status.in_(LIVE))).all():
            self.set_status(box.address, Status.REMOVED, basis)
            removed.append(box.address)
        for d in self._end_delegations(person=person):
            self._log("delegation.end", "mailbox", d.mailbox.address,
                      {"delegate": person.hr_id}, None, basis)
        for box in self.s.scalars(sa.select(Mailbox).where(
                Mailbox.owner_id == person.id, Mailbox.kind != Kind.PERSONAL.value,
                Mailbox.status.in_(LIVE))).all():
            # the head left: the official mailbox waits for a handover (Điều 8)
            before = box.as_dict()
            box.owner = None
            self._log("mailbox.owner_left", "mailbox", box.address, before, box.as_dict(),
                      basis)
        self.update_person(person, status="left", basis=basis)
        return removed

    # --- mailboxes -------------------------------------------------------------
    def add_mailbox(self, address: str, kind: str, agency: str, owner: Person | None = None,
                    password: str | None = None, basis: str | None = None) -> Mailbox:
        kind = Kind(kind).value
        ag = self.agency(agency)
        if ag.status != "active":
            raise DirectoryError(f"agency {ag.code} is closed")
        if kind == Kind.PERSONAL.value:
            if owner is None:
                raise DirectoryError("a personal mailbox needs its owner (--name or --hr-id)")
            own = personal_address(self.s, owner.id)
            if own:
                raise DirectoryError(f"{owner.full_name} already has {own} "
                                     "(Điều 4: one mailbox per member)")
        address = self.check_address(address, kind, ag, owner)
        box = Mailbox(address=address, kind=kind, agency=ag, owner=owner,
                      status=Status.ACTIVE.value,
                      password_hash=passwords.hash_password(password) if password else None)
        self.s.add(box)
        self.s.flush()
        self._log("mailbox.add", "mailbox", address, None, box.as_dict(), basis)
        return box

    def set_status(self, address: str, status: Status | str, basis: str | None = None,
                   ) -> Mailbox:
        status = Status(status)
        if status is Status.ACTIVE:
            box = self.s.scalars(sa.select(Mailbox).where(Mailbox.address == address.lower())
                                 .order_by(Mailbox.status.in_(LIVE).desc(),
                                           Mailbox.id.desc())).first()
            if box is None:
                raise DirectoryError(f"no mailbox {address!r}")
            if box.status == Status.REMOVED.value:
                # restoring a removed mailbox: its address must still be free
                self.check_address(box.address, box.kind, box.agency, box.owner, box.id)
        else:
            box = self.live_mailbox(address)
        if box.status == status.value:
            return box
        before = box.as_dict()
        box.status = status.value
        box.updated_at = utcnow()
        if status is Status.REMOVED:
            box.removed_at = utcnow()
            box.password_hash = None
            self._release(box)
            self._end_delegations(mailbox=box)
        elif status is Status.ACTIVE:
            box.removed_at = None
        verb = {Status.ACTIVE: "restore", Status.SUSPENDED: "suspend",
                Status.REMOVED: "remove"}[status]
        self._log(f"mailbox.{verb}", "mailbox", box.address, before, box.as_dict(), basis)
        return box

    def rename_mailbox(self, old: str, new: str, basis: str | None = None) -> Mailbox:
        """Điều 6.2: a transfer may change the address; the old one is quarantined."""
        box = self.live_mailbox(old)
        new_address = self.check_address(new, box.kind, box.agency, box.owner, box.id)
        if new_address == box.address:
            return box
        before = box.as_dict()
        self._release(box)
        box.address = new_address
        box.updated_at = utcnow()
        self._log("mailbox.rename", "mailbox", new_address, before, box.as_dict(), basis)
        return box

    def move_mailbox(self, address: str, agency: str, basis: str | None = None) -> Mailbox:
        box = self.live_mailbox(address)
        ag = self.agency(agency)
        if box.kind != Kind.PERSONAL.value:
            raise DirectoryError("official and citizen-intake mailboxes belong to their agency")
        if box.agency_id != ag.id:
            before = box.as_dict()
            box.agency = ag
            box.updated_at = utcnow()
            self._log("mailbox.transfer", "mailbox", box.address, before, box.as_dict(), basis)
        return box

    def set_password(self, address: str, password: str, basis: str | None = None) -> None:
        """Điều 7.4: the Office resets a lost password. The log says so, never the password."""
        box = self.live_mailbox(address)
        try:
            box.password_hash = passwords.hash_password(password)
        except ValueError as exc:
            raise DirectoryError(str(exc)) from None
        box.updated_at = utcnow()
        self._log("mailbox.reset_password", "mailbox", box.address, None,
                  {"password": "changed"}, basis)

    # --- official mailboxes (Điều 8) ------------------------------------------
    def _official(self, address: str) -> Mailbox:
        box = self.live_mailbox(address)
        if box.kind == Kind.PERSONAL.value:
            raise DirectoryError(f"{address} is a personal mailbox: only official and "
                                 "citizen-intake mailboxes are delegated (Điều 7.3, 8)")
        return box

    def delegate(self, official: str, to: str, until: datetime | None = None,
                 basis: str | None = None) -> Delegation:
        box = self._official(official)
        person = self.person(to)
        now = utcnow()
        for d in self.s.scalars(sa.select(Delegation).where(
                Delegation.mailbox_id == box.id, Delegation.person_id == person.id)):
            if d.active_at(now):
                raise DirectoryError(f"{to} is already delegated {box.address}")
        d = Delegation(mailbox=box, person=person, granted_by=self.actor,
                       basis=(basis or self.basis), valid_from=now, valid_until=until)
        self.s.add(d)
        self._log("delegation.grant", "mailbox", box.address, None,
                  {"delegate": to, "hr_id": person.hr_id, "until": until}, basis)
        return d

    def revoke(self, official: str, person_ref: str, basis: str | None = None) -> None:
        box = self._official(official)
        person = self.person(person_ref)
        ended = self._end_delegations(mailbox=box, person=person)
        if not ended:
            raise DirectoryError(f"{person_ref} holds no delegation of {box.address}")
        self._log("delegation.revoke", "mailbox", box.address,
                  {"delegate": person_ref, "hr_id": person.hr_id}, None, basis)

    def handover(self, official: str, to: str, basis: str | None = None) -> str:
        """Điều 8: the new head takes the mailbox and a new password; old delegations end.

        Returns the new password (shown once to the administrator)."""
        box = self._official(official)
        person = self.person(to)
        before = box.as_dict()
        ended = self._end_delegations(mailbox=box)
        password = passwords.generate()
        box.owner = person
        box.password_hash = passwords.hash_password(password)
        box.updated_at = utcnow()
        after = box.as_dict() | {"ended_delegations": [d.person.hr_id or d.person.full_name
                                                       for d in ended],
                                 "password": "changed"}
        self._log("mailbox.handover", "mailbox", box.address, before, after, basis)
        return password


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):  # RFC 3339 with Z, like every --json timestamp
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value

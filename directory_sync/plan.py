"""From HR records to directory changes (Điều 5.2, 6), and applying them in one transaction.

The plan is the difference between the feed and the directory: agencies
created, renamed, moved or closed; hires (a new person and mailbox), transfers
(agency and, when the feed says so, address), departures and retirements (the
mailbox is removed; the archive keeps its mail). A person the feed does not
mention is left alone: a truncated feed must not empty the directory.

Applying runs every step through the same checked, logged writer the admin CLI
uses, each with the legal basis its row gave. A dry run does exactly the same
and rolls back, so it finds every problem the real run would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from directory_sync.feed import AgencyRecord, FeedError, FeedProblem, PersonRecord, Record
from relay.config import Config
from relay.directory.admin import Directory, DirectoryError, Writer, personal_address, suggest
from relay.directory.naming import NamingError
from relay.directory.schema import Agency, Kind, Mailbox, Person


@dataclass
class Step:
    action: str  # agency.add | agency.update | agency.close | hire | transfer | rename | ...
    key: str
    summary: str
    where: str
    basis: str
    run: Callable[[Writer], Any] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "key": self.key, "summary": self.summary,
                "where": self.where, "basis": self.basis}


def compute(session: Session, config: Config, records: list[Record]) -> list[Step]:
    agencies = {a.code: a for a in session.scalars(sa.select(Agency))}
    adds: list[Step] = []
    updates: list[Step] = []
    closes: list[Step] = []
    for rec in (r for r in records if isinstance(r, AgencyRecord)):
        existing = agencies.get(rec.code)
        if rec.status == "closed":
            if existing is not None and existing.status != "closed":
                closes.append(Step("agency.close", rec.code, f"close agency {rec.code}",
                                   rec.where, rec.basis,
                                   lambda w, c=rec.code: w.close_agency(c)))
        elif existing is None:
            adds.append(Step("agency.add", rec.code, f"add agency {rec.code} ({rec.name})"
                             + (f" under {rec.parent}" if rec.parent else ""), rec.where,
                             rec.basis,
                             lambda w, r=rec: w.add_agency(r.code, r.name, r.parent)))
        elif existing.status == "closed":
            raise FeedError([FeedProblem(rec.where, f"agency {rec.code} is closed; reopening "
                                                    "is done by hand")])
        else:
            parent = existing.parent.code if existing.parent else None
            changes = []
            if existing.name != rec.name:
                changes.append(f"name {existing.name!r} -> {rec.name!r}")
            if parent != rec.parent:
                changes.append(f"parent {parent or '-'} -> {rec.parent or '-'}")
            if changes:
                updates.append(Step(
                    "agency.update", rec.code, f"agency {rec.code}: {'; '.join(changes)}",
                    rec.where, rec.basis,
                    lambda w, r=rec: w.update_agency(r.code, name=r.name,
                                                     parent=r.parent or "")))
    parents = {r.code: r.parent for r in records if isinstance(r, AgencyRecord)}
    steps = _parents_first(adds, parents) + updates
    promised: set[str] = set()
    for rec in (r for r in records if isinstance(r, PersonRecord)):
        steps.extend(_person_steps(session, config, rec, promised))
    return steps + closes


def _parents_first(adds: list[Step], parents: dict[str, str | None]) -> list[Step]:
    """Agencies added by the plan, each after its parent when the parent is added too."""
    pending = {s.key: s for s in adds}
    ordered: list[Step] = []

    def place(code: str, seen: frozenset[str] = frozenset()) -> None:
        parent = parents.get(code)
        if parent in pending and parent not in seen:
            place(parent, seen | {code})
        if code in pending:
            ordered.append(pending.pop(code))

    for step in adds:
        place(step.key)
    return ordered


def _person_steps(session: Session, config: Config, rec: PersonRecord,
                  promised: set[str]) -> list[Step]:
    person = session.scalars(sa.select(Person).where(Person.hr_id == rec.hr_id)).first()
    current = personal_address(session, person.id) if person else None

    def new_address() -> str:
        address = rec.address or suggest(session, config, rec.full_name, rec.agency,
                                         exclude=promised)
        promised.add(address)
        return address

    if rec.status != "active":
        if person is None or (person.status == "left" and current is None):
            return []
        what = "retire" if rec.status == "retired" else "depart"
        return [Step(what, rec.hr_id, f"{what} {rec.hr_id} {rec.full_name}: remove "
                     f"{current or 'no mailbox'} (archived mail is kept)", rec.where,
                     rec.basis, lambda w: w.depart(w.person(rec.hr_id)))]

    if person is None:
        address = new_address()

        def hire(w: Writer) -> None:
            p = w.add_person(rec.full_name, rec.agency, hr_id=rec.hr_id, title=rec.title)
            w.add_mailbox(address, Kind.PERSONAL.value, rec.agency or "", p)

        return [Step("hire", rec.hr_id, f"hire {rec.hr_id} {rec.full_name} in {rec.agency}: "
                     f"new mailbox {address}", rec.where, rec.basis, hire)]

    steps: list[Step] = []
    agency = person.agency.code if person.agency else None
    changes = []
    if person.full_name != rec.full_name:
        changes.append(f"name {person.full_name!r} -> {rec.full_name!r}")
    if person.title != rec.title:
        changes.append(f"title {person.title!r} -> {rec.title!r}")
    if person.status != "active":
        changes.append("back in service")
    if agency != rec.agency:
        steps.append(Step("transfer", rec.hr_id, f"transfer {rec.hr_id} {rec.full_name}: "
                          f"{agency or '-'} -> {rec.agency}", rec.where, rec.basis,
                          lambda w: _transfer(w, rec)))
    if changes:
        steps.append(Step("person.update", rec.hr_id, f"{rec.hr_id}: {'; '.join(changes)}",
                          rec.where, rec.basis,
                          lambda w: w.update_person(w.person(rec.hr_id),
                                                    full_name=rec.full_name, title=rec.title,
                                                    status="active")))
    if current is None:
        address = new_address()
        steps.append(Step("mailbox.add", rec.hr_id, f"new mailbox {address} for {rec.hr_id} "
                          f"{rec.full_name}", rec.where, rec.basis,
                          lambda w: w.add_mailbox(address, Kind.PERSONAL.value,
                                                  rec.agency or "", w.person(rec.hr_id))))
    elif rec.address and rec.address != current:
        promised.add(rec.address)
        steps.append(Step("rename", rec.hr_id, f"{rec.hr_id}: address {current} -> "
                          f"{rec.address} (old address quarantined)", rec.where, rec.basis,
                          lambda w, old=current: w.rename_mailbox(old, rec.address or "")))
    return steps


def _transfer(w: Writer, rec: PersonRecord) -> None:
    person = w.person(rec.hr_id)
    w.update_person(person, agency=rec.agency)
    for box in w.s.scalars(sa.select(Mailbox).where(Mailbox.owner_id == person.id,
                                                    Mailbox.kind == Kind.PERSONAL.value,
                                                    Mailbox.status.in_(("active",
                                                                        "suspended")))):
        w.move_mailbox(box.address, rec.agency or "")


class _Rollback(Exception):
    pass


def execute(directory: Directory, steps: list[Step], actor: str, *, commit: bool,
            progress: Callable[[Step], None] | None = None) -> list[FeedProblem]:
    """Run the steps in one transaction; commit only when all succeed and COMMIT is set."""
    problems: list[FeedProblem] = []
    try:
        with directory.write(actor, "-") as writer:
            for step in steps:
                writer.basis = step.basis
                try:
                    step.run(writer)
                    writer.s.flush()
                except (DirectoryError, NamingError, ValueError) as exc:
                    problems.append(FeedProblem(step.where, f"{step.summary}: {exc}"))
                except IntegrityError as exc:  # the session is unusable after this one
                    problems.append(FeedProblem(step.where, f"{step.summary}: {exc.orig}"))
                    break
                if progress is not None:
                    progress(step)
            if problems or not commit:
                raise _Rollback
    except _Rollback:
        pass
    return problems


def plan(directory: Directory, records: list[Record]) -> list[Step]:
    with directory.read() as session:
        return compute(session, directory.config, records)

"""`PetitionStore`: the petitions tables, written by the relay and read by everyone.

The relay's hook (`service`) files what an intake mailbox receives and sends; the CLI
and the web console read through the query API (`cases`, `case`, `report`, `counts`,
`due`) and change cases through `assign` and `close_case`. Every method is synchronous
(SQL): async callers run them in a thread.

Matching a message to a case (`_referenced`): a case number in the Subject
(`numbers.NumberFormat.find`), or a Message-ID of the case (the citizen's messages, the
acknowledgement, anything recorded on it) in In-Reply-To/References. Only cases of the
same intake mailbox match, and for a citizen's message only that citizen's cases: a
stranger who types someone's number opens a case of their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from relay.config import Config
from relay.db import make_engine
from relay.petitions import schema
from relay.petitions.numbers import NumberFormat
from relay.petitions.records import Case, CaseDetail, CaseEvent, CaseMessage, ReportRow
from relay.petitions.workdays import Calendar

RELAY = "relay"  # the actor of what the relay records by itself
MAX_REASON = 500


class PetitionError(Exception):
    """A request the store refuses (no such case, already answered...): str() says why."""


@dataclass
class Incoming:
    """A message from outside accepted for an intake mailbox."""

    mailbox: str
    citizen: str  # the envelope sender, lowercased; "" for the null sender
    queue_id: str
    subject: str
    message_id: str
    references: list[str]
    auto: str  # why it is auto-generated (signals.Signals.auto)
    at: datetime
    recipients: list[str] = field(default_factory=list)


@dataclass
class Outgoing:
    """A message the intake mailbox (or a delegate as it) sent."""

    mailbox: str
    queue_id: str
    subject: str
    message_id: str
    references: list[str]
    auto: str
    at: datetime
    login: str | None
    recipients: list[str]
    officials: list[str]  # local official / intake recipients other than the mailbox


@dataclass
class Filed:
    """What became of an incoming message: `opened` a case, `joined` one, or `ignored`."""

    action: str
    case: Case | None = None
    reason: str = ""


@dataclass
class CaseFilter:
    """The list's filters: status as of a day, the mailboxes (the web console passes the
    officer's), a citizen; `after` (a case id) and `limit` page through, oldest first."""

    status: str = "all"  # open | due | overdue | answered | all
    mailboxes: Sequence[str] | None = None
    citizen: str | None = None
    as_of: date | None = None  # default: today
    after: int | None = None
    limit: int | None = None


_PREFIX = re.compile(r"^\s*(?:(?:re|fw|fwd|tl|tr|ct|aw|sv|vs|wg)\s*(?:\[\d+\])?\s*:\s*)+",
                     re.IGNORECASE)


def subject_key(subject: str) -> str:
    """A Subject without reply/forward prefixes, case-folded, spaces collapsed."""
    return " ".join(_PREFIX.sub("", subject).casefold().split())[:500]


class PetitionStore:
    def __init__(self, config: Config, db: Engine | None = None) -> None:
        self.config = config
        self.settings = config.petitions
        self.db = db or make_engine(config.directory_url)
        self.numbers = NumberFormat(self.settings.number_format)
        self.calendar = Calendar.from_config(self.settings)
        self.node = config.server.hostname[:255]

    @classmethod
    def open(cls, config: Config, *, migrate: bool = True) -> PetitionStore:
        """`migrate=False` for read-only commands: they fail clearly when the relay has
        not created the tables yet."""
        store = cls(config)
        if migrate:
            schema.migrate(store.db)
        elif not schema.is_current(store.db):
            store.close()
            raise PetitionError(f"no petitions tables (or an older schema) in "
                                f"{config.directory_url}; the relay creates them when it "
                                "starts with [petitions] enabled")
        return store

    def close(self) -> None:
        self.db.dispose()

    # --- the relay's side: filing messages ---------------------------------------------
    def receive(self, msg: Incoming, acknowledge: str) -> Filed:
        """File a message from outside to an intake mailbox; `acknowledge` is "" when an
        acknowledgement may go, else why not (kept on the case).

        A referenced case of this citizen is joined; a program's message (`auto`) that
        references nothing is ignored; anything else opens a case, numbered in the
        same transaction (a duplicate delivery of one Message-ID joins the first)."""
        for attempt in range(3):
            try:
                with self.db.begin() as conn:
                    return self._receive(conn, msg, acknowledge)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
                continue  # another node filed the same Message-ID meanwhile: join it
        raise AssertionError("unreachable")

    def _receive(self, conn: Connection, msg: Incoming, acknowledge: str) -> Filed:
        c = schema.case
        found = self._referenced(conn, msg.mailbox, msg.subject, msg.references,
                                 citizen=msg.citizen) if msg.citizen else []
        role = "follow-up"
        if not found and msg.citizen and msg.message_id:
            found = [r["id"] for r in conn.execute(
                sa.select(c.c.id).where(c.c.mailbox == msg.mailbox, c.c.citizen == msg.citizen,
                                        c.c.message_id == msg.message_id)).mappings()]
            role = "duplicate"
        if found:
            case_id = found[0]
            self._message(conn, case_id, msg.at, "in", role, msg.queue_id, msg.citizen,
                          msg.recipients, msg.subject, msg.message_id, None)
            self._event(conn, case_id, msg.at, RELAY, role,
                        f"queue {msg.queue_id}" + (f" ({msg.auto})" if msg.auto else ""))
            return Filed("joined", self._case(conn, case_id))
        if msg.auto or not msg.citizen:
            return Filed("ignored", reason=msg.auto or "null sender")

        deadline, days = self.calendar.deadline(msg.at)
        year = self.calendar.local_date(msg.at).year
        seq = self._take_number(conn, self.numbers.scope(year))
        number = self.numbers.format(year, seq)
        ack_status = "pending" if not acknowledge else f"not sent: {acknowledge}"[:64]
        if not acknowledge and self._acknowledged_lately(conn, msg) >= \
                self.settings.acknowledge_limit:
            ack_status = "not sent: acknowledge_limit"
        ack_id = f"<petition.{number.replace('/', '.')}.{msg.queue_id}@{self.node}>"[:250]
        case_id = conn.execute(c.insert().values(
            number=number, mailbox=msg.mailbox, citizen=msg.citizen,
            subject=msg.subject[:998], message_id=msg.message_id, received_at=msg.at,
            deadline=deadline, working_days=days, status="open", ack_message_id=ack_id,
            ack_status=ack_status, node=self.node).returning(c.c.id)).scalar_one()
        self._message(conn, case_id, msg.at, "in", "petition", msg.queue_id, msg.citizen,
                      msg.recipients, msg.subject, msg.message_id, None)
        self._event(conn, case_id, msg.at, RELAY, "opened",
                    f"queue {msg.queue_id}; deadline {deadline} ({days} working days)")
        return Filed("opened", self._case(conn, case_id))

    def _take_number(self, conn: Connection, scope: int) -> int:
        """The next number of a scope: one upsert, so two nodes never get the same one
        (PostgreSQL: the row lock until commit; SQLite: the database write lock)."""
        k = schema.counter
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(k).values(scope=scope, last=1)
        stmt = stmt.on_conflict_do_update(index_elements=[k.c.scope],
                                          set_={"last": k.c.last + 1}).returning(k.c.last)
        return int(conn.execute(stmt).scalar_one())

    def _acknowledged_lately(self, conn: Connection, msg: Incoming) -> int:
        """Acknowledgements to this citizen from this mailbox in the last 24 hours."""
        c = schema.case
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(c).where(
                c.c.mailbox == msg.mailbox, c.c.citizen == msg.citizen,
                c.c.received_at > msg.at - timedelta(days=1),
                c.c.ack_status.in_(("pending", "queued", "submitted")))).scalar_one())

    def acknowledged(self, case_id: int, status: str, queue_id: str | None = None,
                     sender: str = "", recipient: str = "", subject: str = "",
                     at: datetime | None = None) -> None:
        """After the acknowledgement was queued or submitted (or failed)."""
        at = at or datetime.now(UTC)
        with self.db.begin() as conn:
            c = schema.case
            conn.execute(c.update().where(c.c.id == case_id).values(
                ack_status=status[:64], ack_queue_id=queue_id))
            row = conn.execute(sa.select(c.c.ack_message_id).where(c.c.id == case_id)).one()
            if queue_id is not None:
                self._message(conn, case_id, at, "out", "acknowledgement", queue_id, sender,
                              [recipient], subject, row.ack_message_id, None)
            self._event(conn, case_id, at, RELAY, "acknowledgement",
                        status + (f", queue {queue_id}" if queue_id else ""))

    def send(self, msg: Outgoing) -> list[tuple[str, str]]:
        """File a message the intake mailbox sent: an answer to the citizen, a report to
        official mailboxes, or neither. The (number, what) it recorded."""
        with self.db.begin() as conn:
            return self._send(conn, msg)

    def _send(self, conn: Connection, msg: Outgoing) -> list[tuple[str, str]]:
        found = self._referenced(conn, msg.mailbox, msg.subject, msg.references)
        if not found and msg.officials and not msg.auto:
            found = self._by_subject(conn, msg.mailbox, msg.subject)
        done: list[tuple[str, str]] = []
        c, r = schema.case, schema.report
        actor = msg.login or msg.mailbox
        for case_id in found:
            case = self._case(conn, case_id)
            to_citizen = case.citizen in msg.recipients
            if to_citizen:
                role = "auto-reply" if msg.auto else "answer"
                self._message(conn, case_id, msg.at, "out", role, msg.queue_id, msg.mailbox,
                              msg.recipients, msg.subject, msg.message_id, msg.login)
                if not msg.auto and case.state == "open":
                    conn.execute(c.update().where(c.c.id == case_id, c.c.status == "open")
                                 .values(status="answered", answered_at=msg.at,
                                         answered_by=actor))
                    self._event(conn, case_id, msg.at, actor, "answered",
                                f"queue {msg.queue_id}")
                    done.append((case.number, "answered"))
            new = [o for o in msg.officials if o not in case.reported_to]
            for official in new:
                conn.execute(r.insert().values(case_id=case_id, mailbox=official, at=msg.at,
                                               by=actor, queue_id=msg.queue_id))
                self._event(conn, case_id, msg.at, actor, "reported",
                            f"to {official}, queue {msg.queue_id}")
                done.append((case.number, f"reported to {official}"))
            if msg.officials and not to_citizen:
                self._message(conn, case_id, msg.at, "out", "report", msg.queue_id,
                              msg.mailbox, msg.recipients, msg.subject, msg.message_id,
                              msg.login)
        return done

    # --- matching ------------------------------------------------------------------------
    def _referenced(self, conn: Connection, mailbox: str, subject: str,
                    references: Sequence[str], citizen: str | None = None) -> list[int]:
        """The cases of `mailbox` (and of `citizen`, when given) that the Subject's numbers
        or the In-Reply-To/References ids name; numbers first."""
        c, m = schema.case, schema.message
        mine = [c.c.mailbox == mailbox] + ([c.c.citizen == citizen] if citizen else [])
        out: list[int] = []
        numbers = self.numbers.find(subject)
        if numbers:
            rows = conn.execute(sa.select(c.c.id, c.c.number).where(
                c.c.number.in_(numbers), *mine)).all()
            by_number = {row.number: row.id for row in rows}
            out.extend(by_number[n] for n in numbers if n in by_number)
        refs = list(references)
        if refs:
            for stmt in (sa.select(c.c.id).where(c.c.ack_message_id.in_(refs), *mine),
                         sa.select(c.c.id).where(c.c.message_id.in_(refs), *mine),
                         sa.select(m.c.case_id).join(c, c.c.id == m.c.case_id)
                         .where(m.c.message_id.in_(refs), *mine)):
                for (case_id,) in conn.execute(stmt):
                    if case_id not in out:
                        out.append(case_id)
        return out

    def _by_subject(self, conn: Connection, mailbox: str, subject: str) -> list[int]:
        """A forward without number or references: the one open case of this mailbox
        whose Subject it repeats (none when it is ambiguous)."""
        key = subject_key(subject)
        if not key:
            return []
        c = schema.case
        rows = conn.execute(sa.select(c.c.id, c.c.subject).where(
            c.c.mailbox == mailbox, c.c.status == "open")).all()
        hits = [row.id for row in rows if subject_key(row.subject) == key]
        return hits if len(hits) == 1 else []

    # --- officers' changes -----------------------------------------------------------------
    def assign(self, number: str, to: str, actor: str) -> Case:
        """Name the officer handling a case (a local address)."""
        to = to.strip().lower()
        if not re.fullmatch(r"[a-z0-9._+-]{1,64}@[a-z0-9.-]{1,253}", to) or \
                not self.config.is_local(to):
            domains = ", ".join(self.config.server.local_domains)
            raise PetitionError(f"{to[:80]!r} is not an address in {domains}")
        with self.db.begin() as conn:
            case = self._by_number(conn, number)
            c = schema.case
            conn.execute(c.update().where(c.c.id == case.id).values(assignee=to))
            self._event(conn, case.id, datetime.now(UTC), actor, "assigned", f"to {to}")
            return self._case(conn, case.id)

    def close_case(self, number: str, reason: str, actor: str, at: datetime | None = None
                   ) -> Case:
        """Answered otherwise (by post, in person): the case counts as answered now."""
        reason = " ".join(reason.split())[:MAX_REASON]
        if not reason:
            raise PetitionError("a reason is required (how the citizen was answered)")
        at = at or datetime.now(UTC)
        with self.db.begin() as conn:
            case = self._by_number(conn, number)
            if case.state != "open":
                raise PetitionError(f"{case.number} is already {case.state}")
            c = schema.case
            conn.execute(c.update().where(c.c.id == case.id, c.c.status == "open").values(
                status="closed", answered_at=at, answered_by=actor[:320],
                closed_reason=reason))
            self._event(conn, case.id, at, actor, "closed", reason)
            return self._case(conn, case.id)

    def note(self, case_ids: Iterable[int], actor: str, action: str, detail: str) -> None:
        """Add a line to the history of some cases (the reminder)."""
        at = datetime.now(UTC)
        with self.db.begin() as conn:
            for case_id in case_ids:
                self._event(conn, case_id, at, actor, action, detail)

    # --- the query API (CLI, web console, metrics, reminder) -----------------------------
    def cases(self, f: CaseFilter) -> list[Case]:
        as_of = f.as_of or self.calendar.today()
        end = self.calendar.day_end(as_of)
        c = schema.case
        stmt = sa.select(c).where(c.c.received_at < end).order_by(c.c.id)
        if f.mailboxes is not None:
            stmt = stmt.where(c.c.mailbox.in_([m.strip().lower() for m in f.mailboxes]))
        if f.citizen:
            stmt = stmt.where(c.c.citizen == f.citizen.strip().lower())
        if f.after is not None:
            stmt = stmt.where(c.c.id > f.after)
        answered = sa.and_(c.c.answered_at.is_not(None), c.c.answered_at < end)
        waiting = sa.or_(c.c.answered_at.is_(None), c.c.answered_at >= end)
        if f.status == "answered":
            stmt = stmt.where(answered)
        elif f.status == "overdue":
            stmt = stmt.where(waiting, c.c.deadline < as_of)
        elif f.status == "open":
            stmt = stmt.where(waiting, c.c.deadline >= as_of)
        elif f.status == "due":
            horizon = self.calendar.add_working_days(as_of, self.settings.remind_within)
            stmt = stmt.where(waiting, c.c.deadline >= as_of, c.c.deadline <= horizon)
        elif f.status != "all":
            raise PetitionError(f"unknown status {f.status!r}")
        if f.limit is not None:
            stmt = stmt.limit(f.limit)
        with self.db.connect() as conn:
            rows = list(conn.execute(stmt).mappings())
            reported = self._reported(conn, [row["id"] for row in rows])
        return [Case.of(row, reported.get(row["id"])) for row in rows]

    def case(self, number: str) -> CaseDetail | None:
        """One case with its messages (and their archive entries) and its history."""
        from relay.archive import schema as archive

        m, e, a = schema.message, schema.event, archive.entry
        with self.db.connect() as conn:
            try:
                case = self._by_number(conn, number)
            except PetitionError:
                return None
            messages = [CaseMessage(at=row.at, direction=row.direction, role=row.role,
                                    queue_id=row.queue_id, sender=row.sender,
                                    recipients=json.loads(row.recipients),
                                    subject=row.subject, message_id=row.message_id,
                                    login=row.login)
                        for row in conn.execute(sa.select(m).where(m.c.case_id == case.id)
                                                .order_by(m.c.at, m.c.id))]
            queue_ids = sorted({msg.queue_id for msg in messages})
            entries: dict[str, list[int]] = {}
            if queue_ids and sa.inspect(conn).has_table(a.name):
                for row in conn.execute(sa.select(a.c.seq, a.c.queue_id).where(
                        a.c.queue_id.in_(queue_ids), a.c.mailbox == case.mailbox)
                        .order_by(a.c.seq)):
                    entries.setdefault(row.queue_id, []).append(int(row.seq))
            for msg in messages:
                msg.archive = entries.get(msg.queue_id, [])
            events = [CaseEvent(row.at, row.actor, row.action, row.detail)
                      for row in conn.execute(sa.select(e).where(e.c.case_id == case.id)
                                              .order_by(e.c.id))]
        return CaseDetail(case, messages, events)

    def report(self, as_of: date | None = None, since: date | None = None,
               mailboxes: Sequence[str] | None = None) -> list[ReportRow]:
        """Per intake mailbox, the cases received by the end of `as_of` (and on or after
        `since`): answered on time, answered late, open, overdue."""
        as_of = as_of or self.calendar.today()
        end = self.calendar.day_end(as_of)
        rows: dict[str, ReportRow] = {}
        f = CaseFilter(status="all", mailboxes=mailboxes, as_of=as_of)
        for case in self.cases(f):
            if since is not None and self.calendar.local_date(case.received_at) < since:
                continue
            row = rows.setdefault(case.mailbox, ReportRow(case.mailbox))
            row.received += 1
            status = case.status(as_of, end)
            if status == "answered":
                assert case.answered_at is not None
                if self.calendar.local_date(case.answered_at) <= case.deadline:
                    row.answered_on_time += 1
                else:
                    row.answered_late += 1
            elif status == "overdue":
                row.overdue += 1
            else:
                row.open += 1
        return [rows[k] for k in sorted(rows)]

    def counts(self, as_of: date | None = None) -> dict[str, tuple[int, int]]:
        """Per mailbox, (cases waiting for an answer, of which overdue): the metrics."""
        as_of = as_of or self.calendar.today()
        c = schema.case
        overdue = sa.func.sum(sa.case((c.c.deadline < as_of, 1), else_=0))
        stmt = (sa.select(c.c.mailbox, sa.func.count(), overdue)
                .where(c.c.status == "open").group_by(c.c.mailbox))
        with self.db.connect() as conn:
            return {row[0]: (int(row[1]), int(row[2] or 0)) for row in conn.execute(stmt)}

    def due(self, as_of: date | None = None) -> dict[str, list[Case]]:
        """Per mailbox, the cases due within `remind_within` working days or overdue."""
        out: dict[str, list[Case]] = {}
        for status in ("overdue", "due"):
            for case in self.cases(CaseFilter(status=status, as_of=as_of)):
                out.setdefault(case.mailbox, []).append(case)
        return out

    # --- helpers ---------------------------------------------------------------------------
    def _by_number(self, conn: Connection, number: str) -> Case:
        c = schema.case
        found = self.numbers.find(number.strip())
        key = found[0] if found else number.strip()
        row = conn.execute(sa.select(c).where(c.c.number == key)).mappings().first()
        if row is None:
            raise PetitionError(f"no case {number[:80]!r}")
        return Case.of(row, self._reported(conn, [row["id"]]).get(row["id"]))

    def _case(self, conn: Connection, case_id: int) -> Case:
        c = schema.case
        row = conn.execute(sa.select(c).where(c.c.id == case_id)).mappings().one()
        return Case.of(row, self._reported(conn, [case_id]).get(case_id))

    def _reported(self, conn: Connection, ids: list[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        r = schema.report
        for start in range(0, len(ids), 500):
            for row in conn.execute(sa.select(r.c.case_id, r.c.mailbox)
                                    .where(r.c.case_id.in_(ids[start:start + 500]))
                                    .order_by(r.c.at, r.c.mailbox)):
                out.setdefault(row.case_id, []).append(row.mailbox)
        return out

    def _message(self, conn: Connection, case_id: int, at: datetime, direction: str,
                 role: str, queue_id: str, sender: str, recipients: Sequence[str],
                 subject: str, message_id: str, login: str | None) -> None:
        conn.execute(schema.message.insert().values(
            case_id=case_id, at=at, direction=direction, role=role, queue_id=queue_id[:64],
            sender=sender[:320], recipients=json.dumps(list(recipients)[:100]),
            subject=subject[:998], message_id=message_id[:255],
            login=login[:320] if login else None))

    def _event(self, conn: Connection, case_id: int, at: datetime, actor: str, action: str,
               detail: str) -> None:
        conn.execute(schema.event.insert().values(case_id=case_id, at=at, actor=actor[:320],
                                                  action=action[:32], detail=detail[:1000]))

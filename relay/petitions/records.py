"""What the petitions API hands out: a case, its messages and history, a report row.

Plain dataclasses with `as_dict()` for JSON (the CLI's `--json`, the web console).
A case's `status` is derived for a day ("as of"): `answered` once an answer (or a
close) is recorded by the end of that day, else `overdue` when the deadline is
before that day, else `open`. The stored `state` (open | answered | closed) only
says whether an answer is recorded at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import RowMapping

STATUSES = ("open", "due", "overdue", "answered", "all")


def iso(when: datetime | None) -> str | None:
    """UTC with its zone, to the second: what the JSON carries."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


@dataclass
class Case:
    id: int
    number: str
    mailbox: str
    citizen: str
    subject: str
    message_id: str
    received_at: datetime
    deadline: date
    working_days: int
    state: str  # open | answered | closed (stored)
    answered_at: datetime | None
    answered_by: str | None
    closed_reason: str | None
    assignee: str | None
    ack_message_id: str
    ack_status: str
    ack_queue_id: str | None
    node: str
    reported_to: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, row: RowMapping, reported_to: list[str] | None = None) -> Case:
        return cls(id=row["id"], number=row["number"], mailbox=row["mailbox"],
                   citizen=row["citizen"], subject=row["subject"],
                   message_id=row["message_id"], received_at=row["received_at"],
                   deadline=row["deadline"], working_days=row["working_days"],
                   state=row["status"], answered_at=row["answered_at"],
                   answered_by=row["answered_by"], closed_reason=row["closed_reason"],
                   assignee=row["assignee"], ack_message_id=row["ack_message_id"],
                   ack_status=row["ack_status"], ack_queue_id=row["ack_queue_id"],
                   node=row["node"], reported_to=list(reported_to or []))

    def answered_by_end(self, end: datetime) -> bool:
        return self.answered_at is not None and self.answered_at < end

    def status(self, as_of: date, end: datetime) -> str:
        """open | overdue | answered as of the day `as_of` (which ends at `end`, UTC)."""
        if self.answered_by_end(end):
            return "answered"
        return "overdue" if self.deadline < as_of else "open"

    def as_dict(self, as_of: date, end: datetime) -> dict[str, Any]:
        return {
            "number": self.number, "mailbox": self.mailbox, "citizen": self.citizen,
            "subject": self.subject, "received_at": iso(self.received_at),
            "deadline": self.deadline.isoformat(), "working_days": self.working_days,
            "status": self.status(as_of, end), "reported_to": self.reported_to,
            "answered_at": iso(self.answered_at) if self.answered_by_end(end) else None,
            "answered_by": self.answered_by if self.answered_by_end(end) else None,
            "closed_reason": self.closed_reason if self.answered_by_end(end) else None,
            "assignee": self.assignee, "acknowledgement": self.ack_status,
            "message_id": self.message_id,
        }


@dataclass
class CaseMessage:
    at: datetime
    direction: str  # in | out
    role: str  # petition | follow-up | duplicate | acknowledgement | report | answer | auto-reply
    queue_id: str
    sender: str
    recipients: list[str]
    subject: str
    message_id: str
    login: str | None
    archive: list[int] = field(default_factory=list)  # entries: `relay archive show SEQ`

    def as_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "direction": self.direction, "role": self.role,
                "queue_id": self.queue_id, "sender": self.sender,
                "recipients": self.recipients, "subject": self.subject,
                "message_id": self.message_id, "login": self.login,
                "archive_entries": self.archive}


@dataclass
class CaseEvent:
    at: datetime
    actor: str
    action: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "actor": self.actor, "action": self.action,
                "detail": self.detail}


@dataclass
class CaseDetail:
    case: Case
    messages: list[CaseMessage]
    events: list[CaseEvent]

    def as_dict(self, as_of: date, end: datetime) -> dict[str, Any]:
        return {**self.case.as_dict(as_of, end),
                "messages": [m.as_dict() for m in self.messages],
                "events": [e.as_dict() for e in self.events]}


@dataclass
class ReportRow:
    """One intake mailbox in the report to the competent authority, as of a day."""

    mailbox: str
    received: int = 0
    answered_on_time: int = 0
    answered_late: int = 0
    open: int = 0
    overdue: int = 0

    FIELDS = ("mailbox", "received", "answered_on_time", "answered_late", "open", "overdue")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

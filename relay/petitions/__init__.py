"""Citizen petitions at the intake mailboxes, tracked to an answer (Điều 8).

Whoever holds a citizen-intake mailbox (`tiepdan@`, `tiepdan.<agency>@`) must report a
citizen's petition to the competent authority and answer the citizen; the Law on
Citizen Reception gives a number of working days to do so. This package records it:

- a message from outside `server.local_domains` accepted for an intake mailbox opens a
  case numbered `TD-{year}-{seq:06d}` (`numbers`, numbers taken in the shared
  database so nodes never collide), with a deadline in working days (`workdays`:
  weekends and `holidays` skipped, rules with a valid-from date); the citizen gets
  an acknowledgement carrying the number (`notices`), archived and then queued
  (`relay serve`) or submitted (`relay milter`) (`outbox`); never to the null sender,
  a list, an auto-reply (RFC 3834), nor more than `acknowledge_limit` a day (`signals`);
- a message from the intake mailbox to the citizen that carries the number (Subject) or
  references the citizen's message or the acknowledgement answers the case; one to
  an official mailbox reports it (`store.PetitionStore.send`);
- `relay petitions` (relay/cli/petitions.py) lists, shows, assigns, closes, reports and
  reminds; `gauges` gives Prometheus the open and overdue counts.

The hook: `service.Petitions.on_accepted(tx, body, spool, on_queued)`, called by
`relay.transaction.Conversation` after a message is accepted, on both fronts.

The query API (for the CLI and the web console), all synchronous SQL on
`PetitionStore` (`store.PetitionStore.open(config, migrate=False)` for a reader):

    store.cases(CaseFilter(status="overdue", mailboxes=[...], as_of=date(...),
                           after=None, limit=50)) -> list[Case]
        status: open | due (within remind_within working days) | overdue | answered | all,
        as of the end of `as_of` (default today, Asia/Ho_Chi_Minh); oldest first;
        page with after=<last case.id>. Case.as_dict(as_of, calendar.day_end(as_of))
        is the JSON of `relay petitions list`.
    store.case("TD-2026-000001") -> CaseDetail | None
        the case, its messages (direction, role, sender, subject, archive entry seqs:
        read a message only through the archive, which logs the access) and history.
    store.report(as_of=date(...), since=None, mailboxes=None) -> list[ReportRow]
        per mailbox: received, answered_on_time, answered_late, open, overdue.
    store.counts() -> {mailbox: (open, overdue)};  store.due(as_of) -> {mailbox: [Case]}
    store.assign(number, to, actor) / store.close_case(number, reason, actor) -> Case
        (PetitionError when refused; actor e.g. "web:username").

Every text field of a case (subject, citizen) is client-supplied: escape it for a
terminal (`relay.cli.common.printable`) or HTML.
"""

from relay.petitions.records import Case, CaseDetail, CaseEvent, CaseMessage, ReportRow
from relay.petitions.service import Petitions
from relay.petitions.store import CaseFilter, PetitionError, PetitionStore

__all__ = ["Case", "CaseDetail", "CaseEvent", "CaseFilter", "CaseMessage", "PetitionError",
           "PetitionStore", "Petitions", "ReportRow"]

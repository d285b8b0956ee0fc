"""Petitions (Điều 8): the officer's read-only register of cases.

A `petitions` user sees the cases of the mailboxes assigned to them (none assigned:
none shown); an `admin` sees every mailbox. The list is the `relay petitions list`
query (`PetitionStore.cases`), by status as of today in Asia/Ho_Chi_Minh, oldest first,
paged by case id. Cases are read from the petitions tables only, never from the archive
(a petitions user never opens archive entries). Subjects and addresses are the
citizen's text: shown on one line without controls, and escaped by the templates.
"""

from __future__ import annotations

import threading

from starlette.responses import Response

from relay.petitions import CaseFilter, PetitionError, PetitionStore
from relay.web.frame import Ctx, cursor, page
from relay.web.mailview import one_line

STATUSES = ("open", "due", "overdue", "answered", "all")
LABELS = {"open": "Open", "due": "Due soon", "overdue": "Overdue", "answered": "Answered",
          "all": "All"}
_stores: dict[str, PetitionStore] = {}  # one engine per database, for the process's life
_lock = threading.Lock()


def _store(ctx: Ctx) -> PetitionStore:
    config = ctx.config
    key = f"{config.directory_url}|{config.petitions.model_dump_json()}"
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = PetitionStore.open(config, migrate=False)
        return store


@page("petitions")
def cases(ctx: Ctx) -> Response:
    assert ctx.user is not None
    params = ctx.request.query_params
    status = params.get("status", "open")
    if status not in STATUSES:
        status = "open"
    # an officer sees only the mailboxes assigned to them; an administrator all of them
    mailboxes = None if ctx.user.can("admin") else list(ctx.user.mailboxes)
    values = {"title": ctx._("Petitions"), "mailboxes": ctx.user.mailboxes, "chosen": status,
              "statuses": STATUSES, "labels": LABELS, "rows": [], "more": None,
              "unavailable": False}
    if not ctx.config.petitions.enabled:
        values["unavailable"] = True
        return ctx.render("petitions.html", **values)
    after = params.get("after", "")
    size = ctx.config.web.page_size
    try:
        store = _store(ctx)
        today = store.calendar.today()
        end = store.calendar.day_end(today)
        found = [] if mailboxes == [] else store.cases(CaseFilter(
            status=status, mailboxes=mailboxes, as_of=today,
            after=cursor(after),
            limit=size + 1))
    except PetitionError:
        values["unavailable"] = True
        return ctx.render("petitions.html", **values)
    values["more"] = found[size - 1].id if len(found) > size else None
    values["today"] = today
    values["rows"] = [{
        "number": c.number, "status": c.status(today, end), "deadline": c.deadline,
        "received_at": c.received_at, "mailbox": c.mailbox, "citizen": one_line(c.citizen, 80),
        "subject": one_line(c.subject, 200), "assignee": c.assignee or "",
        "reported_to": ", ".join(c.reported_to), "answered_at":
            c.answered_at if c.answered_by_end(end) else None,
    } for c in found[:size]]
    return ctx.render("petitions.html", **values)

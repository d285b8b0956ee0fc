"""Petitions (Điều 8: petitions reaching a citizen-intake mailbox are reported and answered).

PLACEHOLDER: the petitions module (issue 12) does not exist yet. This page shows that,
and the mailboxes the officer is assigned, so that the roles and their access rules
(a `petitions` user never opens archive entries) are in place and tested now. When
the module lands, its list (open, due soon, overdue), case page and report for a date
go here; do not read petitions out of the archive tables.
"""

from __future__ import annotations

from starlette.responses import Response

from relay.web.frame import Ctx, page


@page("petitions")
def placeholder(ctx: Ctx) -> Response:
    assert ctx.user is not None
    return ctx.render("petitions.html", title=ctx._("Petitions"),
                      mailboxes=ctx.user.mailboxes)

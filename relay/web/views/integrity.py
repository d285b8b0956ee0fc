"""The archive's integrity: the last `verify` and its progress, and a button to run one."""

from __future__ import annotations

import re

from starlette.responses import Response

from relay.web import i18n
from relay.web.frame import Ctx, page
from relay.web.integrity import report_of
from relay.web.mailview import one_line


@page("archive")
def status(ctx: Ctx) -> Response:
    verifier = ctx.console.verifier
    latest = verifier.latest()
    running = verifier.is_running(latest)
    finished = verifier.latest_finished() if running else latest
    interrupted = latest is not None and latest["state"] == "running" and not running
    report = report_of(finished)
    first_bad = report.get("first_bad") or None
    if first_bad:
        # verify's message starts "entry #N: "; the page shows #N as a link instead
        message = re.sub(r"^(access-log )?entry #\d+: ", "", str(first_bad.get("message", "")))
        first_bad = {"seq": first_bad.get("seq"), "chain": first_bad.get("chain"),
                     "message": one_line(message, 500)}
    return ctx.render(
        "integrity.html", title=ctx._("Archive integrity"), running=running,
        interrupted=interrupted, latest=latest, finished=finished, report=report,
        first_bad=first_bad, busy=ctx.request.query_params.get("busy") == "1",
        problems=[{"seq": p.get("seq"), "chain": p.get("chain"),
                   "message": one_line(str(p.get("message", "")), 300)}
                  for p in report.get("problems", []) if isinstance(p, dict)],
        refresh=2 if running else None, local=i18n.local)


@page("archive")
def run(ctx: Ctx) -> Response:
    assert ctx.user is not None
    started = ctx.console.verifier.start(ctx.user.username)
    return ctx.redirect("/integrity" if started is not None else "/integrity?busy=1")

"""The auditor's pages: search, one entry, its original bytes, the access log.

Reading an entry (its page or its .eml) appends to the archive's access log first,
with the web user as the actor and the reason given for the session; the message
is parsed for display in a child process (`mailview.render_isolated`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from relay.archive import ArchiveError, chain
from relay.archive.browse import Browse, browse, recipients
from relay.web import i18n
from relay.web.frame import Ctx, cursor, page
from relay.web.mailview import RenderTimeout, one_line, render_isolated
from relay.web.views.account import need_reason

DIRECTIONS = ("", "in", "out")


def actor(ctx: Ctx) -> str:
    assert ctx.user is not None
    return f"web:{ctx.user.username}"


@page("archive")
def search(ctx: Ctx) -> Response:
    params = ctx.request.query_params
    form = {name: params.get(name, "")[:320] for name in
            ("q", "mailbox", "direction", "since", "until")}
    if form["direction"] not in DIRECTIONS:
        form["direction"] = ""
    errors = []
    query = Browse(q=form["q"], mailbox=form["mailbox"], direction=form["direction"],
                   limit=ctx.config.web.page_size + 1)
    for name in ("since", "until"):
        if form[name]:
            try:
                start = i18n.day_start_utc(form[name])
            except ValueError:
                errors.append(f"{ctx._('Not a date:')} {one_line(form[name], 40)}")
                continue
            if name == "since":
                query.since = start
            else:  # the whole day typed is included
                from datetime import timedelta

                query.until = start + timedelta(days=1)
    query.before = cursor(params.get("before", ""))
    searched = any(form.values()) or query.before is not None
    rows = browse(ctx.archive, query) if not errors else []
    more = len(rows) > ctx.config.web.page_size
    rows = rows[:ctx.config.web.page_size]
    older = None
    if more and rows:
        older = "/archive?" + urlencode({**{k: v for k, v in form.items() if v},
                                         "before": rows[-1]["seq"]})
    return ctx.render("search.html", title=ctx._("Search the archive"), form=form,
                      rows=[_row(r) for r in rows], errors=errors, searched=searched,
                      older=older)


def _row(row: Any) -> dict[str, Any]:
    return {"seq": row["seq"], "recorded": i18n.short(row["recorded_at"]),
            "mailbox": row["mailbox"], "direction": row["direction"],
            "sender": one_line(row["sender"] or "<>", 320),
            "recipients": one_line(", ".join(recipients(row)), 500),
            "subject": one_line(row["subject"] or "", 300),
            "purged": row["purged_at"] is not None}


def _entry_or_404(ctx: Ctx) -> Any:
    seq = ctx.request.path_params["seq"]
    return ctx.archive.get(seq) if 0 < seq < 2**62 else None


@page("archive")
def entry(ctx: Ctx) -> Response:
    if (redirect := need_reason(ctx)) is not None:
        return redirect
    row = _entry_or_404(ctx)
    if row is None:
        return ctx.error(404, "Not found", "There is no such page or entry.")
    assert ctx.session is not None
    ctx.archive.log_access(actor(ctx), "show", {"entry": row["seq"], "version": "delivered",
                                                "via": "web"}, ctx.session.reason)
    meta = _meta(row)
    view: dict[str, Any] = {"row": _row(row), "seq": row["seq"],
                            "recorded": i18n.local(row["recorded_at"]),
                            "kind": row["kind"], "entry_hash": row["entry_hash"],
                            "size": row["delivered_size"], "meta": meta,
                            "converted": row["accepted_hash"] != row["delivered_hash"],
                            "message": None, "problem": None}
    if row["purged_at"] is None:
        try:
            raw = ctx.archive.read_blob(row["delivered_hash"], int(row["delivered_size"]))
            view["message"] = render_isolated(raw, ctx.config.web.render_timeout)
        except (ArchiveError, RenderTimeout) as exc:
            view["problem"] = one_line(str(exc), 300)
    headers: dict[str, str] = {}
    for name, value in view["message"].headers if view["message"] else []:
        headers.setdefault(name, value)  # the first of a repeated field, as mail readers do
    return ctx.render("entry.html", title=f"{ctx._('Entry')} #{row['seq']}", headers=headers,
                      **view)


def _meta(row: Any) -> dict[str, Any]:
    try:
        meta = json.loads(row["meta"])
    except ValueError:
        return {}
    if not isinstance(meta, dict):
        return {}
    client = meta.get("client") if isinstance(meta.get("client"), dict) else {}
    decisions = [d for d in meta.get("decisions") or [] if isinstance(d, dict)]
    return {
        "client_ip": one_line(str(client.get("ip") or ""), 64),
        "helo": one_line(str(client.get("helo") or ""), 255),
        "tls": bool(client.get("tls")),
        "auth_login": one_line(str(meta.get("auth_login") or ""), 320),
        "conversions": [one_line(str(c), 200) for c in meta.get("conversions") or []],
        "decisions": [{k: one_line(str(d.get(k) or ""), 500) for k in
                       ("policy", "code", "action", "article", "recipient", "vi", "en")}
                      for d in decisions[:100]],
    }


@page("archive")
def download(ctx: Ctx) -> Response:
    if (redirect := need_reason(ctx)) is not None:
        return redirect
    row = _entry_or_404(ctx)
    if row is None or row["purged_at"] is not None:
        return ctx.error(404, "Not found", "There is no such page or entry.")
    which = "accepted" if ctx.request.query_params.get("version") == "accepted" \
        else "delivered"
    assert ctx.session is not None
    ctx.archive.log_access(actor(ctx), "download", {"entry": row["seq"], "version": which,
                                                    "via": "web"}, ctx.session.reason)
    try:
        data = ctx.archive.read_blob(row[f"{which}_hash"], int(row[f"{which}_size"]))
    except ArchiveError as exc:
        return ctx.error(500, "Not found", one_line(str(exc), 300))
    name = f"entry-{row['seq']}-{which}.eml"
    return Response(data, media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@page("archive")
def access_log(ctx: Ctx) -> Response:
    limit = 200
    rows = []
    for row in reversed(ctx.archive.access_log(limit)):
        fields = chain.access_fields(row)
        rows.append({"seq": fields["seq"], "at": i18n.local(row["at"]),
                     "who": one_line(fields["who"], 255), "action": fields["action"],
                     "target": one_line(json.dumps(fields["target"], ensure_ascii=False), 300),
                     "reason": one_line(fields["reason"], 300)})
    return ctx.render("access_log.html", title=ctx._("Access log"), rows=rows,
                      limited=len(rows) >= limit)

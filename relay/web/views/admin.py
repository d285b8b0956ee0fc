"""The administrator's pages: web users (disable, enable, unlock) and the relay's health."""

from __future__ import annotations

from starlette.responses import Response

from relay.web import health as health_checks
from relay.web import i18n
from relay.web.accounts import AccountError
from relay.web.frame import Ctx, page
from relay.web.schema import now

ACTIONS = ("disable", "enable", "unlock")


@page("admin")
def users(ctx: Ctx) -> Response:
    at = now()
    return ctx.render("users.html", title=ctx._("Web users"),
                      users=ctx.console.accounts.users(), now=at)


@page("admin")
def user_action(ctx: Ctx) -> Response:
    name = ctx.request.path_params["name"]
    action = ctx.request.path_params["action"]
    accounts = ctx.console.accounts
    assert ctx.user is not None
    if action not in ACTIONS:
        return ctx.error(404, "Not found", "There is no such page or entry.")
    if action == "disable" and name == ctx.user.username:
        return ctx.error(403, "Not allowed", "Your role does not allow this page.")
    try:
        if action == "unlock":
            accounts.unlock(name)
        else:
            accounts.set_enabled(name, action == "enable")
    except AccountError:
        return ctx.error(404, "Not found", "There is no such page or entry.")
    return ctx.redirect("/admin/users")


@page("admin")
async def health(ctx: Ctx) -> Response:
    result = await health_checks.check(ctx.config, ctx.archive)
    return ctx.render("health.html", title=ctx._("Relay health"), h=result,
                      age=lambda s: i18n.age(s, ctx.lang))

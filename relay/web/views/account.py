"""Login, logout, language, the home redirect, and the reason an auditor gives once."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from relay.web import i18n
from relay.web.frame import LANG_COOKIE, Ctx, page, safe_next
from relay.web.mailview import one_line

MAX_REASON = 300
MAX_PASSWORD = 1024  # argon2 hashes anything; a megabyte "password" is only a cost


def home_of(ctx: Ctx) -> str:
    user = ctx.user
    if user is None:
        return "/login"
    return "/archive" if user.can("archive") else "/petitions"


@page("any")
def home(ctx: Ctx) -> Response:
    return ctx.redirect(home_of(ctx))


@page(None)
def login_form(ctx: Ctx) -> Response:
    target = safe_next(ctx.request.query_params.get("next"))
    if ctx.user is not None:
        return ctx.redirect(target if target != "/" else home_of(ctx))
    expired = ctx.request.query_params.get("expired") == "1"
    return ctx.render("login.html", title=ctx._("Sign in"), next=target, error=None,
                      expired=expired, username="")


@page(None)
def login(ctx: Ctx) -> Response:
    target = safe_next(ctx.form.get("next"))
    username = ctx.form.get("username", "").strip().lower()[:64]
    password = ctx.form.get("password", "")[:MAX_PASSWORD]
    settings = ctx.config.web
    with ctx.console.login_gate:
        user = ctx.console.accounts.authenticate(username, password, settings.max_failures,
                                                 settings.lockout)
    if user is None:
        return ctx.render("login.html", status=401, title=ctx._("Sign in"), next=target,
                          expired=False, username=one_line(username, 64),
                          error=ctx._("Wrong user name or password, or the account is locked "
                                      "for a while."))
    assert ctx.session is not None
    ctx.session = ctx.session.signed_in(user.username, user.session_epoch)
    ctx.user = user
    return ctx.redirect(target if target != "/" else home_of(ctx))


@page("any")
def logout(ctx: Ctx) -> Response:
    assert ctx.user is not None
    ctx.console.accounts.end_sessions(ctx.user.username)
    ctx.session = None
    return ctx.redirect("/login")


async def language(request: Request) -> Response:
    """A preference, not an action on anything: a plain link sets it."""
    code = request.path_params["code"]
    response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, path="/",
                            httponly=True, samesite="lax",
                            secure=request.url.scheme == "https")
    return response


@page("archive")
def reason_form(ctx: Ctx) -> Response:
    assert ctx.session is not None
    return ctx.render("reason.html", title=ctx._("Reason for access"),
                      next=safe_next(ctx.request.query_params.get("next")),
                      reason=ctx.session.reason, error=None)


@page("archive")
def reason(ctx: Ctx) -> Response:
    assert ctx.session is not None
    text = one_line(ctx.form.get("reason", "").strip(), MAX_REASON)
    target = safe_next(ctx.form.get("next"))
    if not text:
        return ctx.render("reason.html", status=400, title=ctx._("Reason for access"),
                          next=target, reason="", error=ctx._("A reason is required."))
    ctx.session = ctx.session.with_reason(text)
    return ctx.redirect(target if target != "/" else "/archive")


def need_reason(ctx: Ctx) -> Response | None:
    """Before an entry is read: the redirect to the reason form, if none was given yet."""
    assert ctx.session is not None
    if ctx.session.reason:
        return None
    here = ctx.request.url.path + (f"?{ctx.request.url.query}" if ctx.request.url.query else "")
    return ctx.redirect(f"/reason?next={quote(safe_next(here), safe='')}")

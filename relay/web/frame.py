"""What every page shares: the signed-in user, CSRF, language, templates, headers.

A page is a plain function `(Ctx) -> Response` run in a worker thread (it may wait
on the database), wrapped by `page(permission)`, which refuses anonymous requests
(a redirect to the login page for a browser, 401 otherwise), pages the user's role
does not allow (403), and any POST whose CSRF token is not the session's.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.archive import Archive
from relay.config import Config
from relay.web import i18n
from relay.web.accounts import Accounts, WebUser
from relay.web.integrity import Verifier
from relay.web.sessions import COOKIE, Session, SessionCodec

log = logging.getLogger("relay.web")

LANG_COOKIE = "relay_lang"
MAX_FORM = 16 * 1024  # bytes: our forms are a few short fields
MAX_FIELDS = 20
LOGIN_PAGE = "/login"

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; frame-src 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
]


class SecurityHeaders:
    """Strict headers on every response, also on errors Starlette writes itself: a CSP
    without inline script (the console uses no script at all), no framing, no sniffing,
    no referrer, nothing cached but the stylesheet; HSTS when served over HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"cache-control", b"server")]
                headers += SECURITY_HEADERS
                headers.append((b"cache-control",
                                b"public, max-age=3600" if static else b"no-store"))
                if https:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class Console:
    """The state of one running console; `reload` swaps in a new configuration."""

    config: Config
    archive: Archive
    accounts: Accounts
    codec: SessionCodec
    verifier: Verifier
    templates: jinja2.Environment
    # argon2 takes 64 MiB per check: a flood of logins must not take all memory
    login_gate: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(2))

    def reload(self, config: Config) -> None:
        self.codec.timeout = config.web.session_timeout
        self.codec.lifetime = config.web.session_lifetime
        self.config = config


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("relay.web", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(local=i18n.local, ZONE=i18n.ZONE_NAME)
    return env


def safe_next(value: str | None) -> str:
    """Only a path on this site: never `//host`, a scheme, a backslash or a control."""
    if not value or len(value) > 1000 or not value.startswith("/") or \
            value.startswith(("//", "/\\")) or any(c in value for c in "\\\r\n\t\0"):
        return "/"
    return value


def cursor(value: str) -> int | None:
    """A paging cursor from the query string: ASCII digits that fit a BIGINT, else none
    (str.isdigit() also takes '²', which int() refuses)."""
    return int(value) if _CURSOR.fullmatch(value) else None


_CURSOR = re.compile(r"[0-9]{1,18}")


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


@dataclass
class Ctx:
    request: Request
    console: Console
    session: Session | None
    user: WebUser | None
    lang: str
    form: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return self.console.config

    @property
    def archive(self) -> Archive:
        return self.console.archive

    def _(self, text: str) -> str:
        return i18n.translate(text, self.lang)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        page = self.console.templates.get_template(template).render(
            _=self._, lang=self.lang, user=self.user, session=self.session,
            csrf=self.session.csrf if self.session else "",
            path=self.request.url.path, here=quote(self._here(), safe="/?=&"),
            refresh=values.pop("refresh", None), **values)
        return HTMLResponse(page, status_code=status)

    def _here(self) -> str:
        query = self.request.url.query
        return self.request.url.path + (f"?{query}" if query else "")

    def error(self, status: int, title: str, text: str) -> HTMLResponse:
        return self.render("error.html", status=status, title=self._(title), text=self._(text))

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)


Handler = Callable[[Ctx], Response] | Callable[[Ctx], Awaitable[Response]]


async def read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form of at most MAX_FORM bytes; None when it is not one."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def page(permission: str | None = "any") -> Callable[[Handler], Callable[
        [Request], Awaitable[Response]]]:
    """`permission`: None for the login page, "any" for any signed-in user, else one of
    the role permissions (`archive`, `petitions`, `admin`)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            console: Console = request.app.state.console
            lang = request.cookies.get(LANG_COOKIE, "")
            if lang not in i18n.LANGUAGES:
                lang = console.config.web.language
            session = console.codec.loads(request.cookies.get(COOKIE))
            had_user = session is not None and session.user is not None
            user = None
            if session is not None and session.user is not None:
                user = await run_in_threadpool(console.accounts.get, session.user)
                if user is None or not user.enabled or user.session_epoch != session.epoch:
                    user, session = None, None  # logged out, disabled or new password
            ctx = Ctx(request, console, session or Session(), user, lang)
            if permission is not None:
                if user is None:
                    return _anonymous(request, expired=had_user or COOKIE in request.cookies)
                if permission != "any" and not user.can(permission):
                    return _finish(ctx, ctx.error(403, "Not allowed",
                                                  "Your role does not allow this page."))
            if request.method == "POST":
                form = await read_form(request)
                assert ctx.session is not None
                if form is None:
                    return PlainTextResponse("expected a short urlencoded form", 400)
                if not hmac.compare_digest(form.get("csrf", "").encode(),
                                           ctx.session.csrf.encode()):
                    return _finish(ctx, ctx.error(403, "Not allowed",
                                                  "The form has expired. Please try again."))
                ctx.form = form
            if inspect.iscoroutinefunction(handler):
                response = await handler(ctx)
            else:
                response = await run_in_threadpool(handler, ctx)
            return _finish(ctx, response)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _anonymous(request: Request, expired: bool) -> Response:
    if not wants_html(request):
        return PlainTextResponse("authentication required", 401,
                                 headers={"www-authenticate": 'Cookie realm="relay web"'})
    target = quote(safe_next(request.url.path + (f"?{request.url.query}"
                                                  if request.url.query else "")), safe="")
    suffix = "&expired=1" if expired else ""
    return RedirectResponse(f"{LOGIN_PAGE}?next={target}{suffix}", status_code=303)


def _finish(ctx: Ctx, response: Response) -> Response:
    """Re-sign the session cookie (its timestamp is the last use), or remove it."""
    https = ctx.request.url.scheme == "https"
    if ctx.session is None:
        response.delete_cookie(COOKIE, path="/", secure=https, httponly=True, samesite="lax")
    else:
        response.set_cookie(COOKIE, ctx.console.codec.dumps(ctx.session), path="/",
                            secure=https, httponly=True, samesite="lax")
    return response


__all__ = ["Console", "Ctx", "SecurityHeaders", "make_templates", "page",
           "safe_next"]

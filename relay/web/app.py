"""The console as an ASGI application: its routes, and the state they share."""

from __future__ import annotations

from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from relay.archive import Archive
from relay.config import Config
from relay.web import schema
from relay.web.accounts import Accounts
from relay.web.frame import Console, SecurityHeaders, make_templates
from relay.web.integrity import Verifier
from relay.web.sessions import SessionCodec
from relay.web.views import account, admin, archive, integrity, petitions

STYLE = files("relay.web").joinpath("static/style.css").read_bytes()


async def stylesheet(_request: Request) -> Response:
    return Response(STYLE, media_type="text/css")


async def not_found(_request: Request, _exc: Exception) -> Response:
    return PlainTextResponse("not found", 404)


def routes() -> list[Route]:
    return [
        Route("/", account.home),
        Route("/login", account.login_form, methods=["GET"]),
        Route("/login", account.login, methods=["POST"]),
        Route("/logout", account.logout, methods=["POST"]),
        Route("/lang/{code}", account.language),
        Route("/reason", account.reason_form, methods=["GET"]),
        Route("/reason", account.reason, methods=["POST"]),
        Route("/archive", archive.search),
        Route("/archive/{seq:int}", archive.entry),
        Route("/archive/{seq:int}/eml", archive.download),
        Route("/access-log", archive.access_log),
        Route("/integrity", integrity.status, methods=["GET"]),
        Route("/integrity/run", integrity.run, methods=["POST"]),
        Route("/petitions", petitions.cases),
        Route("/admin/users", admin.users),
        Route("/admin/users/{name}/{action}", admin.user_action, methods=["POST"]),
        Route("/admin/health", admin.health),
        Route("/static/style.css", stylesheet),
    ]


def open_console(config: Config) -> Console:
    """The archive and the web tables on the relay's database, migrated if needed."""
    archive = Archive.open(config, migrate=True)
    schema.migrate(archive.db)
    accounts = Accounts(archive.db)
    codec = SessionCodec(accounts.secret(), config.web.session_timeout,
                         config.web.session_lifetime)
    return Console(config=config, archive=archive, accounts=accounts, codec=codec,
                   verifier=Verifier(archive, config.server.hostname),
                   templates=make_templates())


def build(console: Console) -> SecurityHeaders:
    app = Starlette(routes=routes(), exception_handlers={404: not_found})
    app.state.console = console
    return SecurityHeaders(app)

"""The SMTP front: aiosmtpd listeners that feed the engine and the spool.

What aiosmtpd leaves to us (DESIGN.md, Known pitfalls) is done here: a cap on
connections, call limits on NOOP/RSET and friends, a DATA deadline, address
validation (the engine's), bare CR/LF refused, AUTH only over TLS (also on the
implicit-TLS listener, where aiosmtpd #281 would refuse it), and `250` only
after the spool has fsynced the message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from relay.config import Config, ListenerConfig
from relay.decisionlog import DecisionLog, record
from relay.engine import Engine
from relay.metrics import CONNECTIONS, REFUSED_CONNECTIONS
from relay.model import Reply, Transaction
from relay.spool import Envelope as QueuedEnvelope
from relay.spool import Spool

log = logging.getLogger(__name__)

TOO_BUSY = "421 4.7.0 Quá nhiều kết nối, xin thử lại sau / Too many connections, try later"
QUEUE_ERROR = "451 4.3.0 Không ghi được thư vào hàng đợi / Queue write failed, try again later"
AUTH_REQUIRED = ("530 5.7.0 Cần đăng nhập trước khi gửi (Điều 5.1) / "
                 "Authentication required (Article 5.1)")
BARE_NEWLINE = ("554 5.6.0 Thư có ký tự CR hoặc LF đơn lẻ; dòng phải kết thúc bằng CRLF / "
                "Bare CR or LF in message; lines must end with CRLF")


_SIZE_PARAM = re.compile(r"\sSIZE=(\d{1,20})\b", re.IGNORECASE)


class Authenticator(Protocol):
    async def authenticate(self, login: str, password: str, client_ip: str) -> bool: ...


class Hub:
    """What every session shares: the current engine (swapped on reload), spool, logs."""

    def __init__(self, config: Config, engine: Engine, spool: Spool, decisions: DecisionLog,
                 services: dict[str, Any], on_queued: Callable[[str], None]) -> None:
        self.config = config
        self.engine = engine
        self.spool = spool
        self.decisions = decisions
        self.services = services
        self.on_queued = on_queued
        self.connections = 0

    def reconfigure(self, config: Config, engine: Engine, services: dict[str, Any]) -> None:
        self.config, self.engine, self.services = config, engine, services


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with our session limits and async AUTH against the directory."""

    def __init__(self, hub: Hub, name: str, listener: ListenerConfig,
                 tls_context: ssl.SSLContext | None, implicit_tls: bool) -> None:
        self.hub = hub
        self.listener_name = name
        self.listener_kind = listener.kind
        self.implicit_tls = implicit_tls
        server = hub.config.server
        limit = server.max_noop
        super().__init__(
            Handler(),
            data_size_limit=server.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=server.hostname,
            ident="ESMTP",
            tls_context=None if implicit_tls else tls_context,
            timeout=server.idle_timeout,
            # aiosmtpd #281: on implicit TLS it never sees a STARTTLS, so it would refuse AUTH
            auth_require_tls=not implicit_tls,
            authenticator=self._capture_credentials,
            command_call_limit={"NOOP": limit, "RSET": limit, "VRFY": 5, "EXPN": 5,
                                "HELP": 5, "HELO": limit, "EHLO": limit, "STARTTLS": 2,
                                "AUTH": limit, "*": 100_000},
        )
        self._credentials: LoginPassword | None = None
        self.tx: Transaction | None = None

    # --- connection ---------------------------------------------------------------
    async def _handle_client(self) -> None:
        hub = self.hub
        peer = self.session.peer if self.session else None
        ip, port = (peer[0], peer[1]) if isinstance(peer, tuple) else ("127.0.0.1", 0)
        self.tx = Transaction(
            listener=self.listener_name, listener_kind=self.listener_kind, client_ip=ip,
            client_port=port, tls=self.implicit_tls, trusted=hub.config.is_trusted(ip),
        )
        assert self.session is not None
        self.session.tx = self.tx  # type: ignore[attr-defined]
        if hub.connections >= hub.config.server.max_connections:
            log.warning("%s: refusing %s: %d connections open", self.listener_name, ip,
                        hub.connections)
            REFUSED_CONNECTIONS.inc()
            await self.push(TOO_BUSY)
            assert self.transport is not None
            self.transport.close()
            return
        hub.connections += 1
        CONNECTIONS.inc()
        try:
            reply = await hub.engine.connect(self.tx)
            if reply is not None:
                await self.push(reply.render(utf8=False))
                assert self.transport is not None
                self.transport.close()
                return
            await super()._handle_client()
        finally:
            hub.connections -= 1
            CONNECTIONS.dec()
            self.finish_transaction()

    def finish_transaction(self) -> None:
        """Write the decision-log line of a transaction that ended without DATA."""
        tx = self.tx
        if tx is None or tx.cache.get("logged") or not (tx.mail_from or tx.decisions
                                                         or tx.rcpt_to):
            return
        last = tx.cache.get("last_reply", "")
        if tx.rcpt_to or not last:
            action = "abandoned"  # the client went away or reset before DATA
        else:
            action = "tempfail" if last.startswith("4") else "reject"
        self.log_decision(action, last)

    def log_decision(self, action: str, reply: Reply | str, size: int | None = None) -> None:
        """The transaction's one line in the decision log."""
        assert self.tx is not None
        self.hub.decisions.write(record(self.tx, action, reply, size))
        self.tx.cache["logged"] = True

    async def smtp_MAIL(self, arg: str | None) -> None:
        # aiosmtpd answers an oversized SIZE= itself, in English and without an enhanced code
        limit = self.hub.config.server.max_message_size
        m = _SIZE_PARAM.search(arg or "")
        if m and int(m.group(1)) > limit:
            await self.push(Reply(552, "5.3.4", (
                f"Thư quá lớn: giới hạn {limit} byte (Điều 5.1)",
                f"Message too large: limit {limit} bytes (Article 5.1)",
            )).render(utf8=False))
            return
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        # the idle timeout would cut a large message; a slow one gets data_timeout in all
        self._reset_timeout(self.hub.config.server.data_timeout)
        await super().smtp_DATA(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        if self.tx is not None and self._tls_protocol is not None:
            self.tx.tls = True

    # --- AUTH: aiosmtpd calls the authenticator synchronously; we check asynchronously
    def _capture_credentials(self, server: SMTP, session: Session, envelope: Envelope,
                             mechanism: str, auth_data: Any) -> AuthResult:
        self._credentials = auth_data if isinstance(auth_data, LoginPassword) else None
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_LOGIN(_, args))

    async def _check(self, result: AuthResult) -> AuthResult:
        creds, self._credentials = self._credentials, None
        if creds is None or self.tx is None:
            return result
        authenticator: Authenticator | None = self.hub.services.get("directory")
        login = creds.login.decode("utf-8", "replace").strip().lower()
        password = creds.password.decode("utf-8", "replace")
        ok = authenticator is not None and await authenticator.authenticate(
            login, password, self.tx.client_ip)
        if not ok:
            log.warning("%s: AUTH failed for %r from %s", self.listener_name, login,
                        self.tx.client_ip)
            return AuthResult(success=False, handled=False)
        self.tx.auth_login = login
        log.info("%s: AUTH ok for %r from %s", self.listener_name, login, self.tx.client_ip)
        return AuthResult(success=True, auth_data=creds)


class Handler:
    """aiosmtpd hooks: translate each verb into one engine call."""

    @staticmethod
    def _tx(server: SMTP) -> tuple[RelaySMTP, Transaction]:
        assert isinstance(server, RelaySMTP) and server.tx is not None
        return server, server.tx

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        relay, tx = self._tx(server)
        tx.helo = hostname
        session.host_name = hostname
        if relay.listener_kind == "mx":  # an MX takes mail, it does not log anyone in
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        _, tx = self._tx(server)
        tx.helo = hostname
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope,
                          args: list[str]) -> Any:
        relay, _ = self._tx(server)
        if relay.listener_kind == "mx":
            return "502 5.5.1 AUTH không dùng ở cổng này / AUTH not available on this port"
        return MISSING  # let aiosmtpd run the mechanism (and our _check)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        relay, tx = self._tx(server)
        relay.finish_transaction()
        tx.reset_envelope()
        tx.tls = tx.tls or session.ssl is not None
        sender = "" if address in ("<>", "") else address
        if (relay.listener_kind != "mx" and not tx.authenticated and not tx.trusted):
            return AUTH_REQUIRED
        tx.mail_options = list(mail_options)
        tx.smtputf8 = any(o.upper() == "SMTPUTF8" for o in mail_options)
        reply = await relay.hub.engine.mail(tx, sender)
        if reply is not None:
            tx.cache["last_reply"] = str(reply)
            tx.mail_from = ""
            return reply.render(tx.smtputf8)
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it non-empty
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        relay, tx = self._tx(server)
        reply = await relay.hub.engine.rcpt(tx, address)
        if reply is not None:
            tx.cache["last_reply"] = str(reply)
            return reply.render(tx.smtputf8)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        relay, tx = self._tx(server)
        relay.finish_transaction()
        tx.reset_envelope()
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        relay, tx = self._tx(server)
        hub = relay.hub
        raw = envelope.original_content or b""
        crlf = raw.count(b"\r\n")
        if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
            relay.log_decision("reject", BARE_NEWLINE, len(raw))
            return BARE_NEWLINE
        verdict = await hub.engine.data(tx, raw)
        if verdict.action != "accept":
            relay.log_decision(verdict.action, verdict.reply, len(raw))
            return verdict.reply.render(tx.smtputf8)
        data = received_header(hub.config, tx) + verdict.data
        queued = QueuedEnvelope(
            queue_id=tx.queue_id, sender=tx.mail_from, recipients=list(tx.rcpt_to),
            client_ip=tx.client_ip, listener=tx.listener, auth_login=tx.auth_login,
        )
        try:
            archive = hub.services.get("archive")
            if archive is None:
                await hub.spool.put(queued, data)
            else:
                # Điều 8: never delivered unarchived. The queue file is written while the
                # archive commits, and enters the queue only once the archive has it.
                written = asyncio.ensure_future(hub.spool.prepare(queued, data))
                try:
                    await archive.record(tx, raw, data)
                finally:
                    await asyncio.wait([written])
                written.result()
                await hub.spool.commit(tx.queue_id)
        except Exception:
            hub.spool.abort(tx.queue_id)
            log.exception("queue %s: could not be written", tx.queue_id)
            relay.log_decision("tempfail", QUEUE_ERROR, len(raw))
            return QUEUE_ERROR
        relay.log_decision("accept", verdict.reply, len(raw))
        log.info("queue %s: from=<%s> to=%s size=%d client=%s", tx.queue_id, tx.mail_from,
                 ",".join(tx.rcpt_to), len(data), tx.client_ip)
        hub.on_queued(tx.queue_id)
        return verdict.reply.render(tx.smtputf8)


def received_header(config: Config, tx: Transaction) -> bytes:
    """RFC 5321 4.4 trace field; ESMTPSA = TLS + AUTH (RFC 3848)."""
    proto = "ESMTP" + ("S" if tx.tls else "") + ("A" if tx.authenticated else "")
    if tx.smtputf8:
        proto = "UTF8" + proto.removeprefix("E")
    helo = "".join(c for c in tx.helo if c.isprintable() and c not in "()\\")[:128] or "unknown"
    rcpt = f"\r\n\tfor <{tx.rcpt_to[0]}>" if len(tx.rcpt_to) == 1 else ""
    return (
        f"Received: from {helo} ([{tx.client_ip}])\r\n\tby {config.server.hostname} "
        f"(dienbien-relay) with {proto} id {tx.queue_id}{rcpt};\r\n\t"
        f"{email.utils.formatdate(localtime=False)}\r\n"
    ).encode("utf-8", "replace")


async def start_listeners(hub: Hub, tls_context: ssl.SSLContext) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    for name, listener in hub.config.listeners.items():
        implicit = listener.kind == "smtps"

        def factory(name: str = name, listener: ListenerConfig = listener,
                    implicit: bool = implicit) -> RelaySMTP:
            return RelaySMTP(hub, name, listener, tls_context, implicit)

        host, port = listener.bind
        server = await loop.create_server(
            factory, host=host, port=port, ssl=tls_context if implicit else None,
            reuse_address=True,
        )
        servers.append(server)
        log.info("listening on %s:%d (%s, %s)", host, port, name, listener.kind)
    return servers

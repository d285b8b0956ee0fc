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
import socket
import ssl
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from relay.body import Body
from relay.config import Config, ListenerConfig
from relay.message import MAX_HEADER_BYTES
from relay.metrics import CONNECTIONS, REFUSED_CONNECTIONS, batched_counter
from relay.model import Outcome, Reply, Transaction, safe_line
from relay.smtpdata import END, DataStream, MsaHeaders
from relay.transaction import Conversation, Hub

log = logging.getLogger(__name__)

AUTH_REQUIRED = Reply(530, "5.7.0", ("Cần đăng nhập trước khi gửi (Điều 5.1)",
                                     "Authentication required (Article 5.1)"))
NO_AUTH_HERE = Reply(502, "5.5.1", ("Không dùng AUTH ở cổng này",
                                    "AUTH not available on this port"))
BARE_NEWLINE = Reply(554, "5.6.0", (
    "Thư có ký tự CR hoặc LF đơn lẻ; dòng phải kết thúc bằng CRLF",
    "Bare CR or LF in message; lines must end with CRLF"))


class Authenticator(Protocol):
    async def authenticate(self, login: str, password: str, client_ip: str) -> bool: ...


class RelaySession(Session):
    """aiosmtpd's Session, quiet on AUTH: after every successful AUTH aiosmtpd 1.4.6 sets
    its deprecated `login_data` itself, and that property's setter logs "Session.login_data
    is deprecated" (issue 10, item 12). A plain attribute here shadows the property;
    we read `auth_data` (via our own credentials capture), never `login_data`."""

    login_data: Any = None


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with our session limits and async AUTH against the directory."""

    def __init__(self, hub: Hub, name: str, listener: ListenerConfig,
                 tls_context: ssl.SSLContext | None, implicit_tls: bool) -> None:
        self.hub = hub
        self.listener_name = name
        self.listener_kind = listener.kind
        self.implicit_tls = implicit_tls
        server = hub.runtime.config.server
        limit = server.max_noop
        super().__init__(
            HANDLER,
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
            # aiosmtpd would find the loop under a warnings.catch_warnings() per connection
            loop=asyncio.get_running_loop(),
        )
        self._credentials: LoginPassword | None = None
        self._in_ehlo = False
        self._ehlo_lines: list[str] = []
        self.conversation: Conversation | None = None
        # the idle timer is reset by commands that make progress only (see _reset_timeout)
        self._progress = 0
        self._credited = -1
        self._mails_without_data = 0

    def _create_session(self) -> Session:
        return RelaySession(self.loop)

    # --- connection ---------------------------------------------------------------
    async def _handle_client(self) -> None:
        hub = self.hub
        peer = self.session.peer if self.session else None
        ip, port = (peer[0], peer[1]) if isinstance(peer, tuple) else ("127.0.0.1", 0)
        refusal = await hub.gate.admit(ip)
        if refusal is not None:
            log.warning("%s: refusing %s: %s", self.listener_name, ip, refusal.lines[-1])
            REFUSED_CONNECTIONS.inc()
            await self.push(refusal.render(utf8=False))
            assert self.transport is not None
            self.transport.close()
            return
        try:
            await self._serve(ip, port)
        finally:
            hub.gate.release(ip)

    async def _serve(self, ip: str, port: int) -> None:
        hub, config = self.hub, self.hub.runtime.config
        tx = Transaction(
            listener=self.listener_name, listener_kind=self.listener_kind, client_ip=ip,
            client_port=port, tls=self.implicit_tls, trusted=config.is_trusted(ip),
        )
        self.conversation = conversation = Conversation(hub, tx)
        batched_counter(CONNECTIONS).inc()
        try:
            reply = await conversation.connect()
            if reply is not None:
                await self.push(reply.render(utf8=False))
                assert self.transport is not None
                self.transport.close()
                return
            await super()._handle_client()
        finally:
            batched_counter(CONNECTIONS).dec()
            conversation.close()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd resets the idle timer on every valid command, so NOOP or RSET every few
        minutes held a session (and a connection slot) forever. Here only a command that
        made progress since the last reset does; an explicit duration (DATA) always does."""
        if duration is None and self._progress == self._credited:
            return
        self._credited = self._progress
        super()._reset_timeout(duration)

    async def push(self, status: AnyStr) -> None:
        """Every line the client reads passes here: aiosmtpd echoes command names it does
        not know (`500 Error: command "..." not recognized`), so control characters (and,
        outside SMTPUTF8, anything not ASCII) become `?` before they are sent."""
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if self._in_ehlo and self.listener_kind == "mx" and text[4:].startswith("AUTH"):
            return  # an MX takes mail, it does not log anyone in
        utf8 = self.conversation is not None and self.conversation.tx.smtputf8
        line = "\r\n".join(safe_line(part, utf8) for part in text.split("\r\n"))
        if self._in_ehlo:  # one write for the whole EHLO reply, not one per line
            self._ehlo_lines.append(line)
            return
        await super().push(line)

    def progressed(self) -> None:
        self._progress += 1

    def mail_accepted(self) -> None:
        self._mails_without_data += 1
        if self._mails_without_data <= 20:  # MAIL/RSET loops do not keep a session alive
            self.progressed()

    async def answer(self, reply: Reply) -> str:
        """The rendered reply; after too many errors the connection closes behind it."""
        assert self.conversation is not None
        text = reply.render(self.conversation.tx.smtputf8)
        if self.conversation.closing:
            await self.push(text)
            assert self.transport is not None
            self.transport.close()
        return text

    @property
    def tx(self) -> Transaction:
        assert self.conversation is not None
        return self.conversation.tx

    # EHLO and HELO are handled here rather than in handler hooks: aiosmtpd inspects the
    # signature of an EHLO hook for every new connection (~140 us each)
    async def smtp_EHLO(self, hostname: str) -> None:
        self._greeted(hostname)
        self._in_ehlo, self._ehlo_lines = True, []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False
        if self._ehlo_lines:
            await self.push("\r\n".join(self._ehlo_lines))

    async def smtp_HELO(self, hostname: str) -> None:
        self._greeted(hostname)
        await super().smtp_HELO(hostname)

    def _greeted(self, hostname: str) -> None:
        """EHLO/HELO: a new greeting ends any open transaction (RFC 5321 4.1.4)."""
        if not hostname or self.conversation is None:
            return
        if not self.tx.helo:
            self.progressed()
        self.conversation.reset()
        self.tx.helo = hostname

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path of MAIL/RCPT and what follows it. aiosmtpd's builds a class and runs
        the email package's header parser on each (a tenth of the front's CPU); the
        address is validated by the engine (relay.engine.valid_address) either way."""
        text = arg.lstrip() if arg else ""
        if not text:
            return "", ""
        if not text.startswith("<"):
            address, space, rest = text.partition(" ")
            return address, space + rest
        end, quoted, escaped = -1, False, False
        for i, char in enumerate(text[1:], 1):
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == ">" and not quoted:
                end = i
                break
        if end < 0:
            return None, None
        address = text[1:end]
        if address.startswith("@") and ":" in address:  # a source route (RFC 5321 C)
            address = address.partition(":")[2]
        return address or "<>", text[end + 1:]

    def __dir__(self) -> list[str]:
        # aiosmtpd collects smtp_*/auth_* methods with dir() and inspect.getmembers() for
        # every new connection; listing only those makes that ~10x cheaper
        return _METHOD_NAMES

    async def smtp_MAIL(self, arg: str | None) -> None:
        # aiosmtpd answers an oversized SIZE= itself, in English and without an enhanced
        # code: the engine's size rule answers it instead (552 5.3.4, bilingual)
        limit, self.data_size_limit = self.data_size_limit, None
        try:
            await super().smtp_MAIL(arg)
        finally:
            self.data_size_limit = limit

    async def smtp_DATA(self, arg: str) -> None:
        """DATA streamed to a `Body` (memory, then a spool file) through `DataStream`:
        aiosmtpd's own reads line by line into memory and refuses bare LF."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.conversation is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        conversation, tx = self.conversation, self.conversation.tx
        server = conversation.config.server
        # the idle timeout would cut a large message; a slow one gets data_timeout in all
        self._reset_timeout(server.data_timeout)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = self.hub.spool
        body = Body(spool.tmp if spool is not None else None, tx.queue_id)
        sink, msa = body.write, None
        if tx.trusted or (tx.authenticated and tx.listener_kind != "mx"):
            # RFC 6409 8: as an MSA (submission, or a trusted agency server) add the Date:
            # and Message-ID: a client left out; on the MX the headers policy decides
            msa = MsaHeaders(body.write, f"<{tx.queue_id}@{server.hostname}>",
                             MAX_HEADER_BYTES, lambda: email.utils.formatdate(localtime=True))
            sink = msa.write
        stream = DataStream(sink, server.max_message_size,
                            normalize=server.bare_newline == "normalize")
        try:
            while not stream.feed(await self._read_data_chunk()):
                pass
            if msa is not None:
                msa.finish()
                tx.added_headers.extend(msa.added)
            body.finish()
            reply = await self._data_reply(stream, body)
        finally:
            body.discard()
        self._set_post_data_state()
        await self.push(reply)

    async def _read_data_chunk(self) -> bytes:
        try:
            return await self._reader.readuntil(END)
        except asyncio.LimitOverrunError as exc:  # a long stretch without ".<CRLF>"
            return await self._reader.readexactly(exc.consumed)

    async def _data_reply(self, stream: DataStream, body: Body) -> str:
        conversation, tx = self.conversation, self.tx
        assert conversation is not None
        if stream.oversize:
            reply = conversation.refuse_oversize(stream.size)
        elif stream.bare_newline and not stream.normalize:
            conversation.refuse_data(BARE_NEWLINE, stream.size)
            reply = BARE_NEWLINE
        else:
            verdict = await conversation.data(body, received_header(conversation.config, tx))
            if verdict.outcome is Outcome.ACCEPT:  # the mail log has it (maillog.queued)
                log.debug("queue %s: from=<%s> to=%s size=%d client=%s", tx.queue_id,
                          tx.mail_from, ",".join(tx.rcpt_to), body.size, tx.client_ip)
            reply = verdict.reply
        self._mails_without_data = 0
        self.progressed()
        return reply.render(tx.smtputf8)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await super().smtp_STARTTLS(arg)
        if self.conversation is not None and self._tls_protocol is not None:
            self.tx.tls = True
            self.progressed()

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
        if creds is None or self.conversation is None:
            return result
        authenticator: Authenticator = self.conversation.runtime.services.directory
        login = creds.login.decode("utf-8", "replace").strip().lower()
        password = creds.password.decode("utf-8", "replace")
        ok = await authenticator.authenticate(login, password, self.tx.client_ip)
        if not ok:
            log.warning("%s: AUTH failed for %r from %s", self.listener_name, login,
                        self.tx.client_ip)
            return AuthResult(success=False, handled=False)
        self.tx.auth_login = login
        self.progressed()
        log.info("%s: AUTH ok for %r from %s", self.listener_name, login, self.tx.client_ip)
        return AuthResult(success=True, auth_data=creds)


INTERNAL_ERROR = Reply(451, "4.3.0", ("Lỗi tạm thời, xin thử lại sau",
                                      "Temporary error, try again later"))


class Handler:
    """aiosmtpd hooks: translate each verb into one call of the conversation (one
    instance serves every connection: it keeps no state)."""

    def __dir__(self) -> list[str]:
        return _HOOK_NAMES  # aiosmtpd lists the hooks for every new connection

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer "500 Error: (TypeName) message": a 5xx makes the client
        # give up on mail we may have failed to take, and the text is ours, not theirs
        log.error("SMTP session error", exc_info=error)
        return INTERNAL_ERROR.render(utf8=False)

    @staticmethod
    def _front(server: SMTP) -> tuple[RelaySMTP, Conversation]:
        assert isinstance(server, RelaySMTP) and server.conversation is not None
        return server, server.conversation

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope,
                          args: list[str]) -> Any:
        relay, _ = self._front(server)
        if relay.listener_kind == "mx":
            return NO_AUTH_HERE.render(utf8=False)
        return MISSING  # let aiosmtpd run the mechanism (and our _check)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        relay, conversation = self._front(server)
        tx = conversation.tx
        tx.tls = tx.tls or session.ssl is not None
        if relay.listener_kind != "mx" and not tx.authenticated and not tx.trusted:
            conversation.reset()
            return AUTH_REQUIRED.render(utf8=False)
        # aiosmtpd hands the null sender as "<>"; from here on it is ""
        reply = await conversation.mail("" if address == "<>" else address, mail_options)
        if reply.positive:
            envelope.mail_from = address  # aiosmtpd needs it non-empty for <>
            envelope.mail_options.extend(mail_options)
            relay.mail_accepted()
        return await relay.answer(reply)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        relay, conversation = self._front(server)
        reply = await conversation.rcpt(address)
        if reply.positive:
            envelope.rcpt_tos.append(address)
            relay.progressed()
        return await relay.answer(reply)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        _, conversation = self._front(server)
        conversation.reset()
        return "250 2.0.0 OK"


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


_METHOD_NAMES = sorted(name for name in dir(RelaySMTP) if name.startswith(("smtp_", "auth_")))
_HOOK_NAMES = [name for name in Handler.__dict__ if name.startswith("handle_")]
HANDLER = Handler()


async def start_listeners(hub: Hub, tls_context: ssl.SSLContext,
                          sockets: list[tuple[str, str, socket.socket]] | None = None
                          ) -> list[asyncio.Server]:
    """A server per listener: binding the configured addresses, or serving on sockets a
    supervisor opened (name, kind, socket), which several front processes share."""
    loop = asyncio.get_running_loop()
    listeners = hub.runtime.config.listeners
    servers = []
    targets = sockets if sockets is not None else [
        (name, listener.kind, None) for name, listener in listeners.items()]
    for name, kind, sock in targets:
        listener = listeners[name]
        implicit = kind == "smtps"

        def factory(name: str = name, listener: ListenerConfig = listener,
                    implicit: bool = implicit) -> RelaySMTP:
            return RelaySMTP(hub, name, listener, tls_context, implicit)

        ssl_context = tls_context if implicit else None
        if sock is None:
            host, port = listener.bind
            server = await loop.create_server(factory, host=host, port=port, ssl=ssl_context,
                                              reuse_address=True)
        else:
            server = await loop.create_server(factory, sock=sock, ssl=ssl_context)
        servers.append(server)
        log.info("listening on %s:%d (%s, %s)", *listener.bind, name, kind)
    return servers

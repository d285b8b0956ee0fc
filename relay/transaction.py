"""A transaction's life, the same for both fronts and for `relay test-message`.

A `Conversation` is one client connection (an SMTP session, or one Postfix
session seen through the milter): its transactions one after another, all under
the `Runtime` it started with. The fronts translate their protocol into these
calls and render the replies; everything else is here, once:

- the stages (`connect`, `mail`, `rcpt`, `data`) through the engine, and the
  DATA stage through the runtime's inspector;
- accepting: official mail is archived before anything is queued (Điều 8), the
  queue file is written while the archive commits and enters the queue only once
  archived; `250` only after both are durable;
- finishing: exactly one decision-log line per transaction, also for those
  refused before DATA or abandoned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relay.body import Body
from relay.decisionlog import DecisionLog
from relay.engine import POLICY_ERROR, Verdict, bilingual
from relay.model import Outcome, Reply, Summary, Transaction
from relay.runtime import Runtime
from relay.spool import QueueEnvelope, Spool

log = logging.getLogger(__name__)

MAIL_OK = Reply(250, "2.1.0", ("OK",))
RCPT_OK = Reply(250, "2.1.5", ("OK",))
TOO_MANY_ERRORS = bilingual(421, "4.7.0", "Quá nhiều lệnh bị từ chối, đóng kết nối",
                            "Too many errors, closing the connection")
QUEUE_ERROR = bilingual(451, "4.3.0", "Không ghi được thư vào hàng đợi, xin gửi lại sau",
                        "Queue write failed, try again later")
ARCHIVE_ERROR = bilingual(
    451, "4.3.0", "Không lưu trữ được thư của hộp thư công vụ, xin gửi lại sau (Điều 8)",
    "Could not archive official-mailbox mail, try again later (Article 8)")


class Gate(Protocol):
    """Who may connect (relay.anvil): asked by the front before it serves a client."""

    async def admit(self, ip: str) -> Reply | None: ...

    def release(self, ip: str) -> None: ...


class Open:
    """No limits (a dry run, tests of one conversation)."""

    async def admit(self, ip: str) -> Reply | None:
        return None

    def release(self, ip: str) -> None:
        pass


@dataclass(eq=False)
class Hub:
    """What every conversation of one front shares; `runtime` is swapped on reload."""

    runtime: Runtime
    decisions: DecisionLog | None = None
    spool: Spool | None = None  # None: Postfix keeps the queue (milter), or a dry run
    on_queued: Callable[[str], None] = field(default=lambda queue_id: None)
    gate: Gate = field(default_factory=Open)
    conversations: int = 0

    def swap(self, runtime: Runtime) -> None:
        """Serve new connections with another runtime; the old one retires when the
        connections holding it are gone."""
        old, self.runtime = self.runtime, runtime
        old.retire()


class Conversation:
    def __init__(self, hub: Hub, tx: Transaction) -> None:
        self.hub = hub
        self.runtime = hub.runtime.hold()
        self.tx = tx
        self._last_reply: Reply | None = None  # the last refusal, for the log line
        self._logged = False
        self._open = False  # a transaction began (MAIL) and has no log line yet
        self.errors = 0  # refused commands in this connection
        self.closing = False  # the front must close the connection after this reply
        hub.conversations += 1

    @property
    def config(self):  # noqa: ANN201 - the runtime's Config
        return self.runtime.config

    # --- stages -----------------------------------------------------------------------
    async def connect(self) -> Reply | None:
        return await self._guarded(self.runtime.engine.connect(self.tx))

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        """MAIL FROM; `sender` is "" for the null sender. Ends an open transaction."""
        self.reset()
        self._open = True
        reply = await self._guarded(self.runtime.engine.mail(self.tx, sender, options))
        if reply is not None:
            self.tx.mail_from = ""
            return self._refused(reply, "MAIL", sender)
        return MAIL_OK

    async def rcpt(self, recipient: str) -> Reply:
        reply = await self._guarded(self.runtime.engine.rcpt(self.tx, recipient))
        if reply is not None:
            return self._refused(reply, "RCPT", recipient)
        return RCPT_OK

    async def data(self, body: Body, trace: bytes = b"") -> Verdict:
        """Inspect, then accept (archive, queue) or refuse, and write the log line.

        `trace` is the Received: field a receiving MTA adds (the SMTP front); it
        joins the verdict's prefix, so the delivered message is prefix + message."""
        tx = self.tx
        try:
            verdict = await self.runtime.inspector.inspect(tx, body)
        except Exception:
            log.exception("inspection failed for %s", tx.queue_id)
            verdict = Verdict(Outcome.TEMPFAIL, POLICY_ERROR)
        if tx.summary is None:
            tx.summary = Summary(size=body.size)
        if verdict.outcome is Outcome.ACCEPT:
            verdict.prefix = trace + verdict.prefix
            try:
                reply = await self._accept(body, verdict)
            except Exception:  # never a 250 for what is not stored, never a traceback
                log.exception("accepting %s failed", tx.queue_id)
                reply = QUEUE_ERROR
            if reply is None:
                await self._petitions(body)
            if reply is not None:
                verdict = Verdict(Outcome.TEMPFAIL, reply)
            elif self.hub.spool is not None:
                verdict.reply = Reply(250, "2.0.0", (f"OK queued as {tx.queue_id}",))
        self.finish(verdict.outcome, verdict.reply)
        return verdict

    def refuse_data(self, reply: Reply, size: int) -> None:
        """The front refused the message before the engine saw it (bare LF, ...)."""
        self.tx.summary = Summary(size=size)
        self.finish(Outcome.of(reply), reply)

    def refuse_oversize(self, size: int) -> Reply:
        """The front counted more than `server.max_message_size` while receiving."""
        reply = self.runtime.engine.oversize(self.tx, size)
        self.refuse_data(reply, size)
        return reply

    # --- accepting --------------------------------------------------------------------
    async def _accept(self, body: Body, verdict: Verdict) -> Reply | None:
        """None once the message is durable where it must be; else the 4xx to give."""
        tx, spool = self.tx, self.hub.spool
        archive = self.runtime.services.archive
        written = None
        if spool is not None:
            queued = QueueEnvelope(
                queue_id=tx.queue_id, sender=tx.mail_from, recipients=list(tx.rcpt_to),
                client_ip=tx.client_ip, listener=tx.listener, auth_login=tx.auth_login)
            content = [verdict.prefix, body if verdict.replaced is None else verdict.replaced]
            written = asyncio.ensure_future(spool.prepare(queued, content))
        reply: Reply | None = None
        try:
            # only official mail is read whole here (the archive keeps its exact bytes)
            if archive is not None and await archive.mailboxes.parties(tx):
                try:
                    received = await asyncio.to_thread(body.read)
                    await archive.record(tx, received, verdict.delivered(received))
                except Exception:
                    log.exception("archive failed for %s", tx.queue_id)
                    reply = ARCHIVE_ERROR
            if spool is None or written is None:
                return reply
            try:
                await written
                if reply is None:
                    await spool.commit(tx.queue_id)
            except Exception:
                log.exception("queue %s: could not be written", tx.queue_id)
                reply = reply or QUEUE_ERROR
        except BaseException:  # cancelled (the client went away): nothing half-queued
            if spool is not None and written is not None:
                written.add_done_callback(lambda _: spool.abort(tx.queue_id))
            raise
        if reply is not None:
            spool.abort(tx.queue_id)
        else:
            self.hub.on_queued(tx.queue_id)
        return reply

    # --- after accepting: petitions (Điều 8) ---------------------------------------------
    async def _petitions(self, body: Body) -> None:
        """Open, join, answer or report a petition case (relay/petitions); never fails
        the accepted transaction."""
        petitions = self.runtime.services.petitions
        if petitions is not None:
            await petitions.on_accepted(self.tx, body, self.hub.spool, self.hub.on_queued)

    # --- ending -----------------------------------------------------------------------
    def finish(self, outcome: Outcome, reply: Reply | str) -> None:
        """The transaction's one line in the decision log."""
        decisions = self.hub.decisions
        if self._logged or not self._open:
            return
        self._logged = True
        if decisions is None:
            return
        # what the client was sent, and never an exception: the reply is already decided
        sent = reply.render(self.tx.smtputf8) if isinstance(reply, Reply) else reply
        try:
            decisions.write(self.tx, outcome, sent)
        except Exception:
            log.exception("decision log: could not write the line of %s", self.tx.queue_id)

    def reset(self) -> None:
        """RSET or a new MAIL: end the open transaction, start afresh."""
        self._end()
        self.tx.reset_envelope()
        self._last_reply = None
        self._logged = False
        self._open = False

    def close(self) -> None:
        """The connection ended (the transaction stays readable, for test-message)."""
        self._end()
        self.hub.conversations -= 1
        self.runtime.release()

    def _end(self) -> None:
        """An open transaction without a log line is logged as refused (its last
        reply) or abandoned."""
        tx = self.tx
        if self._open and not self._logged and (tx.mail_from or tx.decisions or tx.rcpt_to):
            last = self._last_reply
            if tx.rcpt_to or last is None:
                self.finish(Outcome.ABANDONED, last or "")
            else:
                self.finish(Outcome.of(last), last)

    # --- helpers ----------------------------------------------------------------------
    def _refused(self, reply: Reply, stage: str = "", address: str = "") -> Reply:
        """Count a refusal; past server.max_errors the connection is closed with 421.
        A refused MAIL FROM / RCPT TO is kept for the mail log (relay.maillog), bounded."""
        self._last_reply = reply
        if stage and len(self.tx.refused) < 100:
            self.tx.refused.append((stage, address, reply))
        self.errors += 1
        if self.errors >= self.config.server.max_errors:
            self.closing = True
            return TOO_MANY_ERRORS
        return reply

    def refused(self, reply: Reply) -> Reply:
        """A refusal the front gave itself (a malformed command): counted the same."""
        return self._refused(reply)

    async def _guarded(self, call):  # noqa: ANN001 - an engine coroutine
        """An engine bug answers 451 rather than dropping the connection."""
        try:
            return await call
        except Exception:
            log.exception("engine failed on transaction %s", self.tx.queue_id)
            return POLICY_ERROR


@dataclass
class Walk:
    """How far a transaction got through the stages, and the replies on the way."""

    stage: str = "connect"
    recipients: dict[str, Reply] = field(default_factory=dict)
    reply: Reply | None = None
    verdict: Verdict | None = None


async def walk(conversation: Conversation, sender: str, recipients: Sequence[str],
               raw: bytes, options: Sequence[str] = ()) -> Walk:
    """One transaction through every stage as a client would drive it (test-message,
    tests): stops at the first stage that refuses the whole transaction."""
    out = Walk()
    out.reply = await conversation.connect()
    if out.reply is not None:
        return out
    out.stage = "mail"
    out.reply = await conversation.mail(sender, options)  # MAIL parameters (SMTPUTF8)
    if not out.reply.positive:
        return out
    out.stage = "rcpt"
    for recipient in recipients:
        out.recipients[recipient] = out.reply = await conversation.rcpt(recipient)
    if not conversation.tx.rcpt_to:
        return out
    out.stage = "data"
    out.verdict = await conversation.data(Body.of(raw))
    out.reply = out.verdict.reply
    return out

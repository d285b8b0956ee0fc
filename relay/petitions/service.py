"""The relay's side: after a message is accepted, file what it means for a petition.

`Petitions.on_accepted(tx, body, spool, on_queued)` is called by
`relay.transaction.Conversation` once a message is durable where it must be (archived,
queued), on both fronts. It never fails the transaction: the client has its answer
decided already; an error is logged with the queue id and counted
(`relay_petitions_errors`). It is shielded from the client going away, so a case
is not lost to a dropped connection after the message was accepted.

- From outside to a `citizen_intake` mailbox: `PetitionStore.receive` opens a case (or
  joins the one referenced), and a new case gets its acknowledgement unless the
  message was a program's, a list's, or the citizen had `acknowledge_limit` of them in
  the last 24 hours.
- From an intake mailbox (the envelope sender; sender_login_match checks the login may
  use it): `PetitionStore.send` records an answer (to the citizen, with the number in
  the Subject or a reference) and reports (to official mailboxes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from relay.archive import Archive
from relay.archive.normalize import address, clean_text
from relay.body import Body
from relay.config import Config
from relay.directory import naming
from relay.directory.store import DirectoryStore
from relay.metrics import PETITION_ERRORS, PETITIONS_OPENED
from relay.model import Transaction
from relay.petitions import notices, outbox, signals
from relay.petitions.records import Case
from relay.petitions.store import Incoming, Outgoing, PetitionStore
from relay.spool import Spool

log = logging.getLogger("relay.petitions")

INTAKE = "citizen_intake"
REPORTED_KINDS = ("official", INTAKE)


class Petitions:
    def __init__(self, config: Config, store: PetitionStore,
                 directory: DirectoryStore | None = None, archive: Archive | None = None
                 ) -> None:
        self.config = config
        self.settings = config.petitions
        self.store = store
        self.directory = directory
        self.archive = archive
        self._submit: outbox.SubmitOutbox | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def open(cls, config: Config, directory: DirectoryStore | None = None,
             archive: Archive | None = None) -> Petitions:
        return cls(config, PetitionStore.open(config), directory, archive)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        if self._submit is not None:
            await self._submit.aclose()
        await asyncio.to_thread(self.store.close)

    # --- the hook -------------------------------------------------------------------------
    async def on_accepted(self, tx: Transaction, body: Body, spool: Spool | None = None,
                          on_queued: Callable[[str], None] | None = None) -> None:
        """File an accepted message; never raises (but for cancellation of the caller,
        which leaves the filing running to its end)."""
        task = asyncio.ensure_future(self._guarded(tx, body, spool, on_queued))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _guarded(self, tx: Transaction, body: Body, spool: Spool | None,
                       on_queued: Callable[[str], None] | None) -> None:
        try:
            await self._file(tx, body, spool, on_queued)
        except Exception:
            PETITION_ERRORS.inc()
            log.exception("petitions: could not file message %s (accepted and queued; "
                          "record it by hand)", tx.queue_id)

    async def _kind(self, addr: str) -> str | None:
        if not self.config.is_local(addr):
            return None
        if self.directory is not None:
            return await self.directory.kind(addr)
        return naming.kind_of(addr)

    async def _file(self, tx: Transaction, body: Body, spool: Spool | None,
                    on_queued: Callable[[str], None] | None) -> None:
        sender = address(tx.mail_from)
        recipients = list(dict.fromkeys(address(r) for r in tx.rcpt_to))
        outside = not sender or not self.config.is_local(sender)
        intakes = [r for r in recipients if await self._kind(r) == INTAKE] if outside else []
        from_intake = not outside and await self._kind(sender) == INTAKE
        if not intakes and not from_intake:
            return
        sig = await asyncio.to_thread(_signals, body, sender)
        summary = tx.summary
        # text a database column takes (PostgreSQL refuses NUL): a client chose it
        subject = clean_text(summary.subject if summary is not None and summary.subject
                             else sig.subject)
        message_id = signals.message_id(summary.message_id if summary is not None else None) \
            or sig.message_id
        now = datetime.now(UTC)
        for mailbox in intakes:
            msg = Incoming(mailbox=mailbox, citizen=sender, queue_id=tx.queue_id,
                           subject=subject, message_id=message_id, references=sig.references,
                           auto=sig.auto, at=now, recipients=recipients)
            filed = await asyncio.to_thread(self.store.receive, msg, self._no_ack(sig, sender))
            log.info("petitions: queue %s from %r to %s: %s%s", tx.queue_id, sender,
                     mailbox, filed.action,
                     f" {filed.case.number}" if filed.case else f" ({filed.reason})")
            if filed.action == "opened" and filed.case is not None:
                PETITIONS_OPENED.inc()
                if filed.case.ack_status == "pending":
                    await self._acknowledge_soon(filed.case, spool, on_queued)
        if from_intake:
            officials = [r for r in recipients if r != sender
                         and await self._kind(r) in REPORTED_KINDS]
            msg = Outgoing(mailbox=sender, queue_id=tx.queue_id, subject=subject,
                           message_id=message_id, references=sig.references, auto=sig.auto,
                           at=now, login=tx.auth_login, recipients=recipients,
                           officials=officials)
            for number, what in await asyncio.to_thread(self.store.send, msg):
                log.info("petitions: queue %s from %r: %s %s", tx.queue_id, sender, number,
                         what)

    def _no_ack(self, sig: signals.Signals, sender: str) -> str:
        """Why no acknowledgement may go to this sender ("" when one may)."""
        if not self.settings.acknowledge:
            return "acknowledge = false"
        if sig.no_ack:
            return sig.no_ack
        if not notices.usable_address(sender):
            return "unusable address"
        return ""

    # --- the acknowledgement -------------------------------------------------------------
    def _sender(self, spool: Spool | None, on_queued: Callable[[str], None] | None
                ) -> outbox.Sender | None:
        if spool is not None and on_queued is not None:
            return outbox.QueueOutbox(spool, on_queued)
        hop = self.settings.submit_to or self.config.outbound.relayhost
        if hop is None:
            return None
        if self._submit is None:
            self._submit = outbox.SubmitOutbox(self.config, *hop)
        return self._submit

    async def _acknowledge_soon(self, case: Case, spool: Spool | None,
                                on_queued: Callable[[str], None] | None) -> None:
        """Into our queue now (a local write); a submission to the next hop (the milter)
        in the background, so a slow relayhost never holds Postfix's reply to the citizen."""
        sender = self._sender(spool, on_queued)
        if not isinstance(sender, outbox.SubmitOutbox):
            await self._acknowledge(case, sender)
            return
        task = asyncio.ensure_future(self._acknowledge(case, sender))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acknowledge(self, case: Case, sender: outbox.Sender | None) -> None:
        """Send the acknowledgement of a new case; never raises (the case says why not)."""
        try:
            await self._send_acknowledgement(case, sender)
        except Exception:
            PETITION_ERRORS.inc()
            log.exception("petitions: acknowledgement of %s", case.number)

    async def _send_acknowledgement(self, case: Case, sender: outbox.Sender | None) -> None:
        if sender is None:
            log.error("petitions: no way to send the acknowledgement of %s: set "
                      "[petitions] submit_to (or [outbound] relayhost)", case.number)
            await asyncio.to_thread(self.store.acknowledged, case.id, "failed: no submit_to")
            return
        tz = self.store.calendar.tz
        data, summary = notices.acknowledgement(case, case.received_at.astimezone(tz), tz)
        try:
            queue_id = await outbox.send(sender, self.archive, self.config, case.mailbox,
                                         [case.citizen], data, summary)
        except Exception as exc:
            log.error("petitions: acknowledgement of %s to %r not sent: %r", case.number,
                      case.citizen, str(exc)[:300])
            await asyncio.to_thread(self.store.acknowledged, case.id,
                                    f"failed: {type(exc).__name__}")
            return
        await asyncio.to_thread(self.store.acknowledged, case.id, sender.via, queue_id,
                                case.mailbox, case.citizen, summary.subject)


def _signals(body: Body, sender: str) -> signals.Signals:
    """The header's signals: the first 64 KiB, parsed with bounds, in a thread."""
    return signals.read(body.head(signals.MAX_HEAD), sender)

"""Where the relay's own petitions mail goes: archived first, then queued or submitted.

`QueueOutbox` (`relay serve`, and the CLI on a relay that runs one): the message is put
in our spool and the queue runner delivers it like any other (a citizen's address
through `[outbound] relayhost`, a local one to the backend). `SubmitOutbox` (`relay
milter`, where Postfix keeps the queue, or `[petitions] submit_to`): one SMTP
submission to that next hop; it should be a Postfix listener that does not call the
milter again (`-o smtpd_milters=`), or the message would be archived twice.

Every message is archived (`Archive.record`) before it is handed on, as the intake
mailbox's outgoing mail (Điều 8); when the archive refuses, nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from relay.archive import Archive
from relay.config import Config
from relay.delivery import SmtpBackend
from relay.model import Summary, Transaction, new_id
from relay.spool import QueueEnvelope, Spool

LISTENER = "petitions"  # how the archive and the queue name what this module sent


class SendError(Exception):
    """The next hop refused or could not be reached; str() is its answer."""


class Sender(Protocol):
    via: str  # "queued" | "submitted"

    async def hand_on(self, envelope: QueueEnvelope, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


class QueueOutbox:
    via = "queued"

    def __init__(self, spool: Spool, on_queued: Callable[[str], None]) -> None:
        self.spool, self.on_queued = spool, on_queued

    async def hand_on(self, envelope: QueueEnvelope, data: bytes) -> None:
        await self.spool.put(envelope, data)
        self.on_queued(envelope.queue_id)

    async def aclose(self) -> None:
        pass


class SubmitOutbox:
    via = "submitted"

    def __init__(self, config: Config, host: str, port: int) -> None:
        out = config.outbound
        self.backend = SmtpBackend(host, port, config.server.hostname, out.timeout, 1,
                                   out.starttls,
                                   str(config.state_file(out.ca_file)) if out.ca_file else "")

    async def hand_on(self, envelope: QueueEnvelope, data: bytes) -> None:
        results = await self.backend.deliver(envelope, data, envelope.recipients)
        refused = {r: res.reply for r, res in results.items() if not res.ok}
        if refused:
            raise SendError("; ".join(f"{r}: {reply}" for r, reply in refused.items())[:300])

    async def aclose(self) -> None:
        await self.backend.close()


async def send(sender: Sender, archive: Archive | None, config: Config, mail_from: str,
               recipients: Sequence[str], data: bytes, summary: Summary) -> str:
    """Archive, then queue or submit; the queue id it carries (archive and queue alike)."""
    queue_id = new_id()
    if archive is not None:
        tx = Transaction(listener=LISTENER, listener_kind="submission",
                         helo=config.server.hostname, trusted=True, mail_from=mail_from,
                         rcpt_to=list(recipients), summary=summary, queue_id=queue_id)
        await archive.record(tx, data, data)
    envelope = QueueEnvelope(queue_id=queue_id, sender=mail_from, recipients=list(recipients),
                             client_ip="127.0.0.1", listener=LISTENER)
    await sender.hand_on(envelope, data)
    return queue_id

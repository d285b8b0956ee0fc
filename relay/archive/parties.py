"""Who is archived: the mailboxes of a message whose mail Điều 8 keeps.

A mailbox is archived when its kind (from the directory, else the Điều 4 naming rule,
or listed in `archive.official`) is one of `archive.kinds`, or when it is listed in
`archive.mailboxes` (opt-in). A message is one entry per archived party and direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.archive.normalize import address
from relay.config import ArchiveConfig, Config
from relay.directory import naming
from relay.directory.store import DirectoryStore
from relay.model import Transaction


@dataclass(frozen=True)
class Party:
    """An archived mailbox taking part in a message, and which way the message went."""

    mailbox: str
    kind: str
    direction: str  # "out": the mailbox sent it; "in": it received it


class ArchivedMailboxes:
    def __init__(self, config: Config, settings: ArchiveConfig,
                 directory: DirectoryStore | None) -> None:
        self.config = config
        self.kinds = set(settings.kinds)
        self.directory = directory
        self.opt_in = {address(a) for a in settings.mailboxes}
        self.official = {address(a) for a in settings.official}

    async def kind_of(self, addr: str) -> str | None:
        """The mailbox kind (directory, else Điều 4 naming), None for outside addresses."""
        if addr in self.official:
            return "official"
        if not self.config.is_local(addr):
            return None
        if self.directory is not None:
            return await self.directory.kind(addr)
        return naming.kind_of(addr)

    async def parties(self, tx: Transaction) -> list[Party]:
        """The archived parties of a transaction: the sender first, then each recipient."""
        out: list[Party] = []
        sender = address(tx.mail_from)
        candidates = [(sender, "out")] if sender else []
        seen: set[str] = set()
        for rcpt in tx.rcpt_to:
            addr = address(rcpt)
            if addr not in seen:
                seen.add(addr)
                candidates.append((addr, "in"))
        for addr, direction in candidates:
            kind = await self.kind_of(addr)
            if (kind is not None and kind in self.kinds) or addr in self.opt_in:
                out.append(Party(addr, kind or "personal", direction))
        return out

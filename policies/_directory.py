"""What the directory policies share: the addresses a message claims."""

from __future__ import annotations

import email.utils

from relay.message import decode_header_value
from relay.model import Transaction


def from_addresses(tx: Transaction) -> list[str]:
    """Lowercased addresses in the From: header(s); unparsable parts are left to `headers`."""
    if tx.message is None:
        return []
    values = [decode_header_value(v) for v in tx.message.get_all("From")]
    return [addr.lower() for _name, addr in email.utils.getaddresses(values) if "@" in addr]


def envelope_sender(tx: Transaction) -> str:
    """The MAIL FROM address lowercased; '' is the null sender."""
    return tx.mail_from.lower()

"""What a bounce must look like, whatever the addresses and replies it reports."""

from __future__ import annotations

import email
import email.policy
import re

# Python's str.splitlines() breaks at each of these; the email package folds at them
LINE_BREAKERS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"

TOP_FIELDS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
              "MIME-Version", "Content-Type"]
RECIPIENT_FIELDS = ["Final-Recipient", "Action", "Status", "Diagnostic-Code"]


def field_names(head: bytes) -> list[str]:
    """Names of the fields of a header block: continuation lines start with whitespace."""
    return [line.split(b":", 1)[0].decode() for line in head.split(b"\r\n")
            if line and line[:1] not in (b" ", b"\t")]


def assert_dsn_shape(dsn: bytes, failures: dict[str, str]) -> None:
    head, _, body = dsn.partition(b"\r\n\r\n")
    assert field_names(head) == TOP_FIELDS
    assert b"\r\n" not in dsn.replace(b"\r\n", b"")  # no bare CR or LF
    for breaker in LINE_BREAKERS[4:]:
        assert breaker.encode() not in head  # no Unicode line breaker in any field
    msg = email.message_from_bytes(dsn, policy=email.policy.default)
    assert [k for k in msg.keys()] == TOP_FIELDS  # the parser agrees
    parts = list(msg.iter_parts())
    assert len(parts) == 3
    status = parts[1].get_payload(decode=False)
    text = status if isinstance(status, str) else parts[1].as_string()
    blocks = [b for b in re.split(r"\r?\n\r?\n", text.strip()) if b.strip()]
    per_recipient = [b for b in blocks if "Final-Recipient" in b]
    assert len(per_recipient) == len(failures)
    for block in per_recipient:
        names = [line.split(":", 1)[0] for line in re.split(r"\r?\n", block)
                 if line and not line[0].isspace() and not line.startswith("Content-")]
        assert names == RECIPIENT_FIELDS

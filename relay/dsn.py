"""Delivery status notifications (RFC 3464), in Vietnamese and English.

Written field by field rather than through the `email` package's generator: that
generator refolds header values and takes U+2028, U+2029, U+0085 and \\x1c-\\x1e for
line breaks, so a quoted local part holding U+2028 came out of it as new `Bcc:` and
`X-Injected:` fields of the bounce, and a UTF-8 sender made it raise (issue 10,
item 9). Here every value passes `field_value()`, which keeps it on one line whatever
it holds; the addresses were also refused at RCPT by `relay.address`.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import re
import secrets
from email.header import Header
from email.message import EmailMessage

from relay.address import safe_unicode
from relay.message import split_header
from relay.spool import QueueEnvelope

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
MAX_VALUE = 900  # octets: a field line stays far below RFC 5322's 998


def field_value(text: str, limit: int = MAX_VALUE) -> str:
    """TEXT as one header line: every control, format or separator character (ASCII
    or Unicode, C* and Z* but the space) becomes a space; cut to LIMIT octets."""
    clean = "".join(ch if " " <= ch <= "~" or (not ch.isascii() and safe_unicode(ch))
                    else " " for ch in text).strip()
    return clean.encode("utf-8")[:limit].decode("utf-8", "ignore")


def status_of(reply: str, permanent: bool) -> str:
    m = _STATUS.search(reply)
    if m:
        return m.group(1)
    return "5.0.0" if permanent else "4.4.7"


def _field(name: str, value: str) -> str:
    return f"{name}: {field_value(value)}"


def build_dsn(env: QueueEnvelope, original: bytes, failures: dict[str, str], hostname: str,
              expired: bool = False) -> bytes:
    """A bounce for `failures` (recipient -> last reply) back to env.sender."""
    hostname = field_value(hostname, 255)
    reason_vi = "đã quá thời gian lưu trong hàng đợi" if expired else "bị máy chủ nhận từ chối"
    reason_en = "expired in the queue" if expired else "was refused by the receiving server"
    lines_vi = [f"Thư của bạn không chuyển được tới người nhận sau, vì thư {reason_vi}:"]
    lines_en = [f"Your message could not be delivered to the recipients below: it {reason_en}."]
    for rcpt, reply in failures.items():
        lines_vi.append(f"  <{field_value(rcpt)}>: {field_value(reply)}")
        lines_en.append(f"  <{field_value(rcpt)}>: {field_value(reply)}")
    human = "\r\n".join([*lines_vi, "", *lines_en, "",
                         f"-- Máy chủ thư / Mail server {hostname}"]) + "\r\n"

    # RFC 6533: a UTF-8 address is reported as such, in a global delivery status
    utf8 = not all(rcpt.isascii() for rcpt in failures)
    kind = "utf-8" if utf8 else "rfc822"
    status_blocks = ["\r\n".join([
        _field("Reporting-MTA", f"dns; {hostname}"),
        _field("X-Queue-ID", env.queue_id),
        _field("Arrival-Date", email.utils.formatdate(env.arrival_time)),
    ])]
    for rcpt, reply in failures.items():
        status_blocks.append("\r\n".join([
            _field("Final-Recipient", f"{kind}; {rcpt}"),
            "Action: failed",
            _field("Status", status_of(reply, not expired)),
            _field("Diagnostic-Code", f"smtp; {reply}"),
        ]))
    status = "\r\n\r\n".join(status_blocks) + "\r\n"

    head, _ = split_header(original)
    head = _LINE_ENDINGS.sub(b"\r\n", head).rstrip(b"\r\n") + b"\r\n"

    boundary = f"=_dsn_{secrets.token_hex(16)}"
    subject = Header("Undelivered Mail Returned to Sender / Thư không chuyển được",
                     "utf-8").encode(linesep="\r\n")
    top = [
        _field("From", f"Mail Delivery System <MAILER-DAEMON@{hostname}>"),
        _field("To", f"<{env.sender}>"),
        f"Subject: {subject}",  # RFC 2047, ASCII, folded by the encoder (CRLF + space)
        _field("Date", email.utils.formatdate(localtime=False)),
        _field("Message-ID", email.utils.make_msgid(domain=hostname)),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    parts = [
        ("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64",
         base64.encodebytes(human.encode()).replace(b"\n", b"\r\n")),
        (f"Content-Type: message/{'global-' if utf8 else ''}delivery-status"
         + ("\r\nContent-Transfer-Encoding: 8bit" if not status.isascii() else ""),
         status.encode()),
        ("Content-Type: text/rfc822-headers"
         + ("\r\nContent-Transfer-Encoding: 8bit" if not head.isascii() else ""), head),
    ]
    out = ["\r\n".join(top).encode(), b"\r\n\r\nThis is a MIME-encapsulated message.\r\n"]
    for part_header, body in parts:
        out += [f"\r\n--{boundary}\r\n{part_header}\r\n\r\n".encode(), body]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


def parse_dsn_recipients(raw: bytes) -> list[tuple[str, str]]:
    """(Final-Recipient, Status) pairs: what a test or a person reads from a DSN."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    out = []
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status",
                                       "message/global-delivery-status"):
            text = part.as_bytes().decode("utf-8", "replace")
            rcpts = re.findall(r"Final-Recipient: (?:rfc822|utf-8); (\S+)", text)
            statuses = re.findall(r"Status: (\S+)", text)
            out.extend(zip(rcpts, statuses, strict=False))
    return out

"""Delivery status notifications (RFC 3464), in Vietnamese and English."""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.header import Header
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from relay.message import split_header
from relay.spool import QueueEnvelope

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def _clean(text: str) -> str:
    """Remote replies end up in header-like fields: no line breaks may pass."""
    return _CONTROL.sub(" ", text).strip()[:900]


def status_of(reply: str, permanent: bool) -> str:
    m = _STATUS.search(reply)
    if m:
        return m.group(1)
    return "5.0.0" if permanent else "4.4.7"


def build_dsn(env: QueueEnvelope, original: bytes, failures: dict[str, str], hostname: str,
              expired: bool = False) -> bytes:
    """A bounce for `failures` (recipient -> last reply) back to env.sender."""
    reason_vi = "đã quá thời gian lưu trong hàng đợi" if expired else "bị máy chủ nhận từ chối"
    reason_en = "expired in the queue" if expired else "was refused by the receiving server"
    lines_vi = [f"Thư của bạn không chuyển được tới người nhận sau, vì thư {reason_vi}:"]
    lines_en = [f"Your message could not be delivered to the recipients below: it {reason_en}."]
    for rcpt, reply in failures.items():
        lines_vi.append(f"  <{rcpt}>: {_clean(reply)}")
        lines_en.append(f"  <{rcpt}>: {_clean(reply)}")
    human = "\n".join([*lines_vi, "", *lines_en, "",
                       f"-- Máy chủ thư / Mail server {hostname}"]) + "\n"

    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    report["To"] = env.sender
    report["Subject"] = Header("Undelivered Mail Returned to Sender / Thư không chuyển được",
                               "utf-8").encode()
    report["Date"] = email.utils.formatdate(localtime=False)
    report["Message-ID"] = email.utils.make_msgid(domain=hostname)
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(human, "plain", "utf-8"))

    status = MIMEBase("message", "delivery-status")
    blocks = [
        f"Reporting-MTA: dns; {hostname}\n"
        f"X-Queue-ID: {env.queue_id}\n"
        f"Arrival-Date: {email.utils.formatdate(env.arrival_time)}\n"
    ]
    for rcpt, reply in failures.items():
        blocks.append(
            f"Final-Recipient: rfc822; {_clean(rcpt)}\n"
            f"Action: failed\n"
            f"Status: {status_of(reply, not expired)}\n"
            f"Diagnostic-Code: smtp; {_clean(reply)}\n"
        )
    # the generator wants one header-only Message per block (RFC 3464 2.1)
    status.set_payload([email.message_from_string(block) for block in blocks])
    report.attach(status)

    headers = MIMEBase("text", "rfc822-headers")
    head, _ = split_header(original)
    headers.set_payload(head.decode("utf-8", "replace"))
    report.attach(headers)
    return report.as_bytes(policy=email.policy.SMTP)


def parse_dsn_recipients(raw: bytes) -> list[tuple[str, str]]:
    """(Final-Recipient, Status) pairs: what a test or a person reads from a DSN."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    out = []
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            text = part.as_bytes().decode("utf-8", "replace")
            rcpts = re.findall(r"Final-Recipient: rfc822; (\S+)", text)
            statuses = re.findall(r"Status: (\S+)", text)
            out.extend(zip(rcpts, statuses, strict=False))
    return out

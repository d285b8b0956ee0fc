"""The mail this module writes: the acknowledgement to a citizen, the daily reminder.

Both are built with the email package from text we control; what came from a client
(a Subject, an address) goes only into the body, cleaned of control and direction
characters and shortened, never into a header. The acknowledgement follows RFC 3834:
`Auto-Submitted: auto-replied` (so neither the citizen's auto-responder nor our own
rules answer it), In-Reply-To/References to the citizen's message (so a reply threads
back to the case), and the case number in the Subject as `[TD-2026-000001]`.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, tzinfo
from email.headerregistry import Address
from email.message import EmailMessage

from relay.model import UNSAFE, Summary
from relay.petitions.records import Case

# an address we write into To: (the envelope sender, checked by the engine, checked again)
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251})")
_MSGID = re.compile(r"<[!-;=?-~]{1,248}>")

ACK_SUBJECT = "Xác nhận đã nhận đơn"
INTAKE_NAME = "Hộp thư tiếp dân"


def clean(text: str, limit: int = 200) -> str:
    """Client text fit for a line of our body: no controls, no direction overrides."""
    text = " ".join(UNSAFE.sub("?", text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def usable_address(address: str) -> bool:
    return bool(_ADDRESS.fullmatch(address)) and ".." not in address


def vn_date(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def _message(sender: Address, to: Sequence[str], subject: str, body: str, hostname: str,
             idstring: str, tz: tzinfo) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC).astimezone(tz))
    msg["Message-ID"] = email.utils.make_msgid(idstring=idstring, domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(body, charset="utf-8")
    return msg


def acknowledgement(case: Case, received_local: datetime, tz: tzinfo
                    ) -> tuple[bytes, Summary]:
    """The acknowledgement of a new case, and its summary for the archive."""
    subject = f"[{case.number}] {ACK_SUBJECT}"
    body = "\n".join([
        "Kính gửi Ông/Bà,",
        "",
        f"Hộp thư tiếp dân {case.mailbox} đã nhận được thư của Ông/Bà.",
        "",
        f"  Số hồ sơ:       {case.number}",
        f"  Tiêu đề thư:    {clean(case.subject) or '(không có tiêu đề)'}",
        f"  Ngày nhận:      {vn_date(received_local.date())} lúc {received_local:%H:%M}",
        f"  Hạn trả lời:    {vn_date(case.deadline)} "
        f"({case.working_days} ngày làm việc kể từ ngày nhận, theo Luật Tiếp công dân)",
        "",
        "Khi gửi thêm thông tin về việc này, xin giữ nguyên số hồ sơ "
        f"[{case.number}] trong tiêu đề thư.",
        "",
        "Đây là thư xác nhận tự động; cơ quan có thẩm quyền sẽ trả lời Ông/Bà "
        "trong thời hạn nêu trên.",
        "",
        f"-- {INTAKE_NAME}, Điện Biên",
        "",
    ])
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address(INTAKE_NAME, addr_spec=case.mailbox)
    msg["To"] = case.citizen
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC).astimezone(tz))
    msg["Message-ID"] = case.ack_message_id
    if _MSGID.fullmatch(case.message_id):
        msg["In-Reply-To"] = case.message_id
        msg["References"] = case.message_id
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 3.1.7
    msg["X-Auto-Response-Suppress"] = "All"  # what Exchange and Outlook honour
    msg["X-Petition-Number"] = case.number
    msg.set_content(body, charset="utf-8")
    data = msg.as_bytes()
    return data, Summary(size=len(data), message_id=case.ack_message_id, subject=subject,
                         date=str(msg["Date"]))


def reminder(mailbox: str, cases: Sequence[Case], as_of: date, sender: str,
             recipients: Sequence[str], hostname: str, tz: tzinfo) -> tuple[bytes, Summary]:
    """The daily list for the holders of one intake mailbox: overdue first, then due."""
    overdue = [c for c in cases if c.deadline < as_of]
    due = [c for c in cases if c.deadline >= as_of]
    lines = [f"Hộp thư tiếp dân {mailbox}: đơn cần trả lời (ngày {vn_date(as_of)}).", ""]

    def block(title: str, items: Sequence[Case]) -> None:
        if not items:
            return
        lines.extend([title, ""])
        for c in items:
            lines.append(f"  {c.number}  hạn {vn_date(c.deadline)}  {clean(c.citizen, 80)}")
            lines.append(f"      {clean(c.subject, 120) or '(không có tiêu đề)'}"
                         + (f"  [giao: {clean(c.assignee, 80)}]" if c.assignee else ""))
        lines.append("")

    block(f"QUÁ HẠN ({len(overdue)}):", overdue)
    block(f"Sắp đến hạn ({len(due)}):", due)
    lines.extend(["Trả lời công dân từ hộp thư tiếp dân, giữ số hồ sơ trong tiêu đề; "
                  "đơn đã trả lời trực tiếp hoặc qua bưu điện: relay petitions close SỐ "
                  "--reason \"...\".", "", "-- relay, Điện Biên", ""])
    subject = (f"[Tiếp dân] {len(overdue)} đơn quá hạn, {len(due)} đơn sắp đến hạn "
               f"- {mailbox}")
    msg = _message(Address("Relay Điện Biên", addr_spec=sender), recipients, subject,
                   "\n".join(lines), hostname, "petitions.reminder", tz)
    data = msg.as_bytes()
    return data, Summary(size=len(data), message_id=str(msg["Message-ID"]), subject=subject,
                         date=str(msg["Date"]))

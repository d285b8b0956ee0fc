"""Shared pieces of the petitions tests: addresses, messages, a configuration."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from relay.config import Config, from_dict

INTAKE = "tiepdan.sotp@dienbien.gov.vn"
PROVINCE_INTAKE = "tiepdan@dienbien.gov.vn"
OFFICIAL = "ubnd@dienbien.gov.vn"
PERSON = "an.nguyen@dienbien.gov.vn"
CITIZEN = "dan@example.vn"
CITIZEN2 = "thi.b@example.org"


def citizen_mail(n: int, subject: str = "Kiến nghị về đường giao thông", sender: str = CITIZEN,
                 to: str = INTAKE, extra: dict[str, str] | None = None,
                 body: str = "Kính gửi Sở, tôi xin kiến nghị...") -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 06 Jul 2026 09:00:00 +0700"
    msg["Message-ID"] = f"<c{n}.petition-test@example.vn>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def petitions_config(tmp_path: Path, url: str = "", **petitions: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"state_dir": str(tmp_path / "state"), "hostname": "mail.dienbien.gov.vn"},
        "petitions": {"enabled": True, **petitions},
    }
    if url:
        data["directory"] = {"url": url}
    return from_dict(data)


def reply_mail(subject: str, sender: str = INTAKE, to: str = CITIZEN, n: int = 0,
               extra: dict[str, str] | None = None,
               body: str = "Kính gửi Ông/Bà, Sở đã tiếp nhận và trả lời như sau...") -> bytes:
    """A message the intake mailbox (the officer's client) sends."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Tue, 07 Jul 2026 09:00:00 +0700"
    msg["Message-ID"] = f"<r{n}.{abs(hash(subject)) % 10**8}.officer@dienbien.gov.vn>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()

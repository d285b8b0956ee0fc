"""Shared pieces of the archive tests: a configuration, messages, a filled archive."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from relay.archive import Archive, chain
from relay.config import Config, from_dict
from relay.model import Transaction

UBND = "ubnd@dienbien.gov.vn"
TIEPDAN = "tiepdan@dienbien.gov.vn"
PERSON = "an.nguyen@dienbien.gov.vn"
OUTSIDE = "citizen@example.vn"


def make_config(tmp_path: Path, url: str = "", server: dict[str, Any] | None = None,
                **archive: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"state_dir": str(tmp_path / "state"), **(server or {})},
        # SQLite tests exercise the file store (tampering with blob files); PostgreSQL the db one
        "archive": {"checkpoint_every": 4, "blob_store": "database" if url else "files",
                    **archive},
    }
    if url:
        data["directory"] = {"url": url}
    return from_dict(data)


def open_archive(config: Config, keys: bool = True, **kw: Any) -> Archive:
    if keys:
        probe = Archive(config)
        if not probe.signing_key_path.exists():
            chain.generate_keys(probe.signing_key_path, probe.public_key_path)
        probe.close()
    return Archive.open(config, **kw)


def message(n: int = 0, subject: str = "Thông báo số 12/TB-UBND", sender: str = UBND,
            to: str = OUTSIDE, body: str = "Kính gửi các cơ quan, đơn vị.") -> bytes:
    encoded = base64.b64encode(subject.encode()).decode()
    text = base64.encodebytes(f"{body}\nSố {n}.\n".encode()).decode().replace("\n", "\r\n")
    return (
        f"From: =?utf-8?b?{base64.b64encode('Ủy ban nhân dân'.encode()).decode()}?= <{sender}>\r\n"
        f"To: {to}\r\n"
        f"Subject: =?utf-8?b?{encoded}?=\r\n"
        f"Message-ID: <{n}.archive-test@dienbien.gov.vn>\r\n"
        "Date: Sun, 29 Nov 2026 10:00:00 +0700\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n" + text
    ).encode()


def tx(sender: str = UBND, *rcpts: str, auth: str | None = None) -> Transaction:
    return Transaction(mail_from=sender, rcpt_to=list(rcpts or [OUTSIDE]), auth_login=auth,
                       client_ip="192.0.2.7", helo="client.example")


async def fill(archive: Archive, n: int, start: int = 0) -> list[int]:
    """n official messages sent by ubnd@ to the outside: one entry each."""
    ids: list[int] = []
    for i in range(start, start + n):
        raw = message(i)
        ids += await archive.record(tx(UBND, OUTSIDE), raw, raw)
    return ids


@contextmanager
def days_ago(days: float) -> Iterator[None]:
    """Archive (and sign) as if it were `days` ago: the clock the archive stamps with.
    How tests let a retention period pass without changing any hashed field."""
    real = chain.now
    chain.now = lambda: real() - timedelta(days=days)  # type: ignore[assignment]
    try:
        yield
    finally:
        chain.now = real  # type: ignore[assignment]

"""Messages that once froze or exhausted the relay (issue 9), built in memory."""

from __future__ import annotations

import functools
import io
import zipfile
from email.message import EmailMessage

HEAD = (b"From: a@example.org\r\nTo: an@dienbien.gov.vn\r\nSubject: x\r\n"
        b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <h@example.org>\r\n")


def quadratic_header(semicolons: int = 200_000) -> bytes:
    """An unclosed quote, then many `;` (folded into lines an SMTP server takes):
    CPython's parameter parser was quadratic here."""
    folded = b"\r\n ".join([b";" * 900] * (semicolons // 900))
    return HEAD + b'Content-Type: text/plain; name="' + folded + b"\r\n\r\nx\r\n"


def with_zip(name: str, data: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "an@dienbien.gov.vn", "z"
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0700"
    msg.set_content("see attached")
    msg.add_attachment(data, maintype="application", subtype="zip", filename=name)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@functools.cache
def many_members_zip(members: int = 100_000) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(members):
            z.writestr(str(i), b"")
    return with_zip("many.zip", buf.getvalue())


@functools.cache
def bzip2_bomb() -> bytes:
    """A few kilobytes of bzip2 that decompress to 2 GB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as z:
        zero = b"\0" * (200 * 1024 * 1024)
        for i in range(10):
            z.writestr(f"f{i}.txt", zero)
    return with_zip("bomb.zip", buf.getvalue())

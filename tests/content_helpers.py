"""Helpers for the content-policy tests: build messages, run the engine and the CLI."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from relay.config import from_dict
from relay.model import Transaction
from relay.runtime import Runtime
from relay.transaction import Conversation, Hub, walk
from tests.fixtures import relayproc

ROOT = Path(__file__).resolve().parent.parent


def make_message(
    sender: str = "alice@example.org",
    to: str = "bob@dienbien.gov.vn",
    body: str = "Xin chào, đây là thư thử.\n",
    attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    subject: str = "Thư thử",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    msg["Message-ID"] = "<test@example.org>"
    msg.set_content(body)
    for name, data, ctype in attachments:
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))  # as on the wire


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def run_engine(
    policies: dict[str, dict[str, Any]],
    raw: bytes,
    sender: str,
    recipients: list[str],
    auth: str | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Transaction, dict[str, Any]]:
    """MAIL, RCPT for each recipient, DATA through the relay's one stage driver
    (`relay.transaction.walk`, as test-message runs it); returns the transaction and
    each stage's answer: None where the stage accepted, else its Reply (the Verdict
    for DATA)."""
    state = tempfile.mkdtemp(prefix="relay-engine-")
    config = from_dict({"server": {"state_dir": state}, **(settings or {}),
                        "policies": policies})
    runtime = await Runtime.build(config, archive=False, inline=True)
    tx = Transaction(auth_login=auth, listener_kind="submission" if auth else "mx")
    conversation = Conversation(Hub(runtime), tx)
    try:
        result = await walk(conversation, sender, recipients, raw)
    finally:
        conversation.close()
        await runtime.aclose()
        shutil.rmtree(state, ignore_errors=True)
    out: dict[str, Any] = {"rcpt": {r: None if reply.positive else reply
                                    for r, reply in result.recipients.items()}}
    if result.stage != "connect":
        out["mail"] = None if result.stage != "mail" else result.reply
    if result.verdict is not None:
        out["data"] = result.verdict
    return tx, out


def run_cli(
    tmp_path: Path, toml: str, raw: bytes, sender: str, recipients: list[str],
    *extra: str,
) -> tuple[int, dict[str, Any]]:
    """`relay test-message --json` in a subprocess, as an administrator would run it."""
    cfg = tmp_path / "relay.toml"
    cfg.write_text(toml)
    eml = tmp_path / "message.eml"
    eml.write_bytes(raw)
    args = ["test-message", "-c", str(cfg), "--from", sender]
    for r in recipients:
        args += ["--to", r]
    proc = relayproc.run_cli(*args, *extra, str(eml), "--json")
    assert proc.stdout, proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)

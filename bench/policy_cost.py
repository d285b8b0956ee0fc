"""What each policy costs per message, in microseconds of CPU, with the engine in process.

    .venv/bin/python bench/policy_cost.py [--messages 2000] [--json]

For each shipped policy: the whole transaction (MAIL, RCPT, DATA: parsing, the
policy, the verdict) through `relay.transaction.walk`, inline, with only that policy
enabled, minus the same with no policy at all (the engine's own cost, reported
first). Two messages: the 10 KB plain message the throughput benchmark sends, and a
Vietnamese MIME message with an HTML part and a PDF attachment. The directory is a
real SQLite database with the sender and recipient in it (cached after the first
look-up, as in the relay). Loopback DNS is not used: webmail's MX check is off, as
shipped. CPU time (process_time), so other load on the machine matters little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.body import Body  # noqa: E402
from relay.config import from_dict  # noqa: E402
from relay.directory import Directory  # noqa: E402
from relay.model import Transaction  # noqa: E402
from relay.runtime import Runtime  # noqa: E402
from relay.transaction import Conversation, Hub  # noqa: E402

SENDER, RCPT = "annv@dienbien.gov.vn", "binhtt@dienbien.gov.vn"
POLICIES = ["headers", "sender_registered", "recipient_exists", "sender_login_match",
            "no_local_spoofing", "webmail", "attachments", "tcvn6909"]


def plain() -> bytes:
    line = b"Kinh gui Uy ban nhan dan tinh Dien Bien, bao cao so lieu thang 11.\r\n"
    return (b"From: annv@dienbien.gov.vn\r\nTo: binhtt@dienbien.gov.vn\r\nSubject: bench\r\n"
            b"Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <b@x>\r\n\r\n" + line * 145)


def vietnamese() -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = f"Nguyễn Văn An <{SENDER}>", RCPT
    msg["Subject"] = "Báo cáo tình hình lũ quét tháng 11"
    msg["Date"] = "Sun, 29 Nov 2026 10:00 +0700"
    text = "Kính gửi Ủy ban nhân dân tỉnh Điện Biên, báo cáo số liệu thiệt hại.\n" * 40
    msg.set_content(text)
    msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    msg.add_attachment(b"%PDF-1.4\n" + b"0" * 30000, maintype="application", subtype="pdf",
                       filename="bao-cao.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def cost(state: Path, policies: list[str], raw: bytes, n: int) -> float:
    config = from_dict({"server": {"state_dir": str(state), "trusted_networks": ["127.0.0.0/8"]},
                        "policies": {p: {} for p in policies}})
    runtime = await Runtime.build(config, archive=False, inline=True)
    hub = Hub(runtime)

    async def one() -> None:
        tx = Transaction(client_ip="127.0.0.1", trusted=True)
        conversation = Conversation(hub, tx)
        assert (await conversation.mail(SENDER)).positive
        assert (await conversation.rcpt(RCPT)).positive
        verdict = await conversation.data(Body.of(raw))
        assert verdict.outcome == "accept", [d.finding.code for d in tx.decisions]
        conversation.close()

    for _ in range(50):
        await one()
    t0 = time.process_time()
    for _ in range(n):
        await one()
    elapsed = time.process_time() - t0
    await runtime.aclose()
    return 1e6 * elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="relay-policy-cost-"))
    try:
        config = from_dict({"server": {"state_dir": str(state)}})
        with Directory(config).write("bench", "bench/policy_cost.py") as w:
            w.add_agency("stttt", "Sở Thông tin và Truyền thông")
            w.add_mailbox(SENDER, "personal", "stttt", w.add_person("Nguyễn Văn An", "stttt"))
            w.add_mailbox(RCPT, "personal", "stttt", w.add_person("Trần Thị Bình", "stttt"))
        results: dict[str, dict[str, float]] = {}
        for label, raw in (("plain 10 KB", plain()), ("Vietnamese MIME", vietnamese())):
            base = asyncio.run(cost(state, [], raw, args.messages))
            row = {"engine alone": base}
            for policy in POLICIES:
                row[policy] = asyncio.run(cost(state, [policy], raw, args.messages)) - base
            row["all together"] = asyncio.run(cost(state, POLICIES, raw, args.messages))
            results[label] = row
    finally:
        shutil.rmtree(state, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    labels = list(results)
    print(f"{'µs CPU per message':22}" + "".join(f"{label:>18}" for label in labels))
    for key in results[labels[0]]:
        print(f"{key:22}" + "".join(f"{results[label][key]:18.0f}" for label in labels))


if __name__ == "__main__":
    main()

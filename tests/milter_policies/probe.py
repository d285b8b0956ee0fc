"""`probe`: a site policy for the milter tests, loaded through `server.policy_dirs`.

It reacts to markers so each path of the milter front can be driven end to end:
client 192.0.2.66 (CONNECT), sender `reject-mail@…` (MAIL), recipient `blocked…@…`
(one recipient only), `slow@…` (MAIL takes 3 s), and in the Subject: REJECT,
TEMPFAIL, TAG, CONVERT, SLOW (the check takes 0.5 s), DEPENDENCY-DOWN (the check
raises, as when a service it needs is down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from policies.base import Policy, PolicyOptions
from relay.message import split_header
from relay.model import Action, Finding, Stage, Transaction

ACTIONS = {"probe.reject": Action.REJECT, "probe.tempfail": Action.TEMPFAIL,
           "probe.tag": Action.TAG, "probe.convert": Action.CONVERT}


class Options(PolicyOptions):
    actions: dict[str, Action] = ACTIONS


class ProbePolicy(Policy):
    name = "probe"
    stages = frozenset({Stage.CONNECT, Stage.MAIL, Stage.RCPT, Stage.DATA})
    Options = Options
    codes = {code: f"the marker asks for {action.value}" for code, action in ACTIONS.items()}

    async def check(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Sequence[Finding]:
        if stage is Stage.CONNECT:
            if tx.client_ip == "192.0.2.66":
                return [self._f("probe.reject", "Máy khách bị chặn", "Client blocked")]
            return []
        if stage is Stage.MAIL:
            if tx.mail_from.startswith("slow@"):
                await asyncio.sleep(3)
            if tx.mail_from.startswith("reject-mail@"):
                return [self._f("probe.reject", "Người gửi bị chặn", "Sender blocked")]
            return []
        if stage is Stage.RCPT:
            assert recipient is not None
            if recipient.startswith("blocked"):
                return [self._f("probe.reject", f"Người nhận {recipient} bị chặn",
                                f"Recipient {recipient} blocked", recipient=recipient)]
            return []
        assert tx.message is not None
        subject = tx.message.get("Subject") or ""
        if "SLOW" in subject:
            await asyncio.sleep(0.5)
        if "DEPENDENCY-DOWN" in subject:
            raise ConnectionRefusedError("probe service down")
        out = []
        for marker, code in (("REJECT", "probe.reject"), ("TEMPFAIL", "probe.tempfail"),
                             ("TAG", "probe.tag"), ("CONVERT", "probe.convert")):
            if marker in subject:
                out.append(self._f(code, f"Thăm dò {marker}", f"Probe {marker}",
                                   tag=("X-Probe", f"tagged; auth={tx.auth_login or '-'}")
                                   if marker == "TAG" else None))
        return out

    def convert(self, tx: Transaction, findings: Sequence[Finding]) -> bytes | None:
        assert tx.message is not None
        head, body = split_header(tx.message.raw)
        head = head.replace(b"CONVERT", b"converted")
        head = head.replace(b"x-probe", b"utf-8")
        return head + b"\r\n" + body.replace(b"Tieng Viet", "Tiếng Việt".encode())

    def _f(self, code: str, vi: str, en: str, **kw: object) -> Finding:
        return self.finding(code, "Điều 9", vi, en, **kw)  # type: ignore[arg-type]


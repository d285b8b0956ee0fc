"""Budget findings, and the DATA stage in the calling process (`relay test-message`)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from relay.body import Body
from relay.config import Config
from relay.engine import ACCEPTED, Engine, Verdict, reply_for, tag_header
from relay.message import MAX_HEADER_BYTES, Message, MessageTooComplex
from relay.model import Action, Decision, Finding, Outcome, Transaction

NAME = "inspection"
CODES = {
    "inspection.timeout": "the DATA stage took longer than [inspection] timeout",
    "inspection.memory": "the DATA stage needed more than [inspection] max_memory",
    "inspection.too_complex": "more MIME parts or deeper nesting than [inspection] allows",
    "inspection.crashed": "the inspection worker died (always a temporary failure)",
}
_TEXT = {
    "inspection.timeout": ("Kiểm tra thư quá thời gian cho phép",
                           "Checking the message took too long"),
    "inspection.memory": ("Kiểm tra thư cần quá nhiều bộ nhớ",
                          "Checking the message needed too much memory"),
    "inspection.too_complex": ("Thư có quá nhiều phần hoặc lồng nhau quá sâu",
                               "Message has too many MIME parts or nests them too deeply"),
    "inspection.crashed": ("Lỗi tạm thời khi kiểm tra thư, xin gửi lại sau",
                           "Temporary error while checking the message, try again later"),
}


class Inspector(Protocol):
    async def inspect(self, tx: Transaction, body: Body) -> Verdict: ...

    async def aclose(self) -> None: ...


def over_budget(config: Config, tx: Transaction, code: str, body: Body,
                detail: str = "") -> Verdict:
    """The verdict for a message the inspection could not finish within its budget."""
    vi, en = _TEXT[code]
    finding = Finding(NAME, code, "Điều 5.1", vi, en, reply_code=552 if code.endswith(
        "too_complex") else 554, status="5.3.4" if code.endswith("too_complex") else "5.7.0",
        tempfail_code=451, details={"detail": detail} if detail else {})
    if code == "inspection.crashed":
        action = Action.TEMPFAIL
    else:
        settings = config.inspection
        action = Action(settings.actions.get(code, settings.action))  # type: ignore[call-overload]
    tx.decisions.append(Decision(finding, action))
    if tx.summary is None:  # the header section only: bounded, parsed without the MIME tree
        tx.summary = Message(body.head(MAX_HEADER_BYTES + 1)).summary()
        tx.summary = dataclasses.replace(tx.summary, size=body.size)
    reply = reply_for([Decision(finding, action)])
    if reply is not None:
        return Verdict(Outcome.of(reply), reply)
    # `tag` or `log`: the site chose to pass what could not be checked
    if action is Action.TAG:
        tx.added_headers.append(tag_header(finding))
    return Verdict(Outcome.ACCEPT, ACCEPTED, Message.prepend_headers(b"", tx.added_headers))


async def inspect_here(engine: Engine, tx: Transaction, body: Body) -> Verdict:
    """The DATA stage in this process, budget findings for what the engine raises."""
    try:
        return await engine.data(tx, body.read())
    except MessageTooComplex as exc:
        return over_budget(engine.config, tx, "inspection.too_complex", body, str(exc))
    except MemoryError:
        return over_budget(engine.config, tx, "inspection.memory", body)


class Inline:
    """The DATA stage in this process: no isolation, for dry runs and tests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def inspect(self, tx: Transaction, body: Body) -> Verdict:
        return await inspect_here(self.engine, tx, body)

    async def aclose(self) -> None:
        pass

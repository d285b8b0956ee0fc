"""The DATA stage, run where a hostile message costs only itself.

Parsing a message and running the DATA-stage policies costs what the client
sent: CPU, memory and time it chooses. `WorkerPool` (relay.inspection.pool) runs
that work in worker processes with a budget per message (wall time, memory, MIME
parts and depth); `Inline` runs it in the calling process, for `relay
test-message`. A message over budget gets a finding of the `inspection` rule,
whose action `[inspection]` decides (default tempfail); a worker that dies is a
temporary failure whatever the configuration says: never an accept.
"""

from __future__ import annotations

from typing import Protocol

from relay.config import Config
from relay.engine import ACCEPTED, Engine, Verdict, reply_for, tag_header
from relay.message import Message, MessageTooComplex
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
    async def inspect(self, tx: Transaction, raw: bytes) -> Verdict: ...

    async def aclose(self) -> None: ...


def over_budget(config: Config, tx: Transaction, code: str, raw: bytes,
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
    if tx.summary is None:
        tx.summary = Message(raw).summary()
    reply = reply_for([Decision(finding, action)])
    if reply is not None:
        return Verdict(Outcome.of(reply), reply, raw)
    # `tag` or `log`: the site chose to pass what could not be checked
    data = raw
    if action is Action.TAG:
        tx.added_headers.append(tag_header(finding))
        data = Message.prepend_headers(raw, [tag_header(finding)])
    return Verdict(Outcome.ACCEPT, ACCEPTED, data)


async def inspect_here(engine: Engine, tx: Transaction, raw: bytes) -> Verdict:
    """The DATA stage in this process, budget findings for what the engine raises."""
    try:
        return await engine.data(tx, raw)
    except MessageTooComplex as exc:
        return over_budget(engine.config, tx, "inspection.too_complex", raw, str(exc))
    except MemoryError:
        return over_budget(engine.config, tx, "inspection.memory", raw)


class Inline:
    """The DATA stage in this process: no isolation, for dry runs and tests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def inspect(self, tx: Transaction, raw: bytes) -> Verdict:
        return await inspect_here(self.engine, tx, raw)

    async def aclose(self) -> None:
        pass


async def inspector_for(config: Config, engine: Engine, inline: bool = False) -> Inspector:
    if inline:
        return Inline(engine)
    from relay.inspection.pool import WorkerPool

    pool = WorkerPool(config)
    await pool.start()
    return pool

"""`rspamd` (Điều 5.1, anti-spam): ask a running Rspamd, for sites that already run one.

At DATA the message goes to Rspamd's HTTP protocol (`POST /checkv2`, the normal
worker or a self-scanning proxy) with the envelope in request headers (IP, Helo,
From, Rcpt, User, Queue-Id, MTA-Name), and Rspamd's action becomes a finding; what
it does is this table's, like any other policy's:

    rspamd.reject           action "reject"            reject (default)
    rspamd.soft_reject      action "soft reject"       tempfail
    rspamd.rewrite_subject  action "rewrite subject"   tag (X-Spam; the subject is kept)
    rspamd.add_header       action "add header"        tag (X-Spam: Yes; score=...)
    rspamd.greylist         action "greylist"          log (we do not greylist)
    rspamd.temperror        Rspamd down, slow, or an answer we cannot read: tempfail

The reply names the score and Rspamd's own SMTP message, if any (printable text
only, bounded). A small HTTP/1.1 client on asyncio streams (one request per
connection, `Connection: close`, the answer bounded): no HTTP library for one POST.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any

from pydantic import Field, StrictStr, field_validator, model_validator

from policies.base import Context, Policy, PolicyOptions
from relay.config import Duration, Size
from relay.model import Action, Finding, Stage, Transaction

log = logging.getLogger(__name__)

ARTICLE = "Điều 5.1"
MAX_ANSWER = 4 * 1024 * 1024
ACTIONS = {"reject": "rspamd.reject", "soft reject": "rspamd.soft_reject",
           "rewrite subject": "rspamd.rewrite_subject", "add header": "rspamd.add_header",
           "greylist": "rspamd.greylist"}


class RspamdError(Exception):
    pass


class Options(PolicyOptions):
    url: StrictStr = "http://127.0.0.1:11333"  # the normal worker; path default /checkv2
    timeout: Duration = 15.0  # connect, send, scan, answer
    max_size: Size = Field(20 * 1024 * 1024, ge=1024)  # larger messages are not sent

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parts = urllib.parse.urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected http://HOST:PORT[/path], got {value!r}")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Options:
        for code, action in (("rspamd.soft_reject", Action.TEMPFAIL),
                             ("rspamd.rewrite_subject", Action.TAG),
                             ("rspamd.add_header", Action.TAG),
                             ("rspamd.greylist", Action.LOG),
                             ("rspamd.temperror", Action.TEMPFAIL)):
            self.actions.setdefault(code, action)
        return self


def _text(value: Any, limit: int = 200) -> str:
    return "".join(c for c in str(value) if c.isprintable())[:limit]


class RspamdPolicy(Policy):
    name = "rspamd"
    articles = (ARTICLE,)
    stages = frozenset({Stage.DATA})
    Options = Options
    codes = {
        "rspamd.reject": "Rspamd's action is reject",
        "rspamd.soft_reject": "Rspamd's action is soft reject",
        "rspamd.rewrite_subject": "Rspamd's action is rewrite subject",
        "rspamd.add_header": "Rspamd's action is add header",
        "rspamd.greylist": "Rspamd's action is greylist",
        "rspamd.temperror": "Rspamd did not answer, or not readably",
    }

    def __init__(self, options: PolicyOptions, context: Context) -> None:
        super().__init__(options, context)
        assert isinstance(options, Options)
        self.opts = options
        parts = urllib.parse.urlsplit(options.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/checkv2"

    async def check(self, stage: Stage, tx: Transaction, recipient: str | None = None
                    ) -> Sequence[Finding]:
        assert tx.message is not None
        raw = tx.message.raw
        if len(raw) > self.opts.max_size:
            return []
        try:
            async with asyncio.timeout(self.opts.timeout):
                answer = await self._ask(tx, raw)
            action = answer["action"]
            score, required = float(answer.get("score", 0)), float(
                answer.get("required_score", 0))
        except (RspamdError, OSError, TimeoutError, KeyError, TypeError, ValueError) as exc:
            why = _text(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                why = f"no answer within {self.opts.timeout:g}s"
            log.warning("rspamd at %s:%d: %s", self.host, self.port, why)
            return [self.finding(
                "rspamd.temperror", ARTICLE,
                "Không kiểm tra được thư rác (Rspamd), xin gửi lại sau",
                "Could not check the message for spam (Rspamd), try again later",
                reply_code=550, status="5.7.1", tempfail_code=451,
                details={"error": why})]
        code = ACTIONS.get(action)
        if code is None:
            return []  # "no action"
        symbols = answer.get("symbols")
        names = sorted(symbols)[:20] if isinstance(symbols, dict) else []
        said = answer.get("messages", {})
        said = _text(said.get("smtp_message", "")) if isinstance(said, dict) else ""
        why = f"; {said}" if said else ""
        return [self.finding(
            code, ARTICLE,
            f"Thư bị đánh giá là thư rác (Rspamd: {score:g}/{required:g}{why})",
            f"Message classified as spam (Rspamd: {score:g}/{required:g}{why})",
            reply_code=554, status="5.7.1",
            tag=("X-Spam", f"Yes; score={score:g}/{required:g}; action={action}"),
            details={"action": action, "score": score, "required_score": required,
                     "symbols": names})]

    async def _ask(self, tx: Transaction, raw: bytes) -> dict[str, Any]:
        headers = [("Host", f"{self.host}:{self.port}"), ("Connection", "close"),
                   ("Content-Length", str(len(raw))),
                   ("MTA-Name", self.context.config.server.hostname),
                   ("Queue-Id", tx.queue_id), ("From", tx.mail_from or "<>")]
        if tx.client_ip:
            headers.append(("IP", tx.client_ip))
        if tx.helo:
            headers.append(("Helo", tx.helo))
        if tx.auth_login:
            headers.append(("User", tx.auth_login))
        headers += [("Rcpt", r) for r in tx.rcpt_to]
        # values come from the client: a header line must not be split by them
        head = "".join(f"{n}: {_text(v, 998)}\r\n" for n, v in headers)
        request = f"POST {self.path} HTTP/1.1\r\n{head}\r\n".encode("utf-8", "replace")
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(request)
            writer.write(raw)
            await writer.drain()
            answer = await reader.read(MAX_ANSWER + 1)
            while len(answer) <= MAX_ANSWER:
                more = await reader.read(MAX_ANSWER + 1 - len(answer))
                if not more:
                    break
                answer += more
        finally:
            writer.close()
        return parse_answer(answer)


def parse_answer(answer: bytes) -> dict[str, Any]:
    if len(answer) > MAX_ANSWER:
        raise RspamdError(f"answer longer than {MAX_ANSWER} bytes")
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        raise RspamdError("truncated HTTP answer")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        raise RspamdError(f"HTTP status {_text(lines[0], 80)!r}")
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (line.partition(":") for line in lines[1:])}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        raise RspamdError("chunked answer")
    length = fields.get("content-length")
    if length is not None and length.isdigit():
        if len(body) < int(length):
            raise RspamdError("truncated HTTP body")
        body = body[:int(length)]
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise RspamdError("no action in the answer")
    return data

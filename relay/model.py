"""The shared vocabulary: stages, actions, findings, replies and the transaction.

Both fronts (SMTP and milter) and `relay test-message` build a `Transaction`
and hand it to the engine; policies read it and return `Finding`s.
"""

from __future__ import annotations

import enum
import os
import random
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from relay.message import Message


ListenerKind = Literal["mx", "submission", "smtps"]


class Stage(enum.StrEnum):
    CONNECT = "connect"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class Action(enum.StrEnum):
    """What a finding does; chosen in relay.toml (`action = ...`), never by the policy."""

    REJECT = "reject"
    TEMPFAIL = "tempfail"
    TAG = "tag"
    CONVERT = "convert"
    LOG = "log"


class Outcome(enum.StrEnum):
    """How a transaction ended: what the decision log and the metrics record."""

    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    ABANDONED = "abandoned"  # the client left or reset before the end of DATA

    @classmethod
    def of(cls, reply: Reply) -> Outcome:
        return cls.ACCEPT if reply.positive else cls.TEMPFAIL if reply.temporary else cls.REJECT


# When several findings disagree, the strongest action wins.
ACTION_STRENGTH = {
    Action.LOG: 0,
    Action.TAG: 1,
    Action.CONVERT: 2,
    Action.TEMPFAIL: 3,
    Action.REJECT: 4,
}


@dataclass(frozen=True)
class Finding:
    """What a policy detected and why it matters, in both languages.

    `status` is the RFC 3463 enhanced code used when the finding rejects;
    a tempfail turns its class to 4 and the basic code to `tempfail_code`.
    """

    policy: str
    code: str
    article: str
    vi: str
    en: str
    recipient: str | None = None
    reply_code: int = 550
    status: str = "5.7.1"
    tempfail_code: int = 451
    tag: tuple[str, str] | None = None  # header added when the action is `tag`
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def message(self) -> str:
        return f"{self.vi} ({self.article}) / {self.en} ({article_en(self.article)})"


def article_en(article: str) -> str:
    """'Điều 7.3' -> 'Article 7.3' for the English half of a reply."""
    return article.replace("Điều", "Article")


# C0 and C1 controls, DEL, Unicode line/paragraph separators, bidi and zero-width marks
# controls, line separators, bidi and zero-width marks, and lone surrogates (an undecodable
# byte as aiosmtpd's surrogateescape keeps it): never in a reply or a log line
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e"
                    "\u2066-\u2069\ufeff\ud800-\udfff]")


def safe_line(line: str, utf8: bool) -> str:
    """A reply line fit for the wire: no controls, and ASCII unless the client asked
    for SMTPUTF8."""
    line = UNSAFE.sub("?", line)
    return line if utf8 else ascii_fold(line)


def ascii_fold(text: str) -> str:
    """Vietnamese without diacritics, for replies to clients that did not ask for SMTPUTF8."""
    if text.isascii():  # most lines: every reply passes here
        return text
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return folded.encode("ascii", "replace").decode("ascii")


MAX_REPLY_LINE = 510  # octets of one reply line before its CRLF


@dataclass(frozen=True)
class Reply:
    """One SMTP reply. `lines` are shown one per line of a multi-line reply."""

    code: int
    status: str
    lines: tuple[str, ...]

    @property
    def positive(self) -> bool:
        return self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def render(self, utf8: bool = True) -> str:
        """Multi-line SMTP reply text, CRLF-joined, without the final CRLF.

        The one way a reply reaches a client, on both fronts: a line can carry text
        a client chose (a file name, an address), so every control character, line or
        paragraph separator and direction override becomes `?` here (no injected
        `250 OK` line); and a client that did not ask for SMTPUTF8 gets ASCII only
        (RFC 6531), the Vietnamese without its diacritics."""
        lines = [safe_line(line, utf8) for line in self.lines] or [""]
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            status = f"{self.status} " if self.status else ""
            text = f"{self.code}{sep}{status}{line}".rstrip()
            # RFC 5321 4.5.3.1.5: 512 octets with the CRLF (a long address or file name
            # is cut, on a character boundary); 127 characters cannot be longer
            if len(text) > MAX_REPLY_LINE // 4 and len(text.encode()) > MAX_REPLY_LINE:
                text = text.encode()[:MAX_REPLY_LINE - 3].decode("utf-8", "ignore") + "..."
            out.append(text)
        return "\r\n".join(out)

    def __str__(self) -> str:
        return self.render()


@dataclass
class Decision:
    """A finding together with the action configuration chose for it."""

    finding: Finding
    action: Action

    def as_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "policy": f.policy,
            "code": f.code,
            "article": f.article,
            "recipient": f.recipient,
            "message": f.message,
            "vi": f.vi,
            "en": f.en,
            "action": self.action.value,
            **({"details": f.details} if f.details else {}),
        }


@dataclass(frozen=True)
class Summary:
    """What the fronts keep of a message once it is inspected (the decision log, the
    archive index): small, and computed where the message was parsed."""

    size: int
    message_id: str | None = None
    subject: str = ""  # RFC 2047 decoded
    date: str | None = None


_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))


def new_id() -> str:
    """A queue id: sortable by time, unique across nodes (like Postfix long queue ids).
    Forty random bits after the millisecond; not a secret, so not a syscall each."""
    return f"{int(time.time() * 1000):011X}{_ids.getrandbits(40):010X}"


@dataclass
class Transaction:
    """One SMTP transaction as both fronts see it, plus what the engine decided so far.

    Addresses are as the client gave them without the angle brackets; the null
    sender (`MAIL FROM:<>`) is `""` everywhere, from the fronts to the queue.
    """

    listener: str = "test"
    listener_kind: ListenerKind = "mx"
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    helo: str = ""
    tls: bool = False
    auth_login: str | None = None
    trusted: bool = False
    # milter mode: the MTA in front (Postfix) already did relay control before RCPT reached us
    relay_checked: bool = False
    smtputf8: bool = False
    mail_from: str = ""
    mail_options: list[str] = field(default_factory=list)
    rcpt_to: list[str] = field(default_factory=list)
    message: Message | None = None  # the parsed message, where the DATA stage runs
    summary: Summary | None = None  # what the fronts keep of it
    # the queue id of the MTA in front (Postfix, in milter mode)
    mta_queue_id: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    # (stage, address, reply) of each refused MAIL FROM / RCPT TO, for the mail log
    refused: list[tuple[str, str, Reply]] = field(default_factory=list)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)
    queue_id: str = field(default_factory=new_id)
    started: float = field(default_factory=time.time)
    # scratch space where policies keep per-transaction results (e.g. one virus scan)
    cache: dict[str, Any] = field(default_factory=dict)
    # sender authentication so far (relay.mailauth: the SPF result of MAIL, the
    # Authentication-Results entries); JSON values, so they travel with the envelope
    # to the inspection worker that runs DATA
    authentication: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.auth_login is not None

    def reset_envelope(self) -> None:
        """RSET / new MAIL: keep the session, forget the envelope."""
        self.mail_from = ""
        self.mail_options = []
        self.rcpt_to = []
        self.message = None
        self.summary = None
        self.mta_queue_id = None
        self.decisions = []
        self.refused = []
        self.added_headers = []
        self.conversions = []
        self.queue_id = new_id()
        self.started = time.time()
        self.cache = {}
        self.authentication = {}


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""

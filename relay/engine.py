"""The policy engine: runs policies per stage and turns findings into one reply.

Both fronts call the same four methods with the same `Transaction`. Some rules
are the engine's own and no configuration can remove them: relay control (no
open relay), address syntax, the message size limit and the RFC 5321 recipient
cap. Everything else is a policy, in the order of relay.toml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from policies.base import Context, Policy
from relay import mailauth
from relay.address import mailbox_name, sender_routing, valid_address
from relay.config import Config
from relay.mailauth import authresults
from relay.message import Message, MessageTooComplex
from relay.metrics import POLICY_SECONDS, batched_histogram
from relay.model import (
    ACTION_STRENGTH,
    Action,
    Decision,
    Finding,
    Outcome,
    Reply,
    Stage,
    Transaction,
    article_en,
    ascii_fold,
)
from relay.policyset import PolicySet
from relay.services import Services

log = logging.getLogger(__name__)

def bilingual(code: int, status: str, vi: str, en: str) -> Reply:
    return Reply(code, status, (vi, en))


BAD_SENDER = bilingual(501, "5.1.7", "Địa chỉ người gửi không hợp lệ", "Bad sender address syntax")
BAD_RECIPIENT = bilingual(
    501, "5.1.3", "Địa chỉ người nhận không hợp lệ", "Bad recipient address syntax"
)
NEEDS_SMTPUTF8 = bilingual(  # RFC 6531 3.7.4.1
    553, "5.6.7", "Địa chỉ không phải ASCII cần SMTPUTF8",
    "Non-ASCII address requires SMTPUTF8")
RELAY_DENIED = bilingual(
    554,
    "5.7.1",
    "Không cho phép chuyển tiếp thư: cần đăng nhập (Điều 5.1)",
    "Relay access denied: authentication required (Article 5.1)",
)
POLICY_ERROR = bilingual(
    451, "4.3.0", "Lỗi tạm thời khi kiểm tra thư, xin gửi lại sau",
    "Temporary error while checking the message, try again later",
)

ACCEPTED = Reply(250, "2.0.0", ("OK",))  # the front says where it was queued, if it was

# the engine's own rules report findings under this name, like a policy would
SERVER = "server"


def too_big(size: int | None, limit: int) -> Finding:
    """`size.exceeded`: 552 5.3.4 (RFC 5321 4.5.3.1.7; Điều 5.1 keeps the system running)."""
    got_vi, got_en = (f"{size} byte, ", f"{size} bytes, ") if size is not None else ("", "")
    return Finding(SERVER, "size.exceeded", "Điều 5.1",
                   f"Thư quá lớn: {got_vi}giới hạn {limit} byte",
                   f"Message too large: {got_en}limit {limit} bytes",
                   reply_code=552, status="5.3.4", details={"size": size, "limit": limit})


def size_refusal(size: int | None, limit: int) -> Reply:
    """The 552 reply of `too_big`, for fronts that refuse before the engine sees DATA."""
    reply = reply_for([Decision(too_big(size, limit), Action.REJECT)])
    assert reply is not None
    return reply


def too_many_recipients(limit: int, recipient: str) -> Finding:
    """`recipients.too_many`: 452 4.5.3, so the client sends the rest in another
    transaction (RFC 5321 4.5.3.1.8 asks to take at least 100)."""
    return Finding(SERVER, "recipients.too_many", "Điều 5.1",
                   f"Quá nhiều người nhận: tối đa {limit} trong một lần gửi",
                   f"Too many recipients: at most {limit} per transaction",
                   recipient=recipient, reply_code=452, status="4.5.3")


def source_route(recipient: str) -> Finding:
    """`recipient.source_route`: 554 5.7.1, as Postfix's reject_unauth_destination answers."""
    return Finding(SERVER, "recipient.source_route", "Điều 5.1",
                   "Không nhận địa chỉ có định tuyến (%, ! hoặc @ trong tên hộp thư)",
                   "Sender-specified routing is not allowed (%, ! or @ in the local part)",
                   recipient=recipient, reply_code=554, status="5.7.1")


def not_a_mailbox(recipient: str) -> Finding:
    """`recipient.mailbox_name`: 553 5.1.3 (RFC 5321: mailbox name not allowed)."""
    return Finding(SERVER, "recipient.mailbox_name", "Điều 4",
                   "Tên hộp thư không hợp lệ", "Mailbox name not allowed",
                   recipient=recipient, reply_code=553, status="5.1.3")


@dataclass
class Verdict:
    """The engine's answer after DATA, and how the message is to be delivered:
    `prefix` (header fields added on top: tags, the trace field) followed by the
    message as received, or by `replaced` when a conversion rewrote it. Kept apart
    so that a large received message is never copied to add a header."""

    outcome: Outcome  # accept | reject | tempfail
    reply: Reply
    prefix: bytes = b""
    replaced: bytes | None = None

    def delivered(self, received: bytes) -> bytes:
        return self.prefix + (received if self.replaced is None else self.replaced)


class Engine:
    def __init__(self, config: Config, policies: PolicySet, services: Services) -> None:
        self.config = config
        self.services = services
        context = Context(config, services)
        self.policies: list[Policy] = [entry.cls(entry.options, context) for entry in policies]
        self._by_stage = {
            stage: [p for p in self.policies if stage in p.stages] for stage in Stage
        }
        # each policy's histogram child, found once: _decide runs it for every policy
        # at every stage of every message
        self._timers = {(p.name, stage): batched_histogram(POLICY_SECONDS, p.name, stage.value)
                        for stage, stage_policies in self._by_stage.items()
                        for p in stage_policies}
        # a policy that writes our Authentication-Results is on: remove forged ones
        self._authenticates = bool({"spf", "dkim", "dmarc"} & set(policies.names))

    async def close(self) -> None:
        for policy in self.policies:
            await policy.close()

    # --- the four stages ---------------------------------------------------------
    async def connect(self, tx: Transaction) -> Reply | None:
        return await self._decide(Stage.CONNECT, tx)

    async def mail(self, tx: Transaction, sender: str, options: Sequence[str] = ()
                   ) -> Reply | None:
        """None when the sender is accepted. `sender` is "" for the null sender."""
        smtputf8 = any(o.upper() == "SMTPUTF8" for o in options)
        if sender and not valid_address(sender, smtputf8):
            return NEEDS_SMTPUTF8 if valid_address(sender) else BAD_SENDER
        tx.mail_from = sender
        tx.mail_options = list(options)
        tx.smtputf8 = smtputf8
        limit = self.config.server.max_message_size
        declared = declared_size(options)
        if declared is not None and declared > limit:
            return self._own(tx, too_big(declared, limit))
        return await self._decide(Stage.MAIL, tx)

    async def rcpt(self, tx: Transaction, recipient: str) -> Reply | None:
        """None when the recipient is accepted (and added to the envelope)."""
        if not valid_address(recipient, tx.smtputf8):
            return NEEDS_SMTPUTF8 if valid_address(recipient) else BAD_RECIPIENT
        if not self.may_relay(tx, recipient):
            return RELAY_DENIED
        if self.config.is_local(recipient) and (refusal := await self._local_name(tx, recipient)):
            return refusal
        limit = self.config.server.max_recipients
        if len(tx.rcpt_to) >= limit:
            return self._own(tx, too_many_recipients(limit, recipient))
        reply = await self._decide(Stage.RCPT, tx, recipient)
        if reply is None:
            tx.rcpt_to.append(recipient)
        return reply

    def oversize(self, tx: Transaction, size: int) -> Reply:
        """A message over `server.max_message_size` (fronts count while they receive)."""
        return self._own(tx, too_big(size, self.config.server.max_message_size))

    async def data(self, tx: Transaction, raw: bytes) -> Verdict:
        if len(raw) > self.config.server.max_message_size:
            return Verdict(Outcome.REJECT, self.oversize(tx, len(raw)))
        inspection = self.config.inspection
        tx.message = Message(raw, inspection.max_parts, inspection.max_depth)
        tx.summary = tx.message.summary()
        reply = await self._decide(Stage.DATA, tx)
        if reply is not None:
            return Verdict(Outcome.of(reply), reply)
        converted = self._apply_conversions(tx, raw)
        for d in tx.decisions:
            if d.action is Action.TAG:
                tx.added_headers.append(tag_header(d.finding))
        prefix = Message.prepend_headers(b"", tx.added_headers)
        # sender authentication (spf/dkim/dmarc policies): our Authentication-Results
        # on top, forged ones with our authserv-id removed (relay/mailauth/authresults.py)
        if self._authenticates:  # forged ones go from every client, checked or not
            hostname = self.config.server.hostname
            results = mailauth.results(tx)
            if results:
                prefix = authresults.render(hostname, results) + prefix
            converted = authresults.strip_ours(converted, hostname)
        return Verdict(Outcome.ACCEPT, ACCEPTED, prefix, None if converted is raw else converted)

    # --- relay control -----------------------------------------------------------
    def may_relay(self, tx: Transaction, recipient: str) -> bool:
        return self.config.is_local(recipient) or self.relays_for(tx)

    def relays_for(self, tx: Transaction) -> bool:
        """The client may send anywhere: trusted network, Postfix checked it (milter), or
        logged in on submission."""
        if tx.trusted or tx.relay_checked:
            return True
        return tx.authenticated and tx.listener_kind in ("submission", "smtps")

    # --- local names: the engine's own rule (issue 10, items 1 and 10) -----------------
    async def _local_name(self, tx: Transaction, recipient: str) -> Reply | None:
        """A local recipient must name a mailbox (`x/y@` names none, and the backend could
        never store it); a source route (`v%example.net@`, `v!example.net@`,
        `"v@example.net"@`) only from a client that may relay anyway, or when the
        directory has that exact mailbox: a backend with a percent hack would relay it."""
        if (sender_routing(recipient) and not self.relays_for(tx)
                and not await self._in_directory(recipient)):
            return self._own(tx, source_route(recipient))
        if mailbox_name(recipient) is None:
            return self._own(tx, not_a_mailbox(recipient))
        return None

    async def _in_directory(self, address: str) -> bool:
        try:
            return await self.services.directory.mailbox(address) is not None
        except Exception as exc:  # refusing a source route is the safe answer
            log.warning("directory look-up of %r failed: %s", address, exc)
            return False

    # --- running policies --------------------------------------------------------
    def _own(self, tx: Transaction, finding: Finding) -> Reply:
        """A finding of the engine's own rules: always enforced, recorded like any other."""
        action = Action.TEMPFAIL if finding.reply_code < 500 else Action.REJECT
        decision = Decision(finding, action)
        tx.decisions.append(decision)
        reply = reply_for([decision])
        assert reply is not None
        return reply

    async def _decide(
        self, stage: Stage, tx: Transaction, recipient: str | None = None
    ) -> Reply | None:
        decisions: list[Decision] = []
        for policy in self._by_stage[stage]:
            timer, started = self._timers[policy.name, stage], time.perf_counter()
            try:
                findings = await policy.check(stage, tx, recipient)
            except (MemoryError, MessageTooComplex):
                raise  # over the inspection budget: the inspector answers for the message
            except Exception:
                # a broken policy must not let mail through unchecked: fail closed
                log.exception("policy %s failed at %s", policy.name, stage)
                tx.decisions.append(
                    Decision(
                        Finding(policy.name, "policy.error", "", "Lỗi chính sách", "Policy error"),
                        Action.TEMPFAIL,
                    )
                )
                return POLICY_ERROR
            finally:
                timer.observe(time.perf_counter() - started)
            for finding in findings:
                decisions.append(Decision(finding, policy.options.action_for(finding.code)))
        tx.decisions.extend(decisions)
        return reply_for(decisions)

    def _apply_conversions(self, tx: Transaction, raw: bytes) -> bytes:
        by_policy: dict[str, list[Finding]] = {}
        for d in tx.decisions:
            if d.action is Action.CONVERT:
                by_policy.setdefault(d.finding.policy, []).append(d.finding)
        for policy in self.policies:
            findings = by_policy.get(policy.name)
            if not findings:
                continue
            converted = policy.convert(tx, findings)
            if converted is not None and converted != raw:
                raw = converted
                limits = self.config.inspection
                tx.message = Message(raw, limits.max_parts, limits.max_depth)
                tx.conversions.extend(f.code for f in findings)
        return raw


def declared_size(options: Sequence[str]) -> int | None:
    """The SIZE= a client declared at MAIL (RFC 1870), if any."""
    for option in options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit() and len(value) <= 20:
            return int(value)
    return None


def reply_for(decisions: Sequence[Decision]) -> Reply | None:
    """One SMTP reply from the findings that reject or tempfail, strongest first.

    Among equally strong findings the first leads the reply: the engine's own
    rules, then the policies in the order of their tables in relay.toml."""
    blocking = [d for d in decisions if d.action in (Action.REJECT, Action.TEMPFAIL)]
    if not blocking:
        return None
    strongest = max(ACTION_STRENGTH[d.action] for d in blocking)
    chosen = [d.finding for d in blocking if ACTION_STRENGTH[d.action] == strongest]
    first = chosen[0]
    if strongest == ACTION_STRENGTH[Action.TEMPFAIL]:
        code = first.tempfail_code if first.reply_code >= 500 else first.reply_code
        status = "4" + first.status[1:]
    else:
        code, status = first.reply_code, first.status
    lines: list[str] = []
    for f in dict.fromkeys(chosen):  # keep order, drop repeats
        lines.append(f"{f.vi} ({f.article})" if f.article else f.vi)
        lines.append(f"{f.en} ({article_en(f.article)})" if f.article else f.en)
    return Reply(code, status, tuple(dict.fromkeys(lines)))


def tag_header(finding: Finding) -> tuple[str, str]:
    if finding.tag is not None:
        return finding.tag
    article = ascii_fold(article_en(finding.article)) if finding.article else ""
    return ("X-Relay-Finding", f"{finding.code}; policy={finding.policy}"
            + (f"; article=\"{article}\"" if article else ""))


__all__ = ["Engine", "Verdict", "reply_for", "valid_address"]

"""Mail log lines in Postfix's shape, for the admins who grep them and for pflogsumm.

Beside the JSON decision log (everything, for auditors), each transaction and each
delivery attempt leaves the lines a Postfix administrator knows:

    QUEUEID: client=unknown[203.0.113.9], sasl_username=annv@dienbien.gov.vn
    QUEUEID: message-id=<...>
    QUEUEID: from=<a@example.org>, size=1234, nrcpt=1 (queue active)
    QUEUEID: to=<b@dienbien.gov.vn>, relay=127.0.0.1[127.0.0.1]:24, delay=0.31,
             delays=0.2/0/0/0.11, dsn=2.0.0, status=sent (250 2.0.0 ...)
    QUEUEID: removed
    NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <x@example.com>: ...;
             from=<a@example.org> to=<x@example.com> proto=ESMTP helo=<client.example>
    NOQUEUE: reject: DATA from unknown[203.0.113.9]: 550 5.7.1 <DATA>: ...; from=<...>

They go to syslog (`server.mail_log = "syslog"`, facility mail, like Postfix) with the
program names `relay/smtpd`, `relay/cleanup`, `relay/qmgr`, `relay/smtp`, `relay/lmtp`
and `relay/local` (`server.syslog_name`), so `journalctl -t relay/qmgr`, rsyslog's
mail.log and `pflogsumm --syslog-name=relay` read them as they read Postfix's.

`received()` is called where the decision-log line is written (relay.decisionlog), so
both fronts get it; the milter writes none of these lines, because the Postfix in
front logs its own (with our reply in its `milter-reject` line). `delivered()` and
`removed()` are called by the queue runner.

Everything a client chose (addresses, HELO, login) is cleaned before it is written:
controls and non-printables become `?`, and lengths are bounded.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import socket
from typing import TYPE_CHECKING

from relay.model import UNSAFE, Outcome, Reply, Transaction, ascii_fold

if TYPE_CHECKING:
    from relay.config import ServerConfig

log = logging.getLogger("relay.maillog")



def clean(text: str | None, limit: int = 320, spaces: bool = False) -> str:
    """A value a client (or a remote server) chose, safe for one log line: printable,
    no spaces unless `spaces`, bounded."""
    text = UNSAFE.sub("?", text or "")  # the one set replies use too (relay.model)
    if not spaces:
        text = text.replace(" ", "?")
    return text if len(text) <= limit else text[:limit] + "..."


def _number(seconds: float) -> str:
    """Postfix's delays: 2 decimals at most, no trailing zeros (0.31, 2, 0)."""
    return f"{max(0.0, seconds):.2f}".rstrip("0").rstrip(".") or "0"


def reply_text(reply: Reply | str, address: str | None = None) -> str:
    """`550 5.7.1 <addr>: text / text`, one line, ASCII (the lines are our own)."""
    where = f"<{clean(address)}>: " if address is not None else ""
    if isinstance(reply, str):  # as rendered for the wire: "550-5.6.0 a\r\n550 5.6.0 b"
        lines = [_CODES.sub("", line) for line in reply.splitlines()]
        head = _CODES.match(reply)
        code = head.group(0).replace("-", " ").strip() if head else ""
        text = " / ".join(line.replace(";", ",") for line in lines)
        return clean(f"{code} {where}{text}".strip(), 1000, spaces=True).replace("  ", " ")
    text = " / ".join(clean(ascii_fold(line), 1000, spaces=True).replace(";", ",")
                      for line in reply.lines)
    return f"{reply.code} {reply.status} {where}{text}".replace("  ", " ")


_CODES = re.compile(r"^\d{3}[ -](?:[245]\.\d{1,3}\.\d{1,3} )?")


# --- the receiving side: one call per transaction -----------------------------------
def received(tx: Transaction, outcome: Outcome, reply: Reply | str) -> None:
    if tx.relay_checked or tx.mta_queue_id is not None:  # the milter: Postfix logs its own
        return
    client = f"unknown[{clean(tx.client_ip, 64)}]"
    tail = f"proto=ESMTP helo=<{clean(tx.helo, 255)}>"
    sender = clean(tx.mail_from)
    smtpd = logging.getLogger("relay.maillog.smtpd")
    for stage, address, refusal in tx.refused:
        if stage == "MAIL":
            smtpd.info("NOQUEUE: reject: MAIL from %s: %s; from=<%s> %s", client,
                       reply_text(refusal, address), clean(address), tail)
        else:
            smtpd.info("NOQUEUE: reject: RCPT from %s: %s; from=<%s> to=<%s> %s", client,
                       reply_text(refusal, address), sender, clean(address), tail)
    if outcome is Outcome.ACCEPT:
        qid = tx.queue_id
        login = f", sasl_username={clean(tx.auth_login)}" if tx.auth_login else ""
        smtpd.info("%s: client=%s%s", qid, client, login)
        summary = tx.summary
        if summary is not None and summary.message_id:
            logging.getLogger("relay.maillog.cleanup").info(
                "%s: message-id=<%s>", qid, clean(summary.message_id.strip("<>"), 998))
        queued(qid, sender, summary.size if summary else 0, len(tx.rcpt_to))
    elif outcome in (Outcome.REJECT, Outcome.TEMPFAIL) and tx.rcpt_to:
        # refused at the end of DATA (content policies, size, a queue or archive error);
        # "DATA" and "<DATA>:" as Postfix's smtpd writes them, so pflogsumm finds the reason
        smtpd.info("NOQUEUE: reject: DATA from %s: %s; from=<%s> to=<%s> %s",
                   client, reply_text(reply, "DATA"), sender, clean(tx.rcpt_to[0]), tail)


# --- the queue runner ---------------------------------------------------------------------
STATUS = {"delivered": "sent", "temporary": "deferred", "permanent": "bounced"}
_DSN = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")


def dsn_of(status: str, reply: str) -> str:
    found = _DSN.match(reply)
    if found:
        return found.group(1)
    return {"delivered": "2.0.0", "temporary": "4.0.0"}.get(status, "5.0.0")


def delivered(queue_id: str, recipient: str, status: str, reply: str, transport: str,
              relay: str, delay: float, transmission: float) -> None:
    """One delivery attempt to one recipient. `delay` runs from arrival; `delays` is
    Postfix's a/b/c/d: waiting before this attempt / 0 (no separate queue manager) /
    0 (connection setup is part of the transmission here) / the attempt itself."""
    waited = max(0.0, delay - transmission)
    logging.getLogger(f"relay.maillog.{transport}").info(
        "%s: to=<%s>, relay=%s, delay=%s, delays=%s/0/0/%s, dsn=%s, status=%s (%s)",
        queue_id, clean(recipient), relay, _number(delay), _number(waited),
        _number(transmission), dsn_of(status, reply), STATUS.get(status, status),
        clean(reply.replace("\r\n", " "), 1000, spaces=True))


def queued(queue_id: str, sender: str, size: int, nrcpt: int) -> None:
    logging.getLogger("relay.maillog.qmgr").info(
        "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", queue_id, clean(sender), size,
        nrcpt)


def bounced(queue_id: str, bounce_id: str) -> None:
    logging.getLogger("relay.maillog.bounce").info(
        "%s: sender non-delivery notification: %s", queue_id, bounce_id)


def removed(queue_id: str) -> None:
    logging.getLogger("relay.maillog.qmgr").info("%s: removed", queue_id)


# --- where the lines go --------------------------------------------------------------------
class _SyslogFormat(logging.Formatter):
    """`relay/qmgr[1234]: QUEUEID: ...`: the program name Postfix admins filter on."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def format(self, record: logging.LogRecord) -> str:
        component = record.name.rpartition(".")[2]
        if component == "maillog":
            component = "relay"
        return f"{self.name}/{component}[{os.getpid()}]: {record.getMessage()}"


class _SyslogHandler(logging.handlers.SysLogHandler):
    """A line syslog cannot take (restarted, gone) goes to stderr as one line, not as
    the traceback `logging` prints by default, once per mail-log line."""

    def handleError(self, record: logging.LogRecord) -> None:
        logging.getLogger("relay").warning("mail log (syslog unavailable): %s",
                                           self.format(record))


def _listening(path: str) -> bool:
    """Whether a syslog daemon takes lines at PATH. SysLogHandler itself never says:
    it swallows a failed connect and then fails on every line."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError:
                continue
            return True
    return False


def setup(server: ServerConfig) -> None:
    """Send the lines where `server.mail_log` says; called at daemon start and reload."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    # off: above every level, so the lines' children build no record at all
    # (`disabled` stops only this logger, not relay.maillog.smtpd and the others)
    log.setLevel(logging.CRITICAL + 1 if server.mail_log == "off" else logging.INFO)
    log.propagate = server.mail_log == "stderr"
    if server.mail_log != "syslog":
        return
    if not _listening(server.syslog_socket):  # no syslog here (a container, a test)
        logging.getLogger("relay").info(
            "mail log: no syslog at %s; its lines go to stderr", server.syslog_socket)
        log.propagate = True
        return
    handler = _SyslogHandler(address=server.syslog_socket,
                             facility=logging.handlers.SysLogHandler.LOG_MAIL)
    handler.append_nul = False
    handler.setFormatter(_SyslogFormat(server.syslog_name))
    log.addHandler(handler)

"""What crosses between a front and an inspection worker, and how it is framed.

A frame is two lengths, a JSON header and a binary payload (the message bytes).
JSON, not pickle, in both directions: a worker parses hostile input, and a worker
that input managed to subvert must not be able to make the front run code by what
it answers. Everything read here is checked as it is decoded.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import fields
from typing import Any

from relay.engine import Verdict
from relay.model import Action, Decision, Finding, Outcome, Reply, Summary, Transaction

_LENGTHS = struct.Struct("!II")
MAX_HEADER = 16 * 1024 * 1024  # a verdict with many findings, never more
# what travels with the transaction: its envelope, not what the DATA stage computes
_ENVELOPE = [f.name for f in fields(Transaction)
             if f.name not in ("message", "summary", "decisions", "added_headers",
                               "conversions", "cache")]


class WireError(Exception):
    """A frame that does not decode: the peer is broken (or hostile)."""


def frame(header: dict[str, Any], payload: bytes = b"") -> list[bytes]:
    """The pieces of one frame, for `writelines`/`sendmsg` without copying the payload."""
    # ASCII JSON: text from a client may hold lone surrogates (undecodable bytes), which
    # only \u escapes carry exactly
    head = json.dumps(header, default=str).encode()
    return [_LENGTHS.pack(len(head), len(payload)), head, payload]


def lengths(prefix: bytes, max_payload: int) -> tuple[int, int]:
    head, payload = _LENGTHS.unpack(prefix)
    if head > MAX_HEADER or payload > max_payload:
        raise WireError(f"frame of {head} + {payload} bytes")
    return head, payload


PREFIX = _LENGTHS.size


def recv_frame(sock: socket.socket, max_payload: int) -> tuple[dict[str, Any], bytes]:
    """One frame from a blocking socket (the worker's side)."""
    head_len, payload_len = lengths(_recv_exactly(sock, PREFIX), max_payload)
    header = decode_header(_recv_exactly(sock, head_len))
    return header, _recv_exactly(sock, payload_len)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise EOFError("peer closed")
        got += k
    return bytes(buf)


def decode_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    return header


# --- the transaction going out ------------------------------------------------------
def envelope(tx: Transaction) -> dict[str, Any]:
    """The transaction so far: its envelope, and the decisions of the earlier stages
    (a `tag` at RCPT adds its header when the message is accepted, in the worker)."""
    out: dict[str, Any] = {name: getattr(tx, name) for name in _ENVELOPE}
    out["decisions"] = [_decision(d) for d in tx.decisions]
    return out


def transaction(data: dict[str, Any]) -> Transaction:
    tx = Transaction(**{name: data[name] for name in _ENVELOPE if name in data})
    tx.decisions = [Decision(_finding(d), Action(d["action"])) for d in data.get("decisions", [])]
    return tx


# --- the verdict coming back ----------------------------------------------------------
def verdict_header(tx: Transaction, verdict: Verdict, known: int) -> dict[str, Any]:
    """The verdict's header (decisions past the `known` ones the front sent); its
    payload is `verdict.prefix + verdict.replaced`."""
    reply = verdict.reply
    return {
        "outcome": verdict.outcome.value,
        "reply": {"code": reply.code, "status": reply.status, "lines": list(reply.lines)},
        "decisions": [_decision(d) for d in tx.decisions[known:]],
        "added_headers": [list(h) for h in tx.added_headers],
        "conversions": list(tx.conversions),
        "summary": None if tx.summary is None else {
            "size": tx.summary.size, "message_id": tx.summary.message_id,
            "subject": tx.summary.subject, "date": tx.summary.date},
        "prefix": len(verdict.prefix),  # the payload: prefix, then the replacement if any
        "replaced": verdict.replaced is not None,
    }


def _decision(d: Decision) -> dict[str, Any]:
    f = d.finding
    return {"action": d.action.value, "policy": f.policy, "code": f.code,
            "article": f.article, "vi": f.vi, "en": f.en, "recipient": f.recipient,
            "reply_code": f.reply_code, "status": f.status,
            "tempfail_code": f.tempfail_code, "tag": list(f.tag) if f.tag else None,
            "details": f.details}


def apply_verdict(tx: Transaction, header: dict[str, Any], payload: bytes) -> Verdict:
    """The worker's answer applied to the front's transaction; WireError if malformed."""
    try:
        reply = header["reply"]
        verdict_reply = Reply(int(reply["code"]), str(reply["status"]),
                              tuple(str(line) for line in reply["lines"]))
        outcome = Outcome(header["outcome"])
        decisions = [Decision(_finding(d), Action(d["action"])) for d in header["decisions"]]
        added = [(str(n), str(v)) for n, v in header["added_headers"]]
        conversions = [str(c) for c in header["conversions"]]
        summary = header["summary"]
        prefix_len, replaced = int(header["prefix"]), bool(header["replaced"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed verdict: {exc!r}") from None
    if not 0 <= prefix_len <= len(payload) or (not replaced and prefix_len != len(payload)):
        raise WireError("verdict payload does not match its header")
    tx.decisions.extend(decisions)
    tx.added_headers.extend(added)
    tx.conversions.extend(conversions)
    if summary is not None:
        tx.summary = Summary(int(summary["size"]), summary["message_id"],
                             str(summary["subject"]), summary["date"])
    return Verdict(outcome, verdict_reply, payload[:prefix_len],
                   payload[prefix_len:] if replaced else None)


def _finding(d: dict[str, Any]) -> Finding:
    tag = d["tag"]
    return Finding(
        policy=str(d["policy"]), code=str(d["code"]), article=str(d["article"]),
        vi=str(d["vi"]), en=str(d["en"]), recipient=d["recipient"],
        reply_code=int(d["reply_code"]), status=str(d["status"]),
        tempfail_code=int(d["tempfail_code"]),
        tag=(str(tag[0]), str(tag[1])) if tag else None,
        details=dict(d["details"] or {}))

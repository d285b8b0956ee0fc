"""The `Authentication-Results:` header (RFC 8601) for inbound mail.

One header, at the top, naming us (`authserv-id` = `server.hostname`) and the
spf, dkim and dmarc results of this transaction. Before it is added, every
Authentication-Results field that already carries our authserv-id is removed
(RFC 8601 5: a sender must not be able to forge our verdict for the mailbox
behind us). Values come from the client (addresses, d= tags): anything that is
not a plain token is quoted, controls are dropped, so no value can start a new
header line or end the field.
"""

from __future__ import annotations

import re

from relay.message import split_header

HEADER = "Authentication-Results"
# RFC 2045 token characters: anything else goes inside a quoted string
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+$")
_ID = re.compile(rb"^\s*(?:\([^()]*\)\s*)*([^\s;()]+)")


def value(text: str) -> str:
    """A property value as RFC 8601 2.2 allows it: a token, else a quoted string."""
    text = "".join(c for c in text if c.isprintable() and c not in "\r\n")[:254]
    if _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(authserv_id: str, results: dict[str, list[str]]) -> bytes:
    """The header field, folded one result per line, CRLF-terminated."""
    resinfo = [r for method in ("spf", "dkim", "dmarc") for r in results.get(method, [])]
    lines = [value(authserv_id) + ";"]
    lines += [f"{r};" for r in resinfo[:-1]] + resinfo[-1:]
    if not resinfo:
        lines = [value(authserv_id) + "; none"]
    return (f"{HEADER}: " + "\r\n\t".join(lines) + "\r\n").encode("utf-8", "replace")


def authserv_id_of(field_value: bytes) -> bytes | None:
    m = _ID.match(field_value)
    return m.group(1).lower() if m else None


def strip_ours(raw: bytes, authserv_id: str) -> bytes:
    """The message without the Authentication-Results fields that carry our id
    (`raw` itself when there is none)."""
    head, _ = split_header(raw)
    if HEADER.lower().encode() not in head.lower():
        return raw
    ours = authserv_id.lower().encode("utf-8", "replace")
    kept: list[bytes] = []
    dropping = dropped = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, colon, rest = line.partition(b":")
        dropping = bool(colon) and name.strip().lower() == HEADER.lower().encode() and \
            authserv_id_of(_unfolded(head, line, rest)) == ours
        if not dropping:
            kept.append(line)
        dropped = dropped or dropping
    if not dropped:
        return raw  # the same object: nothing to replace
    return b"".join(kept) + raw[len(head):]


def _unfolded(head: bytes, line: bytes, rest: bytes) -> bytes:
    """The field's value as far as the authserv-id goes (it is on the first line, or
    after a fold right behind the colon)."""
    if rest.strip():
        return rest
    after = head[head.index(line) + len(line):]
    return after.split(b"\n", 1)[0] if after[:1] in (b" ", b"\t") else rest


def apply(raw: bytes, authserv_id: str, results: dict[str, list[str]]) -> bytes:
    """Remove the forged ones, then put ours on top."""
    return render(authserv_id, results) + strip_ours(raw, authserv_id)

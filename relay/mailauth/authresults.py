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
    (`raw` itself when there is none). Each field is judged whole and unfolded: a fold
    before the id, inside a comment, or a repeated identical first line hides nothing."""
    head, _ = split_header(raw)
    if HEADER.lower().encode() not in head.lower():
        return raw
    ours = authserv_id.lower().encode("utf-8", "replace")
    name = HEADER.lower().encode()
    kept: list[bytes] = []
    dropped = False
    for field in _fields(head):
        label, colon, rest = field.partition(b":")
        if colon and label.strip().lower() == name and \
                authserv_id_of(_FOLD.sub(b" ", rest)) == ours:
            dropped = True
        else:
            kept.append(field)
    if not dropped:
        return raw  # the same object: nothing to replace
    return b"".join(kept) + raw[len(head):]


_FOLD = re.compile(rb"\r?\n(?=[ \t])")


def _fields(head: bytes) -> list[bytes]:
    """The header's fields, each with its continuation lines, line ends kept."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def apply(raw: bytes, authserv_id: str, results: dict[str, list[str]]) -> bytes:
    """Remove the forged ones, then put ours on top."""
    return render(authserv_id, results) + strip_ours(raw, authserv_id)

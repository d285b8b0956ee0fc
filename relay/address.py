"""Mail addresses: RFC 5321 syntax (RFC 6531 with SMTPUTF8), and which can name a mailbox.

Every address a client gives (both fronts, through the engine) is checked here, and
delivery and bounces rely on the same rules, so the three cannot disagree:

- `valid_address()`: the RFC 5321 `Mailbox` grammar, parsed rather than matched by a
  loose pattern. The former pattern ("anything but specials") let a quoted local part
  carry U+2028, which Python's `email` package folds as a line break: a bounce to
  `"x<U+2028>Bcc: …"@example.org` grew new header fields (issue 10, item 9).
  Non-ASCII is accepted only with SMTPUTF8 (RFC 6531), and never a control, format or
  separator character (Unicode categories C* and Z*: U+2028, U+2029, U+0085, bidi
  overrides, zero-width characters...).
- `mailbox_name()`: whether a local address can be stored as a mailbox (a Maildir
  folder, a directory entry): a plain dot-atom local part, one path component.
  `x/y@` is valid RFC 5321 but names no mailbox; the relay used to accept it and the
  Maildir backend then failed on it at every retry (issue 10, item 1).
- `sender_routing()`: `%`, `!` or a quoted `@` in the local part: the sender routes the
  mail through us (`user%elsewhere@ours`), which a backend such as Postfix with
  `allow_percent_hack` would relay out (issue 10, item 10).
"""

from __future__ import annotations

import ipaddress
import string
import unicodedata

# RFC 5321 4.5.3.1: octets, not characters (UTF-8 with SMTPUTF8)
MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_ADDRESS = 254  # a path is at most 256 octets, angle brackets included
MAX_LABEL = 63
MAX_FOLDER = 255  # one file-name component on Linux file systems

_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset(string.ascii_letters + string.digits + "-")
ROUTING_CHARACTERS = frozenset("%!@")


def octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def safe_unicode(ch: str) -> bool:
    """A non-ASCII character RFC 6531 may carry and no tool mistakes for a separator:
    no control, format, surrogate, private-use or unassigned code point, no space or
    line/paragraph separator (all of Unicode's C* and Z* categories)."""
    return unicodedata.category(ch)[0] not in "CZ"


def split(address: str) -> tuple[str, str]:
    """(local part, domain); the domain never holds an '@', a quoted local part may."""
    local, _, domain = address.rpartition("@")
    return local, domain


def valid_address(address: str, smtputf8: bool = True) -> bool:
    """RFC 5321 `Mailbox` (Local-part "@" Domain), RFC 6531 when `smtputf8`."""
    local, at, domain = address.rpartition("@")
    if not at or octets(address) > MAX_ADDRESS:
        return False
    return valid_local_part(local, smtputf8) and valid_domain(domain, smtputf8)


def valid_local_part(local: str, smtputf8: bool = True) -> bool:
    if not local or octets(local) > MAX_LOCAL:
        return False
    if local.startswith('"'):
        return _valid_quoted(local, smtputf8)
    # Dot-string: Atom *("." Atom), no empty atom (no leading, trailing or double dot)
    return all(atom and all(_atext(ch, smtputf8) for ch in atom)
               for atom in local.split("."))


def _atext(ch: str, smtputf8: bool) -> bool:
    if ch.isascii():
        return ch in _ATEXT
    return smtputf8 and safe_unicode(ch)


def _valid_quoted(local: str, smtputf8: bool) -> bool:
    """Quoted-string: qtextSMTP (%d32-33 / %d35-91 / %d93-126) or quoted-pairSMTP
    (backslash and %d32-126); not empty: an empty local part names nobody."""
    if len(local) < 3 or not local.endswith('"'):
        return False
    body = local[1:-1]
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 >= len(body) or not " " <= body[i + 1] <= "~":
                return False
            i += 2
            continue
        if ch.isascii():
            if not " " <= ch <= "~" or ch == '"':
                return False
        elif not (smtputf8 and safe_unicode(ch)):
            return False
        i += 1
    return True


def valid_domain(domain: str, smtputf8: bool = True) -> bool:
    """A domain name (U-labels with SMTPUTF8) or an IPv4/IPv6 address literal."""
    if domain.startswith("["):
        return _valid_literal(domain)
    if not domain or octets(domain) > MAX_DOMAIN:
        return False
    for label in domain.split("."):
        if not label or octets(label) > MAX_LABEL or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if ch.isascii():
                if ch not in _LDH:
                    return False
            elif not (smtputf8 and safe_unicode(ch)):
                return False
    return True


def _valid_literal(domain: str) -> bool:
    if not domain.endswith("]"):
        return False
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def sender_routing(address: str) -> bool:
    """`%`, `!` or (quoted) `@` in the local part: a source route, not a mailbox."""
    local, _ = split(address)
    return any(ch in ROUTING_CHARACTERS for ch in local)


def mailbox_name(address: str) -> str | None:
    """The name a local address is stored under (lowercased), or None when it can be
    no mailbox: invalid, a quoted local part, a '/', or longer than one file name.

    The Maildir backend makes it a folder; the engine refuses the rest at RCPT."""
    local, _ = split(address)
    if not valid_address(address) or local.startswith('"') or "/" in address:
        return None
    name = address.lower()
    if octets(name) > MAX_FOLDER:
        return None
    return name


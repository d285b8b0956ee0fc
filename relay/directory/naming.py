"""Điều 4: what an address may look like, which names are reserved, and suggestions.

Official mailboxes are `<agency-code>@` (the province's People's Committee is the
agency `ubnd`, so `ubnd@`), citizen-intake mailboxes are `tiepdan.<agency-code>@`
(and `tiepdan@` for the province). A personal mailbox may take none of these.
"""

from __future__ import annotations

import re
import unicodedata

PROVINCE = "ubnd"  # agency code of the provincial People's Committee
INTAKE = "tiepdan"

_LOCAL = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_CODE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


class NamingError(ValueError):
    """An address or code that breaks the naming rules of Điều 4."""


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", " ".join(text.split()))


def fold(text: str) -> str:
    """'Nguyễn Đức' -> 'nguyenduc': lowercase ASCII letters and digits only."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]", "", plain)


def check_code(code: str) -> str:
    code = code.strip().lower()
    if not _CODE.match(code):
        raise NamingError(f"agency code {code!r}: use 2-32 letters, digits or '-' "
                          "(it becomes the official address <code>@, Điều 4)")
    if code == INTAKE or code.startswith(INTAKE + "."):
        raise NamingError(f"agency code {code!r} is reserved for citizen intake (Điều 4)")
    return code


def split_address(address: str, local_domains: list[str]) -> tuple[str, str]:
    """Lowercased (local, domain); the domain must be one of ours."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at:
        raise NamingError(f"{address!r} is not an address (name@domain)")
    if domain not in local_domains:
        raise NamingError(f"{address}: domain must be one of {', '.join(local_domains)} (Điều 4)")
    if not _LOCAL.match(local) or ".." in local:
        raise NamingError(f"{address}: the name may use a-z, 0-9, '.', '_' and '-' (Điều 4)")
    return local, domain


def kind_of(address: str) -> str:
    """The mailbox kind the name alone shows (Điều 4): `ubnd@` is the province's official
    mailbox, `tiepdan@` and `tiepdan.<agency>@` are citizen intake, anything else reads as
    personal (an agency's `<code>@` is official too, but only the directory knows its codes:
    `DirectoryStore.kind()` asks it first)."""
    local = address.rpartition("@")[0].lower()
    if local == PROVINCE:
        return "official"
    if local == INTAKE or local.startswith(INTAKE + "."):
        return "citizen_intake"
    return "personal"


def official_local(agency_code: str) -> str:
    return agency_code


def intake_local(agency_code: str) -> str:
    return INTAKE if agency_code == PROVINCE else f"{INTAKE}.{agency_code}"


def check_kind(local: str, kind: str, agency_code: str, agency_codes: set[str],
               reserved: list[str]) -> None:
    """The address shape each kind of mailbox must have (Điều 4)."""
    if kind == "official":
        if local != official_local(agency_code):
            raise NamingError(f"an official mailbox of {agency_code} must be "
                              f"{official_local(agency_code)}@ (Điều 4)")
    elif kind == "citizen_intake":
        if local != intake_local(agency_code):
            raise NamingError(f"a citizen-intake mailbox of {agency_code} must be "
                              f"{intake_local(agency_code)}@ (Điều 4)")
    else:
        if (local in (PROVINCE, INTAKE) or local.startswith(INTAKE + ".")
                or local in agency_codes):
            raise NamingError(f"{local}@ is reserved for an official or citizen-intake "
                              "mailbox (Điều 4)")
        if local in reserved:
            raise NamingError(f"{local}@ is a reserved role address")


def name_parts(full_name: str) -> dict[str, str]:
    """Vietnamese order: family name first, given name last, middle names between."""
    words = [fold(w) for w in nfc(full_name).split()]
    words = [w for w in words if w]
    if not words:
        raise NamingError(f"cannot make an address from the name {full_name!r}")
    family, given = words[0], words[-1]
    middle = words[1:-1]
    initials = "".join(w[0] for w in words[:-1])
    return {"family": family if len(words) > 1 else "", "given": given,
            "middle": "".join(middle), "initials": initials}


def render_pattern(pattern: str, full_name: str, agency_code: str = "") -> str:
    """'{given}{initials}' with 'Nguyễn Văn An' -> 'annv'; '{given}.{family}{middle}' ->
    'an.nguyenvan'."""
    parts = name_parts(full_name)
    try:
        local = pattern.format(agency=agency_code, **parts)
    except (KeyError, IndexError, ValueError) as exc:
        raise NamingError(f"address pattern {pattern!r}: {exc}") from None
    local = re.sub(r"[._-]{2,}", ".", local).strip("._-")
    if not _LOCAL.match(local):
        raise NamingError(f"address pattern {pattern!r} gives an invalid name {local!r}")
    return local

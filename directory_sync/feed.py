"""The HR feed of the Department of Home Affairs (Điều 5.2): CSV, JSON Lines or LDAP.

Every reader gives the same records, each with where it came from (a line
number, or an LDAP DN) so that a malformed one can be pointed at. The formats
are documented, with examples, in `directory_sync/examples/README.md`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.directory import naming

AGENCY_STATUSES = ("active", "closed")
PERSON_STATUSES = ("active", "retired", "left")  # left: transferred out of the province
CSV_COLUMNS = ("record", "id", "name", "agency", "parent", "title", "status", "address",
               "basis")
_HR_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_FEED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class AgencyRecord:
    where: str
    code: str
    name: str
    parent: str | None
    status: str
    basis: str


@dataclass(frozen=True)
class PersonRecord:
    where: str
    hr_id: str
    full_name: str
    agency: str | None
    title: str
    status: str
    address: str | None
    basis: str


Record = AgencyRecord | PersonRecord


@dataclass(frozen=True)
class FeedProblem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class FeedError(Exception):
    """The feed cannot be used; nothing is applied."""

    def __init__(self, problems: list[FeedProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _text(value: Any) -> str:
    return naming.nfc(str(value)) if value is not None else ""


def make_record(where: str, row: dict[str, Any]) -> Record:
    """One validated record from a row of any format; ValueError names what is wrong."""
    kind = _text(row.get("record")).lower()
    ident = _text(row.get("id"))
    status = _text(row.get("status")).lower() or "active"
    basis = _text(row.get("basis"))
    if not basis:
        raise ValueError("basis is empty: every change needs its legal basis (Điều 5.3, 6)")
    if kind == "agency":
        code = naming.check_code(ident)
        if status not in AGENCY_STATUSES:
            raise ValueError(f"agency status must be one of {', '.join(AGENCY_STATUSES)}, "
                             f"got {status!r}")
        name = _text(row.get("name"))
        if not name:
            raise ValueError("agency name is empty")
        parent = _text(row.get("parent")).lower() or None
        return AgencyRecord(where, code, name, parent, status, basis)
    if kind == "person":
        if not _HR_ID.match(ident):
            raise ValueError(f"HR id must be 1-64 letters, digits, '.', '_' or '-', got {ident!r}")
        if status not in PERSON_STATUSES:
            raise ValueError(f"person status must be one of {', '.join(PERSON_STATUSES)}, "
                             f"got {status!r}")
        full_name = _text(row.get("name"))
        if not full_name:
            raise ValueError("name is empty")
        agency = _text(row.get("agency")).lower() or None
        if status == "active" and not agency:
            raise ValueError("an active person needs an agency")
        address = _text(row.get("address")).lower() or None
        if address is not None and address.count("@") != 1:
            raise ValueError(f"address {address!r} is not name@domain")
        return PersonRecord(where, ident, full_name, agency, _text(row.get("title")), status,
                            address, basis)
    raise ValueError(f"record must be 'agency' or 'person', got {kind!r}")


def _collect(rows: Iterable[tuple[str, dict[str, Any] | Exception]]) -> list[Record]:
    records: list[Record] = []
    problems: list[FeedProblem] = []
    seen: dict[tuple[str, str], str] = {}
    for where, row in rows:
        if isinstance(row, Exception):
            problems.append(FeedProblem(where, str(row)))
            continue
        try:
            record = make_record(where, row)
        except ValueError as exc:
            problems.append(FeedProblem(where, str(exc)))
            continue
        key = ("agency", record.code) if isinstance(record, AgencyRecord) else (
            "person", record.hr_id)
        if key in seen:
            problems.append(FeedProblem(where, f"{key[0]} {key[1]} already given at "
                                               f"{seen[key]}"))
            continue
        seen[key] = where
        records.append(record)
    if problems:
        raise FeedError(problems)
    return records


def parse_csv(text: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if reader.fieldnames is None:
        return []
    missing = [c for c in ("record", "id", "name", "status", "basis")
               if c not in reader.fieldnames]
    if missing:
        raise FeedError([FeedProblem("line 1", f"missing columns: {', '.join(missing)} "
                                               f"(expected {','.join(CSV_COLUMNS)})")])

    def rows() -> Iterable[tuple[str, dict[str, Any] | Exception]]:
        start = 2
        try:
            for row in reader:
                where = f"line {start}"
                start = reader.line_num + 1
                if None in row or any(v is None for v in row.values()):
                    yield where, ValueError(f"expected {len(reader.fieldnames or [])} columns")
                    continue
                if not any(v.strip() for v in row.values()):
                    continue  # blank line
                yield where, row
        except csv.Error as exc:
            yield f"line {reader.line_num}", exc

    return _collect(rows())


def parse_jsonl(text: str) -> list[Record]:
    """JSON Lines: one object per line, so that a problem has a line number."""

    def rows() -> Iterable[tuple[str, dict[str, Any] | Exception]]:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("//"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {n}", ValueError(f"not valid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                yield f"line {n}", ValueError("expected a JSON object")
                continue
            yield f"line {n}", obj

    return _collect(rows())


def read_ldap(url: str, bind_dn: str | None = None, password: str | None = None,
              timeout: float = 10.0) -> list[Record]:
    """Agencies: organizationalUnit entries with `businessCategory` (active|closed),
    `ou` = code (the RDN) and a second `ou` value = name, `description` = basis,
    the parent agency = the entry above. People: inetOrgPerson with `employeeNumber`
    (HR id), `cn`, `title`, `departmentNumber` (agency code), `employeeType` (status),
    optional `mail`, `description` (basis)."""
    import ldap3
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.dn import parse_dn

    scheme, _, rest = url.partition("://")
    hostport, _, base = rest.partition("/")
    base = urllib.parse.unquote(base)
    try:
        server = ldap3.Server(f"{scheme}://{hostport}", connect_timeout=int(timeout))
        conn = ldap3.Connection(server, user=bind_dn, password=password, auto_bind=True,
                                receive_timeout=int(timeout), read_only=True)
    except LDAPException as exc:
        raise FeedError([FeedProblem(url, f"cannot bind: {exc}")]) from None
    try:
        conn.search(base, "(&(objectClass=organizationalUnit)(businessCategory=*))",
                    attributes=["ou", "description", "businessCategory"])
        ou_entries = list(conn.entries)
        conn.search(base, "(objectClass=inetOrgPerson)",
                    attributes=["employeeNumber", "cn", "title", "departmentNumber",
                                "employeeType", "mail", "description"])
        person_entries = list(conn.entries)
    except LDAPException as exc:
        raise FeedError([FeedProblem(url, f"search failed: {exc}")]) from None
    finally:
        conn.unbind()

    def first(entry: Any, attr: str) -> str:
        values = entry[attr].values if attr in entry else []
        return str(values[0]) if values else ""

    agency_dns = {e.entry_dn.lower(): e for e in ou_entries}

    def rows() -> Iterable[tuple[str, dict[str, Any] | Exception]]:
        for e in ou_entries:
            rdn = parse_dn(e.entry_dn)
            code = rdn[0][1]
            names = [str(v) for v in e["ou"].values if str(v).lower() != code.lower()]
            parent_dn = e.entry_dn.split(",", 1)[1] if "," in e.entry_dn else ""
            parent = agency_dns.get(parent_dn.lower())
            yield f"dn: {e.entry_dn}", {
                "record": "agency", "id": code, "name": names[0] if names else "",
                "parent": parse_dn(parent.entry_dn)[0][1] if parent else "",
                "status": first(e, "businessCategory"), "basis": first(e, "description")}
        for e in person_entries:
            yield f"dn: {e.entry_dn}", {
                "record": "person", "id": first(e, "employeeNumber"), "name": first(e, "cn"),
                "agency": first(e, "departmentNumber"), "title": first(e, "title"),
                "status": first(e, "employeeType"), "address": first(e, "mail"),
                "basis": first(e, "description")}

    return _collect(rows())


def read_source(source: str, bind_dn: str | None = None,
                bind_password: str | None = None) -> list[Record]:
    """Records from a file path, an http(s) URL (CSV or JSON Lines) or an ldap(s) URL."""
    if source.startswith(("ldap://", "ldaps://")):
        return read_ldap(source, bind_dn, bind_password)
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=30) as response:
                raw = response.read(MAX_FEED_BYTES + 1)
                kind = response.headers.get_content_type()
        else:
            raw = Path(source).read_bytes()
            kind = ""
    except (OSError, ValueError) as exc:
        raise FeedError([FeedProblem(source, f"cannot read: {exc}")]) from None
    if len(raw) > MAX_FEED_BYTES:
        raise FeedError([FeedProblem(source, f"larger than {MAX_FEED_BYTES} bytes")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FeedError([FeedProblem(f"line {line}", "not UTF-8 (TCVN 6909, Điều 9)")]) from None
    path = source.split("?", 1)[0].lower()
    if path.endswith((".jsonl", ".ndjson", ".json")) or "json" in kind:
        return parse_jsonl(text)
    if path.endswith(".csv") or "csv" in kind:
        return parse_csv(text)
    raise FeedError([FeedProblem(source, "unknown format: name it .csv or .jsonl")])

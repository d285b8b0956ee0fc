"""The forms values take before they are stored or compared: one place, so an address
searched for is spelled exactly as the writer stored it."""

from __future__ import annotations

import json
from typing import Any

from relay.archive import chain


def address(addr: str) -> str:
    """`<Ubnd@DienBien.gov.vn>` -> `ubnd@dienbien.gov.vn`."""
    return addr.strip().strip("<>").lower()


def clean_text(text: str, limit: int | None = None) -> str:
    """Text a database column accepts: no lone surrogates, no NUL."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\0", "")
    return text[:limit] if limit else text


def json_text(obj: Any) -> str:
    """The canonical JSON of obj as stored in a hashed column (datetimes as strings)."""
    return chain.canonical(json.loads(json.dumps(obj, default=str))).decode()

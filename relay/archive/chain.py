"""Hashes, canonical forms and signatures: the parts of the archive an auditor re-computes.

An entry's hash is sha256(previous entry hash || sha256(canonical JSON of its fields)),
so a change to any indexed field, to a blob (its sha256 is a field), to the order or
to the set of entries changes every hash after it. A checkpoint is an Ed25519
signature over the (seq, hash) heads of the entries chain and of the access log.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
ENTRY_DOMAIN = b"dienbien-relay archive entry v1\n"
ACCESS_DOMAIN = b"dienbien-relay archive access v1\n"
CHECKPOINT_DOMAIN = b"dienbien-relay archive checkpoint v1\n"  # entries head only
CHECKPOINT_V2_DOMAIN = b"dienbien-relay archive checkpoint v2\n"  # entries and access heads
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# the entry columns the hash covers, in the order they are shown
HASHED = (
    "seq", "recorded_at", "node", "queue_id", "mailbox", "kind", "direction", "sender",
    "recipients", "subject", "message_id", "accepted_hash", "accepted_size",
    "delivered_hash", "delivered_size", "meta",
)
ACCESS_HASHED = ("seq", "at", "who", "action", "target", "reason")


def now() -> datetime:
    """UTC, naive (stored as such in both SQLite and PostgreSQL), microsecond precision."""
    return datetime.now(UTC).replace(tzinfo=None)


def timestamp(dt: datetime) -> str:
    return dt.strftime(TIME_FORMAT)


def canonical(obj: Any) -> bytes:
    # ASCII escapes: any string (even a lone surrogate from a broken header) has one form
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fold(text: str) -> str:
    """The searchable form of a subject: NFC, case-folded (SQL lower() is ASCII-only)."""
    return unicodedata.normalize("NFC", text).casefold()


def _plain(value: Any) -> Any:
    return timestamp(value) if isinstance(value, datetime) else value


def entry_fields(row: Any) -> dict[str, Any]:
    """The hashed fields of an entry row (a mapping with the table's columns)."""
    fields = {name: row[name] for name in HASHED}
    fields["recorded_at"] = _plain(fields["recorded_at"])  # the one time among HASHED
    fields["recipients"] = json.loads(fields["recipients"])
    fields["meta"] = json.loads(fields["meta"])
    return fields


def fields_digest(fields: dict[str, Any], domain: bytes = ENTRY_DOMAIN) -> str:
    return sha256(domain + canonical(fields))


def link(prev_hash: str, digest: str) -> str:
    return sha256(bytes.fromhex(prev_hash) + bytes.fromhex(digest))


def access_fields(row: Any) -> dict[str, Any]:
    fields = {name: _plain(row[name]) for name in ACCESS_HASHED}
    fields["target"] = json.loads(fields["target"])
    return fields


# --- checkpoints ------------------------------------------------------------------
def checkpoint_message(seq: int, entry_hash: str, signed_at: str, key_id: str,
                       access_seq: int | None = None, access_hash: str | None = None) -> bytes:
    """What a checkpoint signs. v2 (both heads) whenever the access head is given; v1
    (the entries head alone) is what archives written before the access log was signed
    carry, and is still checked."""
    if access_seq is None:
        return CHECKPOINT_DOMAIN + canonical(
            {"seq": seq, "hash": entry_hash, "signed_at": signed_at, "key_id": key_id})
    return CHECKPOINT_V2_DOMAIN + canonical(
        {"seq": seq, "hash": entry_hash, "access_seq": access_seq, "access_hash": access_hash,
         "signed_at": signed_at, "key_id": key_id})


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256(raw)[:16]


def generate_keys(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 key pair: private PEM readable by the owner only, public PEM beside it."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = _create_private(private_path)
    with open(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def _create_private(path: Path) -> int:
    import os

    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key

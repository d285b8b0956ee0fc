"""argon2id password hashes (RFC 9106 parameters of argon2-cffi) and generated passwords."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
# no 0/O/1/l/I: passwords are read aloud or copied from paper
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_dummy: str | None = None

MIN_LENGTH = 10


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    return _hasher.hash(password)


def verify(stored: str | None, password: str) -> bool:
    """Also does the full work for an unknown login (stored None), so timing tells nothing."""
    global _dummy
    if stored is None and _dummy is None:
        _dummy = _hasher.hash(secrets.token_urlsafe(16))
    try:
        return _hasher.verify(stored or _dummy, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def rehash_if_needed(stored: str, password: str) -> str | None:
    """A new hash when the stored one uses weaker parameters than today's (after a good login)."""
    return _hasher.hash(password) if _hasher.check_needs_rehash(stored) else None


def generate(length: int = 16) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))

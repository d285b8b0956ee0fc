"""DKIM signing of outbound mail (RFC 6376), `[dkim_signing]`.

What is signed: mail that leaves for another domain, sent by an authenticated or
trusted client (the province's own), whose From: domain is one of ours. Where: at
outbound delivery (`relay.delivery.Router`), so the signature covers the message
exactly as it leaves, after every conversion (tcvn6909) and header the relay
added; a signature made earlier would be broken by them. Each delivery attempt
signs afresh (the queue keeps the unsigned bytes), so a retried message carries
one signature with a current timestamp.

How: relaxed/relaxed, rsa-sha256, the header fields RFC 6376 5.4.1 recommends that
the message has, From: signed once more than it appears (so no second From: can
be added). The key for a domain is `[dkim_signing] key` with `{domain}` and
`{selector}` filled in, under state_dir; `relay dkim keygen` writes one and prints
its DNS record. Rotation: generate a key under a new selector, publish its
record, switch `selector`, and leave the old record published until mail signed
with it has been delivered (a few days); both keys coexist meanwhile.

A key that cannot be read is a `SigningError`: the Router defers the delivery
(never sends unsigned what should be signed) and says why in the queue.

dkimpy's RSA is pure Python: one 2048-bit signature took 22 ms of CPU here, with
the GIL held. Its private-key operation is replaced by OpenSSL's (`cryptography`),
1 ms: PKCS#1 v1.5 is deterministic, so the signature is the same bytes
(tests/test_dkim_signing.py checks they are), and dkimpy still does everything else.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.config import Config
from relay.mailauth.rsa import install as use_openssl_rsa
from relay.message import Message

use_openssl_rsa()  # dkimpy's RSA arithmetic by OpenSSL (relay/mailauth/rsa.py)

CANONICALIZE = (b"relaxed", b"relaxed")


class SigningError(Exception):
    """The message should be signed and cannot be (key missing or unreadable)."""


@dataclass(frozen=True)
class Signature:
    domain: str
    selector: str


def from_domain(message: bytes) -> str | None:
    """The one domain of the From: field, or None (no From:, several domains)."""
    values = Message(message).get_all("From")
    try:
        domains = {a.rpartition("@")[2].lower() for _, a in getaddresses(values) if "@" in a}
    except Exception:
        return None
    return domains.pop() if len(values) == 1 and len(domains) == 1 else None


class Signer:
    """Signs with the configured keys; keys are read once and again when their file
    changes (a rotation needs no restart)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.dkim_signing
        self._keys: dict[Path, tuple[float, bytes]] = {}

    def should_sign(self, message: bytes, authenticated: bool, client_ip: str) -> str | None:
        """The domain to sign for, or None when this message is not ours to sign."""
        if not self.settings.enabled:
            return None
        if not authenticated and not self.config.is_trusted(client_ip):
            return None
        domain = from_domain(message)
        if domain is None or not self.settings.signs(self.config, domain):
            return None
        return domain

    def sign(self, message: bytes, authenticated: bool, client_ip: str) -> bytes:
        """The message with our DKIM-Signature on top, or unchanged when it is not ours."""
        domain = self.should_sign(message, authenticated, client_ip)
        if domain is None:
            return message
        return self.sign_as(message, domain, self.settings.selector)

    def sign_as(self, message: bytes, domain: str, selector: str) -> bytes:
        key = self._key(self.settings.key_path(self.config, domain, selector))
        try:
            signer = dkim.DKIM(message, linesep=b"\r\n")
            header = signer.sign(selector.encode(), domain.encode(), key,
                                 canonicalize=CANONICALIZE,
                                 include_headers=signer.default_sign_headers())
        except dkim.DKIMException as exc:
            raise SigningError(f"DKIM signing for {domain} failed: {exc}") from None
        return header + message

    def _key(self, path: Path) -> bytes:
        try:
            mtime = path.stat().st_mtime
            cached = self._keys.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            key = path.read_bytes()
        except OSError as exc:
            raise SigningError(f"DKIM key {path}: {exc.strerror}") from None
        self._keys[path] = (mtime, key)
        return key


# --- keys and their DNS records -------------------------------------------------------
def generate(path: Path, bits: int = 2048, force: bool = False) -> bytes:
    """Write a new RSA key (PKCS#8 PEM, mode 0600) at PATH; its public key as DER."""
    if path.exists() and not force:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return public_der(pem)


def public_der(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def txt_value(public: bytes) -> str:
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def zone_record(domain: str, selector: str, public: bytes) -> str:
    """The record in zone-file syntax, in strings of at most 255 bytes (RFC 1035)."""
    value = txt_value(public)
    chunks = [value[i:i + 250] for i in range(0, len(value), 250)]
    body = "\n\t".join(f'"{c}"' for c in chunks)
    return f"{selector}._domainkey.{domain}. IN TXT (\n\t{body} )"

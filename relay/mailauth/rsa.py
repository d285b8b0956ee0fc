"""dkimpy's RSA primitives computed by OpenSSL (`cryptography`).

dkimpy does its RSA in pure Python: one 2048-bit signature took 22 ms of CPU here
(the GIL held all along), one verification about 0.4 ms of the 0.8 ms a DKIM check
costs. Everything else of DKIM (parsing, canonicalisation, tags, key records) stays
dkimpy's; only the two functions it calls for the arithmetic are replaced, with
the same arguments and results: RSASSA-PKCS1-v1_5 is deterministic, so a signature
is the same bytes either way (tests/test_dkim_signing.py and tests/test_dkim_dmarc.py
compare them with dkimpy's own on good and on broken input).
"""

from __future__ import annotations

from typing import Any

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_MAX_KEYS = 1024  # keys kept ready (signing: a few; verifying: the senders seen lately)
_PRIVATE: dict[int, rsa.RSAPrivateKey] = {}
_PUBLIC: dict[tuple[int, int], rsa.RSAPublicKey] = {}


def _keep(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _MAX_KEYS:
        cache.pop(next(iter(cache)))  # the oldest
    cache[key] = value


def sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """`dkim.crypto.RSASSA_PKCS1_v1_5_sign(hash, private_key)`."""
    key = _PRIVATE.get(private_key["modulus"])
    if key is None:
        public = rsa.RSAPublicNumbers(private_key["publicExponent"], private_key["modulus"])
        key = rsa.RSAPrivateNumbers(
            private_key["prime1"], private_key["prime2"], private_key["privateExponent"],
            private_key["exponent1"], private_key["exponent2"], private_key["coefficient"],
            public).private_key()
        _keep(_PRIVATE, private_key["modulus"], key)
    algorithm = _HASHES[digest.name.lower()]()
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


def verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """`dkim.crypto.RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)`."""
    name = (public_key["modulus"], public_key["publicExponent"])
    key = _PUBLIC.get(name)
    if key is None:
        try:
            key = rsa.RSAPublicNumbers(public_key["publicExponent"],
                                       public_key["modulus"]).public_key()
        except ValueError:  # a key OpenSSL refuses (even exponent...): nothing verifies
            return False
        _keep(_PUBLIC, name, key)
    algorithm = _HASHES.get(digest.name.lower())
    if algorithm is None:
        return False
    try:
        key.verify(signature, digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except (InvalidSignature, ValueError):
        return False
    return True


def install() -> None:
    """Point dkimpy at these (it calls them by their names in its own module)."""
    dkim.RSASSA_PKCS1_v1_5_sign = sign
    dkim.RSASSA_PKCS1_v1_5_verify = verify

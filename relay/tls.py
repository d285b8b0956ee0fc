"""TLS for the listeners: the configured certificate, or a self-signed one made on first start."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.config import Config
from relay.files import private_dir, write_private

log = logging.getLogger(__name__)


def ensure_self_signed(cert: Path, key: Path, hostname: str) -> None:
    if cert.exists() and key.exists():
        return
    private_dir(cert.parent, 0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.DNSName("localhost"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    write_private(key, private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    log.warning("generated a self-signed certificate for %s in %s; configure server.tls_cert "
                "and server.tls_key for production", hostname, cert)


def server_context(config: Config) -> ssl.SSLContext:
    if config.server.tls_cert:
        cert = config.base_dir / config.server.tls_cert
        key = config.base_dir / (config.server.tls_key or config.server.tls_cert)
    else:
        cert = config.state_file("tls/cert.pem")
        key = config.state_file("tls/key.pem")
        ensure_self_signed(cert, key, config.server.hostname)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context

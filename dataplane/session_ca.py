"""Per-session certificate authorities: the agent trusts its session's CA, and only the data plane holds its key.

Each session's CA key is derived (HKDF-SHA256) from the data plane's CA seed and the session id, so several
proxy workers that share the seed mint interchangeable certificates for the same session without talking to
each other; the number of proxy processes follows traffic, not sessions. The seed is 32 random bytes in a 0600
file of the data plane's home and never leaves the data plane. A session's CA is only ever used while the
control plane says the session is live: once it ends, the proxy refuses its token, mints nothing more for it
and drops the cached CA, so a certificate the agent kept is useless. The CA certificate also expires with the
session. Imports no Django.
"""

from __future__ import annotations

import datetime
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from mitmproxy import certs

SEED_BYTES = 32
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
_NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


class SeedError(RuntimeError):
    """The CA seed file is missing, unreadable or unsafe."""


def seed_load_or_create(path: Path) -> bytes:
    """The data plane's CA seed: created once with mode 0600, refused if anyone else may read it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise SeedError(f"{path} must belong to this user with mode 0600") from None
        seed = path.read_bytes()
        if len(seed) != SEED_BYTES:
            raise SeedError(f"{path} is not a CA seed ({len(seed)} bytes, expected {SEED_BYTES})") from None
        return seed
    seed = secrets.token_bytes(SEED_BYTES)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed)
        handle.flush()
        os.fsync(handle.fileno())
    return seed


def _derive(seed: bytes, session_id: str, label: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label + session_id.encode()).derive(seed)


def session_ca(
    seed: bytes, *, session_id: str, expires_at: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The session's CA key (derived) and a certificate for it valid until an hour past the session's end."""
    scalar = int.from_bytes(_derive(seed, session_id, b"aileron session ca key\x00", 48), "big") % (_P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Aileron"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Aileron session {session_id}"[:64]),
        ]
    )
    serial = int.from_bytes(_derive(seed, session_id, b"aileron session ca serial\x00", 16), "big") >> 1 or 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(expires_at + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def session_certstore(
    seed: bytes, *, session_id: str, expires_at: datetime.datetime, dhparams: certs.DHParams
) -> certs.CertStore:
    """A mitmproxy certificate store that signs leaf certificates with the session's CA."""
    key, cert = session_ca(seed, session_id=session_id, expires_at=expires_at)
    return certs.CertStore(key, certs.Cert(cert), None, b"", dhparams)

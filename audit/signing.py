"""The key that signs audit checkpoints (Ed25519) and, derived from it, the key of the chain's link HMACs: kept in
a file outside the database (AILERON_AUDIT_KEY_FILE, by default AILERON_HOME/audit-signing-key), so that someone
who can rewrite the database can neither forge a link nor sign a chain they rebuilt. Made on first use,
readable only by its owner."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key
from django.conf import settings


class SigningKeyError(RuntimeError):
    """The audit signing key cannot be read or made; the message says which file and why."""


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # never replace a key another process made meanwhile
        except FileExistsError:
            tmp.unlink()
            return _load_or_create(path)
        tmp.unlink()
        return key
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"cannot read the audit signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"the audit signing key {path} is not an Ed25519 key")
    return key


@functools.cache
def _cached(path: str) -> Ed25519PrivateKey:
    return _load_or_create(Path(path))


def signing_key() -> Ed25519PrivateKey:
    return _cached(str(settings.AILERON_AUDIT_KEY_PATH))


def link_key() -> bytes:
    """The HMAC key of the chain's links, derived from the signing key (so one file holds both secrets)."""
    raw = signing_key().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return hashlib.sha256(b"aileron-audit-link-key|" + raw).digest()

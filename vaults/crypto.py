"""Vault cryptography: pure functions over bytes, shared by the CLI, the credential service and the tests.

No ORM and no Django. The scheme follows the 1Password/Bitwarden pattern:

- the user's passphrase -> master key with Argon2id (parameters and salt stored beside the key material);
- each user has an X25519 key pair; the private key is sealed with AES-256-GCM under a key derived from the
  master key;
- each vault has a random 256-bit vault key per key version; each credential is AES-256-GCM under it, with
  associated data binding (organization, vault, credential, key version);
- the vault key is wrapped to each member's public key with HPKE (RFC 9180: X25519, HKDF-SHA256,
  AES-256-GCM), its `info` binding (vault, member, key version);
- the master key travels to the credential service HPKE-sealed to the key of its attestation report
  (dataplane.attestation), its `info` binding (session token lookup, attestation nonce).

Every envelope starts with a two-byte kind tag and a format version so the scheme can change later.
Any failure to open an envelope raises DecryptionError and nothing else.
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16

# Floors, not defaults to tune down: parameters read from storage may be stronger, never weaker.
MIN_MEMORY_KIB = 64 * 1024
MIN_ITERATIONS = 3
MIN_PARALLELISM = 4
# Ceilings too: parameters come from the control plane, which must not be able to make a CLI spin or swap.
MAX_MEMORY_KIB = 4 * 1024 * 1024
MAX_ITERATIONS = 64
MAX_PARALLELISM = 64

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_HPKE_OVERHEAD = 32 + 16  # encapsulated X25519 key + GCM tag

_KIND_PRIVATE_KEY = b"AK"
_KIND_CREDENTIAL = b"AC"
_KIND_WRAPPING = b"AW"
_HEADER = struct.Struct(">2sBI")  # kind, format version, key version


class CryptoError(Exception):
    """Base of the vault crypto errors."""


class DecryptionError(CryptoError):
    """An envelope could not be opened: wrong key or passphrase, wrong binding, or damaged bytes."""


class WeakParameters(CryptoError):
    """Key-derivation parameters below the floor."""


def b64(data: bytes | bytearray) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise CryptoError("not valid base64") from exc


@dataclass(frozen=True, slots=True)
class KdfParams:
    salt: bytes
    memory_kib: int = MIN_MEMORY_KIB
    iterations: int = MIN_ITERATIONS
    parallelism: int = MIN_PARALLELISM
    algorithm: str = "argon2id"

    def __post_init__(self) -> None:
        if self.algorithm != "argon2id":
            raise WeakParameters(f"unsupported key derivation {self.algorithm!r}")
        if (
            self.memory_kib < MIN_MEMORY_KIB
            or self.iterations < MIN_ITERATIONS
            or self.parallelism < MIN_PARALLELISM
            or len(self.salt) < SALT_BYTES
        ):
            raise WeakParameters("Argon2id parameters are below m=64 MiB, t=3, p=4, 16-byte salt")
        if (
            self.memory_kib > MAX_MEMORY_KIB
            or self.iterations > MAX_ITERATIONS
            or self.parallelism > MAX_PARALLELISM
            or len(self.salt) > 64
        ):
            raise CryptoError("Argon2id parameters are beyond m=4 GiB, t=64, p=64: refused")

    @classmethod
    def generate(cls) -> KdfParams:
        return cls(salt=os.urandom(SALT_BYTES))

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "parallelism": self.parallelism,
            "salt": b64(self.salt),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KdfParams:
        try:
            return cls(
                salt=unb64(str(data["salt"])),
                memory_kib=int(data["memory_kib"]),
                iterations=int(data["iterations"]),
                parallelism=int(data["parallelism"]),
                algorithm=str(data["algorithm"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CryptoError(f"malformed key-derivation parameters: {exc}") from exc


def derive_master_key(passphrase: str, params: KdfParams) -> bytearray:
    """Argon2id; returns a mutable buffer so the caller can wipe it."""
    if not passphrase:
        raise CryptoError("the passphrase is empty")
    raw = hash_secret_raw(
        secret=passphrase.encode("utf-8"),
        salt=params.salt,
        time_cost=params.iterations,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=KEY_BYTES,
        type=Type.ID,
    )
    return bytearray(raw)


def wipe(buffer: bytearray | None) -> None:
    """Overwrite a buffer we own. (Immutable copies made by libraries are beyond our reach.)"""
    if buffer is not None:
        for i in range(len(buffer)):
            buffer[i] = 0


def _fields(*parts: str) -> bytes:
    """Unambiguous encoding of the binding fields: each length-prefixed."""
    out = bytearray()
    for part in parts:
        encoded = part.encode("utf-8")
        out += struct.pack(">I", len(encoded)) + encoded
    return bytes(out)


def _subkey(master_key: bytes | bytearray, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(bytes(master_key))


def _header(kind: bytes, key_version: int) -> bytes:
    if not 0 <= key_version < 2**32:
        raise CryptoError("key version out of range")
    return _HEADER.pack(kind, FORMAT_VERSION, key_version)


def _parse_header(blob: bytes, kind: bytes) -> tuple[int, bytes]:
    if len(blob) < _HEADER.size:
        raise DecryptionError("envelope too short")
    got_kind, version, key_version = _HEADER.unpack_from(blob)
    if got_kind != kind:
        raise DecryptionError("not this kind of envelope")
    if version != FORMAT_VERSION:
        raise DecryptionError(f"unsupported envelope format {version}")
    return key_version, blob[_HEADER.size :]


def envelope_key_version(blob: bytes) -> int:
    """The key version an envelope (credential or wrapping) was made under."""
    if len(blob) < _HEADER.size:
        raise DecryptionError("envelope too short")
    return int(_HEADER.unpack_from(blob)[2])


# --- user key material ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserKeyMaterial:
    """What the control plane stores for a user: a public key and a private key it cannot open."""

    public_key: bytes
    sealed_private_key: bytes
    kdf: KdfParams

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "public_key": b64(self.public_key),
            "sealed_private_key": b64(self.sealed_private_key),
            "kdf": self.kdf.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserKeyMaterial:
        try:
            return cls(
                public_key=unb64(str(data["public_key"])),
                sealed_private_key=unb64(str(data["sealed_private_key"])),
                kdf=KdfParams.from_dict(dict(data["kdf"])),
            )
        except (KeyError, TypeError) as exc:
            raise CryptoError(f"malformed key material: {exc}") from exc


def _private_key_aad(user_id: str) -> bytes:
    return b"aileron:user-private-key" + _fields(user_id)


def seal_private_key(
    private_key: bytes, master_key: bytes | bytearray, *, user_id: str, nonce: bytes | None = None
) -> bytes:
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    kek = _subkey(master_key, b"aileron v1 private-key encryption")
    header = _header(_KIND_PRIVATE_KEY, 0)
    return header + nonce + AESGCM(kek).encrypt(nonce, private_key, header + _private_key_aad(user_id))


def open_private_key(sealed: bytes, master_key: bytes | bytearray, *, user_id: str) -> bytearray:
    _, body = _parse_header(sealed, _KIND_PRIVATE_KEY)
    nonce, ciphertext = body[:NONCE_BYTES], body[NONCE_BYTES:]
    kek = _subkey(master_key, b"aileron v1 private-key encryption")
    try:
        return bytearray(AESGCM(kek).decrypt(nonce, ciphertext, sealed[: _HEADER.size] + _private_key_aad(user_id)))
    except (InvalidTag, ValueError):
        raise DecryptionError("wrong passphrase, or the key material is damaged") from None


def user_keys_create(passphrase: str, *, user_id: str, params: KdfParams | None = None) -> UserKeyMaterial:
    params = params or KdfParams.generate()
    private = x25519.X25519PrivateKey.generate()
    private_raw = bytearray(private.private_bytes_raw())
    master = derive_master_key(passphrase, params)
    try:
        sealed = seal_private_key(bytes(private_raw), master, user_id=user_id)
    finally:
        wipe(master)
        wipe(private_raw)
    return UserKeyMaterial(public_key=private.public_key().public_bytes_raw(), sealed_private_key=sealed, kdf=params)


def user_keys_unlock(material: UserKeyMaterial, passphrase: str, *, user_id: str) -> bytearray:
    """The raw X25519 private key (a buffer to wipe), or DecryptionError for a wrong passphrase."""
    master = derive_master_key(passphrase, material.kdf)
    try:
        return open_private_key(material.sealed_private_key, master, user_id=user_id)
    finally:
        wipe(master)


def user_keys_reseal(material: UserKeyMaterial, old: str, new: str, *, user_id: str) -> UserKeyMaterial:
    """Change the passphrase (and pick a fresh salt); the key pair, and so every wrapping, stays."""
    private = user_keys_unlock(material, old, user_id=user_id)
    params = KdfParams(
        salt=os.urandom(SALT_BYTES),
        memory_kib=material.kdf.memory_kib,
        iterations=material.kdf.iterations,
        parallelism=material.kdf.parallelism,
    )
    master = derive_master_key(new, params)
    try:
        sealed = seal_private_key(bytes(private), master, user_id=user_id)
    finally:
        wipe(master)
        wipe(private)
    return UserKeyMaterial(public_key=material.public_key, sealed_private_key=sealed, kdf=params)


# --- vault keys and wrappings -------------------------------------------------------------------------


def vault_key_new() -> bytearray:
    return bytearray(os.urandom(KEY_BYTES))


def _wrap_info(vault_id: str, member_id: str, key_version: int) -> bytes:
    return b"aileron:vault-key-wrap" + _fields(vault_id, member_id, str(key_version))


def vault_key_wrap(
    vault_key: bytes | bytearray, recipient_public_key: bytes, *, vault_id: str, member_id: str, key_version: int
) -> bytes:
    if len(vault_key) != KEY_BYTES:
        raise CryptoError("a vault key is 32 bytes")
    try:
        public = x25519.X25519PublicKey.from_public_bytes(recipient_public_key)
    except ValueError as exc:
        raise CryptoError("not an X25519 public key") from exc
    header = _header(_KIND_WRAPPING, key_version)
    return header + _SUITE.encrypt(bytes(vault_key), public, info=header + _wrap_info(vault_id, member_id, key_version))


def vault_key_unwrap(
    wrapped: bytes, private_key: bytes | bytearray, *, vault_id: str, member_id: str, key_version: int
) -> bytearray:
    got_version, body = _parse_header(wrapped, _KIND_WRAPPING)
    if got_version != key_version:
        raise DecryptionError(f"wrapping is for key version {got_version}, not {key_version}")
    if len(body) != KEY_BYTES + _HPKE_OVERHEAD:
        raise DecryptionError("wrapping has the wrong length")
    try:
        private = x25519.X25519PrivateKey.from_private_bytes(bytes(private_key))
        info = wrapped[: _HEADER.size] + _wrap_info(vault_id, member_id, key_version)
        return bytearray(_SUITE.decrypt(body, private, info=info))
    except (InvalidTag, ValueError):
        raise DecryptionError("this wrapping does not open with this key for this vault and member") from None


# --- credentials ------------------------------------------------------------------------------------


def _credential_aad(header: bytes, organization_id: str, vault_id: str, credential_id: str, key_version: int) -> bytes:
    return header + b"aileron:credential" + _fields(organization_id, vault_id, credential_id, str(key_version))


def credential_encrypt(
    plaintext: bytes | bytearray,
    vault_key: bytes | bytearray,
    *,
    organization_id: str,
    vault_id: str,
    credential_id: str,
    key_version: int,
    nonce: bytes | None = None,
) -> bytes:
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    header = _header(_KIND_CREDENTIAL, key_version)
    aad = _credential_aad(header, organization_id, vault_id, credential_id, key_version)
    return header + nonce + AESGCM(bytes(vault_key)).encrypt(nonce, plaintext, aad)


def credential_decrypt(
    blob: bytes,
    vault_key: bytes | bytearray,
    *,
    organization_id: str,
    vault_id: str,
    credential_id: str,
    key_version: int,
) -> bytearray:
    got_version, body = _parse_header(blob, _KIND_CREDENTIAL)
    if got_version != key_version:
        raise DecryptionError(f"credential is under key version {got_version}, not {key_version}")
    nonce, ciphertext = body[:NONCE_BYTES], body[NONCE_BYTES:]
    aad = _credential_aad(blob[: _HEADER.size], organization_id, vault_id, credential_id, key_version)
    try:
        return bytearray(AESGCM(bytes(vault_key)).decrypt(nonce, ciphertext, aad))
    except (InvalidTag, ValueError):
        raise DecryptionError("the credential does not open with this key at this place") from None


# --- master-key delivery to an attested data plane ------------------------------------------------------

_KIND_SEALED_MASTER_KEY = b"AM"


def _master_key_info(header: bytes, token_lookup: str, nonce: bytes) -> bytes:
    return header + b"aileron:master-key-delivery" + _fields(token_lookup) + struct.pack(">I", len(nonce)) + nonce


def master_key_seal(
    master_key: bytes | bytearray, recipient_public_key: bytes, *, token_lookup: str, nonce: bytes
) -> bytes:
    """HPKE-seal the master key to a data plane's attested key, bound to one session token and attestation nonce."""
    if len(master_key) != KEY_BYTES:
        raise CryptoError("a master key is 32 bytes")
    try:
        public = x25519.X25519PublicKey.from_public_bytes(recipient_public_key)
    except ValueError as exc:
        raise CryptoError("not an X25519 public key") from exc
    header = _header(_KIND_SEALED_MASTER_KEY, 0)
    return header + _SUITE.encrypt(bytes(master_key), public, info=_master_key_info(header, token_lookup, nonce))


def master_key_open(
    sealed: bytes, private_key: x25519.X25519PrivateKey, *, token_lookup: str, nonce: bytes
) -> bytearray:
    _, body = _parse_header(sealed, _KIND_SEALED_MASTER_KEY)
    if len(body) != KEY_BYTES + _HPKE_OVERHEAD:
        raise DecryptionError("sealed master key has the wrong length")
    try:
        info = _master_key_info(sealed[: _HEADER.size], token_lookup, nonce)
        return bytearray(_SUITE.decrypt(body, private_key, info=info))
    except (InvalidTag, ValueError):
        raise DecryptionError("the sealed master key does not open with this key for this token and nonce") from None

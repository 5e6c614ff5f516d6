"""Preparing a key rotation: the trusted side's work (a CLI or the credential service). Pure, no Django."""

from __future__ import annotations

from dataclasses import dataclass

from vaults import crypto


class Undecryptable(crypto.CryptoError):
    """Some credentials do not open with the current key: remove them, then rotate again."""

    def __init__(self, credential_ids: list[str]) -> None:
        super().__init__("credentials that do not open with the vault's key: " + ", ".join(credential_ids))
        self.credential_ids = credential_ids


@dataclass(frozen=True, slots=True)
class RotationMaterial:
    from_version: int
    credentials: dict[str, bytes]
    wrappings: dict[str, bytes]


def rotation_prepare(
    *,
    organization_id: str,
    vault_id: str,
    from_version: int,
    old_key: bytes | bytearray,
    credentials: dict[str, bytes],
    member_public_keys: dict[str, bytes],
) -> RotationMaterial:
    """Re-encrypt every credential under a fresh vault key and wrap that key for every member.

    Raises Undecryptable, naming every credential that does not open with OLD_KEY (nothing is sent then):
    a damaged or planted ciphertext must not block a rotation silently.
    """
    to_version = from_version + 1
    new_key = crypto.vault_key_new()
    try:
        blobs: dict[str, bytes] = {}
        bad: list[str] = []
        for credential_id, blob in credentials.items():
            try:
                plain = crypto.credential_decrypt(
                    blob,
                    old_key,
                    organization_id=organization_id,
                    vault_id=vault_id,
                    credential_id=credential_id,
                    key_version=from_version,
                )
            except crypto.DecryptionError:
                bad.append(credential_id)
                continue
            try:
                blobs[credential_id] = crypto.credential_encrypt(
                    plain,
                    new_key,
                    organization_id=organization_id,
                    vault_id=vault_id,
                    credential_id=credential_id,
                    key_version=to_version,
                )
            finally:
                crypto.wipe(plain)
        if bad:
            raise Undecryptable(sorted(bad))
        wrappings = {
            user_id: crypto.vault_key_wrap(
                new_key, public_key, vault_id=vault_id, member_id=user_id, key_version=to_version
            )
            for user_id, public_key in member_public_keys.items()
        }
    finally:
        crypto.wipe(new_key)
    return RotationMaterial(from_version=from_version, credentials=blobs, wrappings=wrappings)

"""Preparing a key rotation: the trusted side's work (a CLI or the credential service). Pure, no Django."""

from __future__ import annotations

from dataclasses import dataclass

from vaults import crypto


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

    Raises crypto.DecryptionError if a credential does not open with OLD_KEY (nothing is sent then).
    """
    to_version = from_version + 1
    new_key = crypto.vault_key_new()
    try:
        blobs: dict[str, bytes] = {}
        for credential_id, blob in credentials.items():
            plain = crypto.credential_decrypt(
                blob,
                old_key,
                organization_id=organization_id,
                vault_id=vault_id,
                credential_id=credential_id,
                key_version=from_version,
            )
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
        wrappings = {
            user_id: crypto.vault_key_wrap(
                new_key, public_key, vault_id=vault_id, member_id=user_id, key_version=to_version
            )
            for user_id, public_key in member_public_keys.items()
        }
    finally:
        crypto.wipe(new_key)
    return RotationMaterial(from_version=from_version, credentials=blobs, wrappings=wrappings)

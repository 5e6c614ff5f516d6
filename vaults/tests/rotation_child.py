"""Child process for the crash test: rotates one file-backed vault over and over until it is killed.

Usage: python -m vaults.tests.rotation_child ROOT VAULT_ID ORG_ID OWNER_ID OWNER_PRIVATE_HEX
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from vaults import crypto as c
from vaults.rotation import rotation_prepare
from vaults.store import FileKV, VaultStore


def rotate_once(store: VaultStore, vault_id: str, org: str, owner: str, private: bytes) -> None:
    meta, members, blobs = store.export(vault_id)
    _, wrapping = store.wrapping(vault_id, owner)
    assert wrapping is not None
    old = c.vault_key_unwrap(wrapping, private, vault_id=vault_id, member_id=owner, key_version=meta.key_version)
    public = x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    material = rotation_prepare(
        organization_id=org,
        vault_id=vault_id,
        from_version=meta.key_version,
        old_key=old,
        credentials=blobs,
        member_public_keys={m.user_id: public for m in members},
    )
    store.rotate(vault_id, from_version=meta.key_version, blobs=material.credentials, wrappings=material.wrappings)


def main() -> None:
    root, vault_id, org, owner, private_hex = sys.argv[1:6]
    store = VaultStore(FileKV(Path(root)))
    print("ready", flush=True)
    while True:
        rotate_once(store, vault_id, org, owner, bytes.fromhex(private_hex))
        print("rotated", flush=True)


if __name__ == "__main__":
    main()

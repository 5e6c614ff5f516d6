"""Child process for the crash test: rotates one file-backed vault over and over until it is killed.

Usage: python -m vaults.tests.rotation_child ROOT VAULT_ID ORG_ID OWNER_ID OWNER_PRIVATE_HEX
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from vaults import crypto as c
from vaults.store import FileKV, VaultStore


def rotate_once(store: VaultStore, vault_id: str, org: str, owner: str, private: bytes) -> None:
    meta, members, blobs = store.export(vault_id)
    version = meta.key_version
    _, wrapping = store.wrapping(vault_id, owner)
    assert wrapping is not None
    old = c.vault_key_unwrap(wrapping, private, vault_id=vault_id, member_id=owner, key_version=version)
    new = c.vault_key_new()
    new_blobs = {}
    for cid, blob in blobs.items():
        plain = c.credential_decrypt(
            blob, old, organization_id=org, vault_id=vault_id, credential_id=cid, key_version=version
        )
        new_blobs[cid] = c.credential_encrypt(
            bytes(plain), new, organization_id=org, vault_id=vault_id, credential_id=cid, key_version=version + 1
        )
    public = {owner: x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()}
    wrappings = {
        m.user_id: c.vault_key_wrap(
            new, public[m.user_id], vault_id=vault_id, member_id=m.user_id, key_version=version + 1
        )
        for m in members
    }
    store.rotate(vault_id, from_version=version, blobs=new_blobs, wrappings=wrappings)


def main() -> None:
    root, vault_id, org, owner, private_hex = sys.argv[1:6]
    store = VaultStore(FileKV(Path(root)))
    print("ready", flush=True)
    while True:
        rotate_once(store, vault_id, org, owner, bytes.fromhex(private_hex))


if __name__ == "__main__":
    main()

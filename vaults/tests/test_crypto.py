"""Vault crypto: known answers (the format must not drift), round trips, and clean failure on tampering."""

from __future__ import annotations

from typing import Any

import pytest

from vaults import crypto as c

KDF = c.KdfParams(salt=bytes(range(16)))
IDS: dict[str, Any] = {"organization_id": "org-1", "vault_id": "vault-1", "credential_id": "cred-1", "key_version": 7}
VAULT_KEY = b"\x02" * 32
RECIPIENT_PRIVATE = bytes(range(32))

# Computed once with the reference implementation (argon2-cffi, cryptography 50) and frozen here.
KAT_MASTER = "853b272a44db1421c02962669a55eb0994f3cab385ed1c4c79253eee19bab49e"
KAT_SEALED = (
    "414b01000000000000000000000000000000004906a301265873b4fcacbbb1280c70beda6595f02808519a02b0860a9cda6d55f44"
    "ecac8962f1bab701bd6b294344240"
)
KAT_CREDENTIAL = "41430100000007030303030303030303030303b696a4457e891c2ebec42a51f0fe9c4003de09c271a782f965a1d67de56a"
KAT_PUBLIC = "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"
KAT_WRAPPING = (
    "41570100000007dbdbba1b6e8544b8246ca4e38d6e345b8c57e0d18e24fd57757060ef3b800f579e8b05bf84e9316953a4460daca0"
    "ecf28c113f488dd8d6c4636d8c1857858b074cddca696c814dd85d2ba76f83cf8d2b"
)


def test_argon2id_master_key_known_answer() -> None:
    assert c.derive_master_key("correct horse battery staple", KDF).hex() == KAT_MASTER


def test_sealed_private_key_known_answer() -> None:
    sealed = c.seal_private_key(RECIPIENT_PRIVATE, b"\x01" * 32, user_id="user-1", nonce=bytes(12))
    assert sealed.hex() == KAT_SEALED
    assert bytes(c.open_private_key(bytes.fromhex(KAT_SEALED), b"\x01" * 32, user_id="user-1")) == RECIPIENT_PRIVATE


def test_credential_known_answer() -> None:
    blob = c.credential_encrypt(b"sk_live_canary", VAULT_KEY, nonce=b"\x03" * 12, **IDS)
    assert blob.hex() == KAT_CREDENTIAL
    assert bytes(c.credential_decrypt(bytes.fromhex(KAT_CREDENTIAL), VAULT_KEY, **IDS)) == b"sk_live_canary"


def test_hpke_wrapping_known_answer_still_opens() -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519

    public = x25519.X25519PrivateKey.from_private_bytes(RECIPIENT_PRIVATE).public_key().public_bytes_raw()
    assert public.hex() == KAT_PUBLIC
    opened = c.vault_key_unwrap(
        bytes.fromhex(KAT_WRAPPING), RECIPIENT_PRIVATE, vault_id="vault-1", member_id="user-1", key_version=7
    )
    assert bytes(opened) == VAULT_KEY


def test_the_passphrase_unlocks_the_key_pair_and_a_wrong_one_fails_cleanly() -> None:
    material = c.user_keys_create("s3cret passphrase", user_id="u1", params=KDF)
    restored = c.UserKeyMaterial.from_dict(material.to_dict())
    private = c.user_keys_unlock(restored, "s3cret passphrase", user_id="u1")
    assert len(private) == 32
    with pytest.raises(c.DecryptionError, match="wrong passphrase"):
        c.user_keys_unlock(restored, "s3cret passphrasE", user_id="u1")
    with pytest.raises(c.DecryptionError):
        c.user_keys_unlock(restored, "s3cret passphrase", user_id="u2")  # sealed key moved to another user


def test_changing_the_passphrase_keeps_the_key_pair() -> None:
    material = c.user_keys_create("old passphrase", user_id="u1", params=KDF)
    resealed = c.user_keys_reseal(material, "old passphrase", "new passphrase", user_id="u1")
    assert resealed.public_key == material.public_key and resealed.kdf.salt != material.kdf.salt
    assert c.user_keys_unlock(resealed, "new passphrase", user_id="u1") == c.user_keys_unlock(
        material, "old passphrase", user_id="u1"
    )


def test_weak_kdf_parameters_are_refused_even_from_storage() -> None:
    data = KDF.to_dict() | {"memory_kib": 1024}
    with pytest.raises(c.WeakParameters):
        c.KdfParams.from_dict(data)
    with pytest.raises(c.WeakParameters):
        c.KdfParams(salt=b"short")


def test_a_wrapping_opens_only_for_its_vault_member_and_version() -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519

    private = x25519.X25519PrivateKey.generate()
    raw_private = private.private_bytes_raw()
    wrapped = c.vault_key_wrap(
        VAULT_KEY, private.public_key().public_bytes_raw(), vault_id="v1", member_id="alice", key_version=1
    )
    assert bytes(c.vault_key_unwrap(wrapped, raw_private, vault_id="v1", member_id="alice", key_version=1)) == VAULT_KEY
    bindings: list[dict[str, Any]] = [
        {"vault_id": "v2", "member_id": "alice", "key_version": 1},
        {"vault_id": "v1", "member_id": "bob", "key_version": 1},
        {"vault_id": "v1", "member_id": "alice", "key_version": 2},
    ]
    for binding in bindings:
        with pytest.raises(c.DecryptionError):
            c.vault_key_unwrap(wrapped, raw_private, **binding)
    other = x25519.X25519PrivateKey.generate().private_bytes_raw()
    with pytest.raises(c.DecryptionError):
        c.vault_key_unwrap(wrapped, other, vault_id="v1", member_id="alice", key_version=1)


@pytest.mark.parametrize(
    "field,value",
    [("organization_id", "org-2"), ("vault_id", "vault-2"), ("credential_id", "cred-2"), ("key_version", 8)],
)
def test_a_credential_moved_elsewhere_fails_to_decrypt(field: str, value: object) -> None:
    blob = c.credential_encrypt(b"secret", VAULT_KEY, **IDS)
    with pytest.raises(c.DecryptionError):
        c.credential_decrypt(blob, VAULT_KEY, **(IDS | {field: value}))


def test_every_flipped_byte_is_detected() -> None:
    blob = c.credential_encrypt(b"secret value", VAULT_KEY, **IDS)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(c.DecryptionError):
            c.credential_decrypt(bytes(tampered), VAULT_KEY, **IDS)


def test_swapped_ciphertexts_and_truncation_fail_cleanly() -> None:
    a = c.credential_encrypt(b"A", VAULT_KEY, **(IDS | {"credential_id": "a"}))
    b = c.credential_encrypt(b"B", VAULT_KEY, **(IDS | {"credential_id": "b"}))
    with pytest.raises(c.DecryptionError):
        c.credential_decrypt(b, VAULT_KEY, **(IDS | {"credential_id": "a"}))
    for cut in (0, 3, 7, 19, len(a) - 1):
        with pytest.raises(c.DecryptionError):
            c.credential_decrypt(a[:cut], VAULT_KEY, **(IDS | {"credential_id": "a"}))
    wrapping_as_credential = c.vault_key_wrap(
        VAULT_KEY, bytes.fromhex(KAT_PUBLIC), vault_id="vault-1", member_id="user-1", key_version=7
    )
    with pytest.raises(c.DecryptionError):
        c.credential_decrypt(wrapping_as_credential, VAULT_KEY, **IDS)


def test_wipe_overwrites_the_buffer() -> None:
    key = c.vault_key_new()
    c.wipe(key)
    assert key == bytearray(32)


def test_absurd_kdf_parameters_are_refused_too() -> None:
    with pytest.raises(c.CryptoError):
        c.KdfParams.from_dict(KDF.to_dict() | {"memory_kib": 64 * 1024 * 1024})
    with pytest.raises(c.CryptoError):
        c.KdfParams.from_dict(KDF.to_dict() | {"iterations": 10_000})

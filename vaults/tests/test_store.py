"""The vault store, run identically on both backends (files and database)."""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from vaults import crypto as c
from vaults.store import (
    CredentialMeta,
    FileKV,
    Member,
    RotationConflict,
    StaleKeyVersion,
    VaultMeta,
    VaultStore,
    now_iso,
)

ORG = str(uuid.uuid4())
# Both backends run every test; the database one needs real transactions (threads see each other's commits).
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Person:
    id: str
    private: bytes
    public: bytes


def person() -> Person:
    key = x25519.X25519PrivateKey.generate()
    return Person(str(uuid.uuid4()), key.private_bytes_raw(), key.public_key().public_bytes_raw())


@pytest.fixture(params=["file", "database"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VaultStore]:
    if request.param == "file":
        yield VaultStore(FileKV(tmp_path / "vaults"))
    else:
        from vaults.store_db import DbKV

        yield VaultStore(DbKV())


@dataclass
class World:
    store: VaultStore
    vault_id: str
    owner: Person
    key: bytearray
    version: int = 1

    def wrap(self, who: Person, key: bytes | bytearray | None = None, version: int | None = None) -> bytes:
        return c.vault_key_wrap(
            key or self.key, who.public, vault_id=self.vault_id, member_id=who.id, key_version=version or self.version
        )

    def encrypt(
        self, credential_id: str, value: bytes, key: bytes | bytearray | None = None, version: int | None = None
    ) -> bytes:
        return c.credential_encrypt(
            value,
            key or self.key,
            organization_id=ORG,
            vault_id=self.vault_id,
            credential_id=credential_id,
            key_version=version or self.version,
        )

    def add(self, value: bytes, name: str = "gh") -> str:
        cid = str(uuid.uuid4())
        meta = CredentialMeta(id=cid, name=name, connector="github", created_at=now_iso(), created_by=self.owner.id)
        self.store.credential_put(self.vault_id, meta, self.encrypt(cid, value))
        return cid

    def read(self, who: Person, credential_id: str) -> bytes:
        b = self.store.bundle(self.vault_id, who.id, credential_id)
        version = b.meta.key_version
        key = c.vault_key_unwrap(b.wrapping, who.private, vault_id=self.vault_id, member_id=who.id, key_version=version)
        return bytes(
            c.credential_decrypt(
                b.ciphertext,
                key,
                organization_id=ORG,
                vault_id=self.vault_id,
                credential_id=credential_id,
                key_version=version,
            )
        )


def make_world(store: VaultStore) -> World:
    owner = person()
    world = World(store=store, vault_id=str(uuid.uuid4()), owner=owner, key=c.vault_key_new())
    meta = VaultMeta(
        id=world.vault_id, organization_id=ORG, name="Team", type="shared", owner_id=owner.id, created_at=now_iso()
    )
    store.create(meta, world.wrap(owner))
    return world


def rotate(world: World, requester: Person) -> None:
    """What a trusted client does: unwrap, decrypt all, re-encrypt under a new key, wrap for every member."""
    meta, members, blobs = world.store.export(world.vault_id)
    old_version = meta.key_version
    _, wrapping = world.store.wrapping(world.vault_id, requester.id)
    assert wrapping is not None
    old_key = c.vault_key_unwrap(
        wrapping, requester.private, vault_id=world.vault_id, member_id=requester.id, key_version=old_version
    )
    new_key = c.vault_key_new()
    new_blobs = {}
    for cid, blob in blobs.items():
        plain = c.credential_decrypt(
            blob, old_key, organization_id=ORG, vault_id=world.vault_id, credential_id=cid, key_version=old_version
        )
        new_blobs[cid] = world.encrypt(cid, bytes(plain), key=new_key, version=old_version + 1)
    people = {p.id: p for p in PEOPLE.get(world.vault_id, [world.owner])}
    wrappings = {m.user_id: world.wrap(people[m.user_id], key=new_key, version=old_version + 1) for m in members}
    world.store.rotate(world.vault_id, from_version=old_version, blobs=new_blobs, wrappings=wrappings)
    world.key, world.version = new_key, old_version + 1


PEOPLE: dict[str, list[Person]] = {}


def test_a_vault_round_trips_and_the_owner_reads_its_credential(store: VaultStore) -> None:
    world = make_world(store)
    cid = world.add(b"ghp_roundtrip")
    assert world.read(world.owner, cid) == b"ghp_roundtrip"
    assert store.members(world.vault_id) == [Member(world.owner.id, "owner")]
    assert [m.name for m in store.credentials(world.vault_id)] == ["gh"]
    assert store.meta(world.vault_id).key_version == 1


def test_the_file_backend_uses_the_seed_layout_privately(tmp_path: Path) -> None:
    store = VaultStore(FileKV(tmp_path / "vaults"))
    world = make_world(store)
    cid = world.add(b"x")
    root = tmp_path / "vaults" / world.vault_id
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert files == sorted(
        [
            "meta.json",
            "members.json",
            f"key_wrappings/{world.owner.id}.wrap",
            f"credentials/{cid}.enc",
            f"credentials/{cid}.meta.json",
        ]
    )
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_grant_rewraps_the_key_and_touches_no_credential(store: VaultStore) -> None:
    world = make_world(store)
    cid = world.add(b"ghp_grant")
    before = store.credential(world.vault_id, cid)[1]
    bob = person()
    store.member_grant(world.vault_id, Member(bob.id, "reader"), world.wrap(bob))
    assert world.read(bob, cid) == b"ghp_grant"
    assert store.credential(world.vault_id, cid)[1] == before


def test_revoke_then_rotate_locks_the_revoked_member_out_of_new_credentials(store: VaultStore) -> None:
    world = make_world(store)
    bob, carol = person(), person()
    PEOPLE[world.vault_id] = [world.owner, bob, carol]
    for p in (bob, carol):
        store.member_grant(world.vault_id, Member(p.id, "reader"), world.wrap(p))
    cid = world.add(b"ghp_before")
    _, bobs_old_wrapping = store.wrapping(world.vault_id, bob.id)
    assert bobs_old_wrapping is not None

    meta = store.member_revoke(world.vault_id, bob.id, requested_by=world.owner.id)
    assert meta.rotation is not None and meta.rotation.from_version == 1
    assert store.wrapping(world.vault_id, bob.id)[1] is None

    rotate(world, world.owner)
    meta = store.meta(world.vault_id)
    assert (meta.key_version, meta.rotation) == (2, None)
    assert world.read(carol, cid) == b"ghp_before"
    new_cid = world.add(b"ghp_after")
    assert world.read(carol, new_cid) == b"ghp_after"

    old_key = c.vault_key_unwrap(
        bobs_old_wrapping, bob.private, vault_id=world.vault_id, member_id=bob.id, key_version=1
    )
    _, blob = store.credential(world.vault_id, new_cid)
    for version in (1, 2):
        with pytest.raises(c.DecryptionError):
            c.credential_decrypt(
                blob, old_key, organization_id=ORG, vault_id=world.vault_id, credential_id=new_cid, key_version=version
            )


def test_a_rotation_prepared_before_a_change_is_refused(store: VaultStore) -> None:
    world = make_world(store)
    world.add(b"one")
    meta, members, blobs = store.export(world.vault_id)
    world.add(b"two")
    new_key = c.vault_key_new()
    stale = {cid: world.encrypt(cid, b"?", key=new_key, version=2) for cid in blobs}
    with pytest.raises(RotationConflict):
        store.rotate(
            world.vault_id,
            from_version=1,
            blobs=stale,
            wrappings={world.owner.id: world.wrap(world.owner, key=new_key, version=2)},
        )
    with pytest.raises(StaleKeyVersion):
        store.rotate(world.vault_id, from_version=5, blobs={}, wrappings={})
    assert store.meta(world.vault_id).key_version == 1


def test_envelopes_for_another_key_version_are_refused(store: VaultStore) -> None:
    world = make_world(store)
    cid = str(uuid.uuid4())
    meta = CredentialMeta(id=cid, name="x", connector="github")
    with pytest.raises(StaleKeyVersion):
        store.credential_put(world.vault_id, meta, world.encrypt(cid, b"x", version=2))
    with pytest.raises(StaleKeyVersion):
        bob = person()
        store.member_grant(world.vault_id, Member(bob.id, "reader"), world.wrap(bob, version=3))


def test_reads_during_rotations_never_mix_key_versions(store: VaultStore) -> None:
    world = make_world(store)
    ids = [world.add(f"value-{i}".encode()) for i in range(5)]
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = 0

    def reader() -> None:
        nonlocal reads
        try:
            while not stop.is_set():
                for cid in ids:
                    b = store.bundle(world.vault_id, world.owner.id, cid)
                    versions = {
                        b.meta.key_version,
                        c.envelope_key_version(b.wrapping),
                        c.envelope_key_version(b.ciphertext),
                        b.credential.key_version,
                    }
                    assert len(versions) == 1, versions
                    reads += 1
                time.sleep(0.001)  # SQLite's busy handler is not fair: let the rotating writer in
        except BaseException as exc:  # noqa: BLE001  (reported to the main thread)
            errors.append(exc)
        finally:
            _close_db_connection()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            rotate(world, world.owner)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert reads > 0 and store.meta(world.vault_id).key_version == 7
    assert [world.read(world.owner, cid) for cid in ids] == [f"value-{i}".encode() for i in range(5)]


def _close_db_connection() -> None:
    try:
        from django.db import connection

        connection.close()
    except Exception:  # noqa: BLE001, S110  (the file backend has no connection)
        pass


def test_a_failure_inside_a_commit_leaves_the_previous_state(store: VaultStore, monkeypatch: Any) -> None:
    world = make_world(store)
    cid = world.add(b"keep me")
    _, members, blobs = store.export(world.vault_id)
    new_key = c.vault_key_new()
    original = store.kv.commit

    def exploding(vault_id: str, writes: dict[str, bytes], deletes: list[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.kv, "commit", exploding)
    with pytest.raises(OSError):
        store.rotate(
            world.vault_id,
            from_version=1,
            blobs={cid: world.encrypt(cid, b"keep me", key=new_key, version=2)},
            wrappings={world.owner.id: world.wrap(world.owner, key=new_key, version=2)},
        )
    monkeypatch.setattr(store.kv, "commit", original)
    assert store.meta(world.vault_id).key_version == 1
    assert world.read(world.owner, cid) == b"keep me"
    assert os.environ.get("AILERON_HOME")  # the suite never writes to the user's real home


def test_killing_a_rotation_at_any_moment_leaves_one_consistent_key_version(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys

    root = tmp_path / "vaults"
    store = VaultStore(FileKV(root))
    world = make_world(store)
    ids = [world.add(f"secret-{i}".encode()) for i in range(150)]
    versions_seen = set()
    rng = random.Random(1234)
    for round_ in range(9):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vaults.tests.rotation_child",
                str(root),
                world.vault_id,
                ORG,
                world.owner.id,
                world.owner.private.hex(),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        if round_ == 8:
            # However slow this machine is, one child is killed after a rotation completed (and maybe mid-way
            # through the next): the rounds before may all have been killed before their first.
            assert child.stdout.readline().strip() == "rotated"
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()

        fresh = VaultStore(FileKV(root))  # a new process's view: recovery runs on first access
        meta, members, blobs = fresh.export(world.vault_id)
        versions_seen.add(meta.key_version)
        _, wrapping = fresh.wrapping(world.vault_id, world.owner.id)
        assert wrapping is not None
        assert {c.envelope_key_version(b) for b in blobs.values()} | {c.envelope_key_version(wrapping)} == {
            meta.key_version
        }
        key = c.vault_key_unwrap(
            wrapping,
            world.owner.private,
            vault_id=world.vault_id,
            member_id=world.owner.id,
            key_version=meta.key_version,
        )
        for i, cid in enumerate(ids):
            plain = c.credential_decrypt(
                blobs[cid],
                key,
                organization_id=ORG,
                vault_id=world.vault_id,
                credential_id=cid,
                key_version=meta.key_version,
            )
            assert bytes(plain) == f"secret-{i}".encode()
        leftovers = [p.name for p in (root / world.vault_id).iterdir() if p.name.startswith(".") and p.name != ".lock"]
        assert leftovers == []
    assert len(versions_seen) > 1, "the child never completed a rotation; the test proved nothing"


def test_a_planted_ciphertext_is_named_instead_of_blocking_rotation(store: VaultStore) -> None:
    from vaults.rotation import Undecryptable, rotation_prepare

    world = make_world(store)
    good = world.add(b"good")
    planted = str(uuid.uuid4())
    other_key = c.vault_key_new()
    store.credential_put(
        world.vault_id,
        CredentialMeta(id=planted, name="planted", connector="github"),
        world.encrypt(planted, b"x", key=other_key),
    )
    meta, members, blobs = store.export(world.vault_id)
    with pytest.raises(Undecryptable) as caught:
        rotation_prepare(
            organization_id=ORG,
            vault_id=world.vault_id,
            from_version=1,
            old_key=world.key,
            credentials=blobs,
            member_public_keys={world.owner.id: world.owner.public},
        )
    assert caught.value.credential_ids == [planted]
    assert good not in str(caught.value)


@pytest.mark.django_db
def test_a_vault_dropped_while_its_lock_is_taken_reads_as_missing_not_as_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen under schemathesis: a credential delete raced a vault delete between the two statements of lock()."""
    import uuid

    from vaults.models import StoredVault
    from vaults.store import VaultMissing
    from vaults.store_db import DbKV

    vault_id = str(uuid.uuid4())
    real = StoredVault.objects.get_or_create

    def dropped_right_after(**kwargs: object) -> object:
        created = real(**kwargs)  # type: ignore[arg-type]
        StoredVault.objects.filter(vault_id=vault_id).delete()  # the concurrent vault deletion
        return created

    monkeypatch.setattr(StoredVault.objects, "get_or_create", dropped_right_after)
    with pytest.raises(VaultMissing), DbKV().lock(vault_id):
        pass


def test_a_replaced_value_is_the_next_version_and_every_reader_sees_one_whole_version(store: VaultStore) -> None:
    world = make_world(store)
    cid = world.add(b"ghp_version_one")
    replaced = store.credential_replace(
        world.vault_id, cid, world.encrypt(cid, b"ghp_version_two"), updated_by=world.owner.id, rotate_every_days=30
    )
    assert (replaced.version, replaced.rotate_every_days, replaced.name) == (2, 30, "gh")
    bundle = store.bundle(world.vault_id, world.owner.id, cid)
    assert bundle.credential.version == 2 and world.read(world.owner, cid) == b"ghp_version_two"
    with pytest.raises(StaleKeyVersion):  # made for another key version: nothing changes
        store.credential_replace(world.vault_id, cid, world.encrypt(cid, b"x", version=7), updated_by=world.owner.id)
    assert store.bundle(world.vault_id, world.owner.id, cid).credential.version == 2
    # Readers racing writers: each bundle's value and version belong together.
    stop = threading.Event()
    seen: list[tuple[int, bytes]] = []

    def reader() -> None:
        while not stop.is_set():
            b = store.bundle(world.vault_id, world.owner.id, cid)
            seen.append((b.credential.version, _open(world, b, cid)))

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(3, 13):
        store.credential_replace(
            world.vault_id, cid, world.encrypt(cid, f"ghp_version_{n}".encode()), updated_by=world.owner.id
        )
    stop.set()
    thread.join()
    names = {2: b"ghp_version_two"}
    assert seen and all(value == names.get(v, f"ghp_version_{v}".encode()) for v, value in seen)
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)


def _open(world: World, bundle: Any, credential_id: str) -> bytes:
    version = bundle.meta.key_version
    key = c.vault_key_unwrap(
        bundle.wrapping, world.owner.private, vault_id=world.vault_id, member_id=world.owner.id, key_version=version
    )
    return bytes(
        c.credential_decrypt(
            bundle.ciphertext,
            key,
            organization_id=ORG,
            vault_id=world.vault_id,
            credential_id=credential_id,
            key_version=version,
        )
    )

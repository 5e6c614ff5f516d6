"""The encrypted credential store: vault-centric, ciphertext only, behind one interface with two backends.

Pure (no ORM). `VaultStore` keeps the seed's layout for every vault:

    {vault_id}/meta.json                       name, type, owner, created_at, key_version, pending rotation
    {vault_id}/members.json                    [{user_id, role}]
    {vault_id}/key_wrappings/{user_id}.wrap    the vault key wrapped to that member (HPKE)
    {vault_id}/credentials/{id}.enc            the credential under the vault key (AES-256-GCM)
    {vault_id}/credentials/{id}.meta.json      name, type, connector, action bindings

on top of a small transactional key-value layer: `FileKV` (files under AILERON_HOME/store/vaults, the v4
default) or `vaults.store_db.DbKV` (rows in the database, for the v4.x topology). Every change to a vault,
however many files it touches, is one `commit`: all of it happens or none of it, even if the process dies
midway. Every read of a vault sees one committed state, so a reader never mixes key versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from vaults.crypto import envelope_key_version

VAULT_TYPES = ("personal", "shared")
VAULT_ROLES = ("owner", "contributor", "reader")
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class StoreError(Exception):
    """A store operation could not be done."""


class VaultMissing(StoreError):
    pass


class StaleKeyVersion(StoreError):
    """An envelope or rotation was made for a key version that is no longer current."""


class RotationPending(StoreError):
    """The key must rotate (a member was revoked) before anything new is encrypted under it."""


class LastOwner(StoreError):
    """The change would leave the vault without an owner, so nobody could grant, revoke or rotate."""


class VaultFull(StoreError):
    """The vault holds as many credentials as a rotation can carry."""


MAX_CREDENTIALS = 500
MAX_CREDENTIAL_BYTES = 16 * 1024


class RotationConflict(StoreError):
    """The vault changed (credentials or members) while a rotation was being prepared: prepare it again."""


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise StoreError(f"{what} must be a lowercase UUID, got {value!r}")
    return value


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Rotation:
    """A pending key rotation, recorded by the control plane and carried out by a trusted client."""

    reason: str
    requested_at: str
    requested_by: str
    from_version: int


@dataclass(frozen=True, slots=True)
class VaultMeta:
    id: str
    organization_id: str
    name: str
    type: str
    owner_id: str
    created_at: str
    key_version: int = 1
    rotation: Rotation | None = None

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> VaultMeta:
        data = json.loads(raw)
        rotation = data.pop("rotation", None)
        return cls(**data, rotation=Rotation(**rotation) if rotation else None)


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: str


@dataclass(frozen=True, slots=True)
class CredentialMeta:
    id: str
    name: str
    connector: str
    type: str = "api_key"
    action_bindings: list[str] = field(default_factory=list)
    created_at: str = ""
    created_by: str = ""
    key_version: int = 1
    version: int = 1  # the value's version: `aileron secret update` replaces it as version + 1, in one commit
    updated_at: str = ""
    updated_by: str = ""
    expires_at: str = ""  # ISO 8601, "" for never: owners are warned before
    rotate_every_days: int = 0  # 0 for no schedule: owners are warned when a replacement is due

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> CredentialMeta:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class Bundle:
    """What one decryption needs, read from one committed state of the vault."""

    meta: VaultMeta
    credential: CredentialMeta
    wrapping: bytes
    ciphertext: bytes


def _dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"


# --- the key-value layer ------------------------------------------------------------------------------


class KV(Protocol):
    """Per-vault files with atomic multi-file commits and an exclusive per-vault lock."""

    def lock(self, vault_id: str) -> contextlib.AbstractContextManager[None]: ...

    def read(self, vault_id: str, path: str) -> bytes | None: ...

    def listdir(self, vault_id: str, prefix: str) -> list[str]: ...

    def commit(self, vault_id: str, writes: dict[str, bytes], deletes: list[str]) -> None: ...

    def exists(self, vault_id: str) -> bool: ...

    def drop(self, vault_id: str) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


class FileKV:
    """Files under ROOT/{vault_id}/, mode 0600 in 0700 folders.

    A commit stages every new file in `.staging/`, fsyncs it, then writes `.journal.json` (the commit point,
    by atomic rename) and applies the journal with renames; a crash before the journal leaves the old state
    (the staging is discarded), a crash after it is rolled forward by the next access. Access to a vault is
    serialized with flock on `.lock`, which also covers other processes (API, worker, CLI).
    """

    _JOURNAL = ".journal.json"
    _STAGING = ".staging"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _dir(self, vault_id: str) -> Path:
        return self.root / _check_id(vault_id, "vault id")

    def _path(self, vault_id: str, rel: str) -> Path:
        if rel.startswith(("/", ".")) or ".." in rel.split("/"):
            raise StoreError(f"bad store path {rel!r}")
        return self._dir(vault_id) / rel

    @contextlib.contextmanager
    def lock(self, vault_id: str) -> Iterator[None]:
        directory = self._dir(vault_id)
        directory.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._recover(directory)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _recover(self, directory: Path) -> None:
        journal = directory / self._JOURNAL
        staging = directory / self._STAGING
        if journal.exists():
            self._apply(directory, json.loads(journal.read_bytes()))
        elif staging.exists():
            shutil.rmtree(staging)

    def _apply(self, directory: Path, plan: dict[str, Any]) -> None:
        staging = directory / self._STAGING
        touched: set[Path] = {directory}
        for index, rel in enumerate(plan["writes"]):
            staged = staging / str(index)
            target = directory / rel
            if staged.exists():  # else: already moved by an earlier, interrupted apply
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.replace(staged, target)
                touched.add(target.parent)
        for rel in plan["deletes"]:
            target = directory / rel
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            touched.add(target.parent)
        for folder in touched:
            _fsync_dir(folder)
        (directory / self._JOURNAL).unlink()
        shutil.rmtree(staging, ignore_errors=True)
        _fsync_dir(directory)

    def read(self, vault_id: str, path: str) -> bytes | None:
        try:
            return self._path(vault_id, path).read_bytes()
        except FileNotFoundError:
            return None

    def listdir(self, vault_id: str, prefix: str) -> list[str]:
        folder = self._path(vault_id, prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return sorted(f"{prefix.rstrip('/')}/{p.name}" for p in folder.iterdir() if not p.name.startswith("."))

    def commit(self, vault_id: str, writes: dict[str, bytes], deletes: list[str]) -> None:
        directory = self._dir(vault_id)
        for rel in [*writes, *deletes]:
            self._path(vault_id, rel)
        staging = directory / self._STAGING
        staging.mkdir(mode=0o700, exist_ok=True)
        order = list(writes)
        for index, rel in enumerate(order):
            _write_synced(staging / str(index), writes[rel])
        _fsync_dir(staging)
        tmp = directory / f".journal.{secrets.token_hex(4)}.tmp"
        _write_synced(tmp, json.dumps({"writes": order, "deletes": deletes}).encode())
        os.replace(tmp, directory / self._JOURNAL)  # the commit point
        _fsync_dir(directory)
        self._apply(directory, {"writes": order, "deletes": deletes})

    def exists(self, vault_id: str) -> bool:
        return (self._dir(vault_id) / "meta.json").exists()

    def drop(self, vault_id: str) -> None:
        directory = self._dir(vault_id)
        if directory.exists():
            graveyard = self.root / f".deleted-{vault_id}-{secrets.token_hex(4)}"
            os.replace(directory, graveyard)
            _fsync_dir(self.root)
            shutil.rmtree(graveyard)


# --- vault operations on any KV ---------------------------------------------------------------------


def _wrap_path(user_id: str) -> str:
    return f"key_wrappings/{_check_id(user_id, 'user id')}.wrap"


def _enc_path(credential_id: str) -> str:
    return f"credentials/{_check_id(credential_id, 'credential id')}.enc"


def _cmeta_path(credential_id: str) -> str:
    return f"credentials/{_check_id(credential_id, 'credential id')}.meta.json"


def _require_version(blob: bytes, version: int, what: str) -> None:
    try:
        got = envelope_key_version(blob)
    except Exception as exc:
        raise StoreError(f"{what} is not an Aileron envelope") from exc
    if got != version:
        raise StaleKeyVersion(f"{what} is for key version {got}; the vault is at {version}")


class VaultStore:
    """Vault-level operations. Callers have already decided the caller may do them (RBAC is not here)."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    # reads (each takes the vault lock, so it sees one committed state)

    def _meta(self, vault_id: str) -> VaultMeta:
        raw = self.kv.read(vault_id, "meta.json")
        if raw is None:
            raise VaultMissing(f"no vault {vault_id}")
        return VaultMeta.from_json(raw)

    def _members(self, vault_id: str) -> list[Member]:
        raw = self.kv.read(vault_id, "members.json")
        return [Member(**m) for m in json.loads(raw)] if raw else []

    def meta(self, vault_id: str) -> VaultMeta:
        with self.kv.lock(vault_id):
            return self._meta(vault_id)

    def members(self, vault_id: str) -> list[Member]:
        with self.kv.lock(vault_id):
            self._meta(vault_id)
            return self._members(vault_id)

    def wrapping(self, vault_id: str, user_id: str) -> tuple[int, bytes | None]:
        with self.kv.lock(vault_id):
            return self._meta(vault_id).key_version, self.kv.read(vault_id, _wrap_path(user_id))

    def credentials(self, vault_id: str) -> list[CredentialMeta]:
        with self.kv.lock(vault_id):
            self._meta(vault_id)
            paths = [p for p in self.kv.listdir(vault_id, "credentials") if p.endswith(".meta.json")]
            metas = [CredentialMeta.from_json(raw) for p in paths if (raw := self.kv.read(vault_id, p)) is not None]
        return sorted(metas, key=lambda m: (m.created_at, m.id))

    def credential(self, vault_id: str, credential_id: str) -> tuple[CredentialMeta, bytes]:
        with self.kv.lock(vault_id):
            self._meta(vault_id)
            raw_meta = self.kv.read(vault_id, _cmeta_path(credential_id))
            blob = self.kv.read(vault_id, _enc_path(credential_id))
        if raw_meta is None or blob is None:
            raise StoreError(f"no credential {credential_id} in vault {vault_id}")
        return CredentialMeta.from_json(raw_meta), blob

    def export(self, vault_id: str) -> tuple[VaultMeta, list[Member], dict[str, bytes]]:
        """Everything a rotation needs: meta, members and every credential ciphertext, from one state."""
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            members = self._members(vault_id)
            blobs = {
                p.removeprefix("credentials/").removesuffix(".enc"): raw
                for p in self.kv.listdir(vault_id, "credentials")
                if p.endswith(".enc") and (raw := self.kv.read(vault_id, p)) is not None
            }
        return meta, members, blobs

    def bundle(self, vault_id: str, user_id: str, credential_id: str) -> Bundle:
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            wrapping = self.kv.read(vault_id, _wrap_path(user_id))
            raw_meta = self.kv.read(vault_id, _cmeta_path(credential_id))
            blob = self.kv.read(vault_id, _enc_path(credential_id))
        if wrapping is None:
            raise StoreError(f"user {user_id} holds no key for vault {vault_id}")
        if raw_meta is None or blob is None:
            raise StoreError(f"no credential {credential_id} in vault {vault_id}")
        return Bundle(meta=meta, credential=CredentialMeta.from_json(raw_meta), wrapping=wrapping, ciphertext=blob)

    # writes

    def create(self, meta: VaultMeta, owner_wrapping: bytes) -> VaultMeta:
        if meta.type not in VAULT_TYPES:
            raise StoreError(f"vault type must be one of {VAULT_TYPES}")
        _require_version(owner_wrapping, meta.key_version, "the owner's wrapping")
        with self.kv.lock(meta.id):
            if self.kv.read(meta.id, "meta.json") is not None:
                raise StoreError(f"vault {meta.id} exists")
            self.kv.commit(
                meta.id,
                {
                    "meta.json": meta.to_json(),
                    "members.json": _dumps([asdict(Member(user_id=meta.owner_id, role="owner"))]),
                    _wrap_path(meta.owner_id): owner_wrapping,
                },
                [],
            )
        return meta

    def delete(self, vault_id: str) -> None:
        with self.kv.lock(vault_id):
            self._meta(vault_id)
        self.kv.drop(vault_id)

    def rename(self, vault_id: str, name: str) -> VaultMeta:
        with self.kv.lock(vault_id):
            meta = replace(self._meta(vault_id), name=name)
            self.kv.commit(vault_id, {"meta.json": meta.to_json()}, [])
            return meta

    def member_grant(self, vault_id: str, member: Member, wrapping: bytes) -> None:
        """Add a member (or change a role) with the vault key wrapped to them: no credential is touched."""
        if member.role not in VAULT_ROLES:
            raise StoreError(f"vault role must be one of {VAULT_ROLES}")
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            _require_version(wrapping, meta.key_version, "the wrapping")
            members = [m for m in self._members(vault_id) if m.user_id != member.user_id] + [member]
            if not any(m.role == "owner" for m in members):
                raise LastOwner("that would leave the vault without an owner")
            self.kv.commit(
                vault_id,
                {"members.json": _dumps([asdict(m) for m in members]), _wrap_path(member.user_id): wrapping},
                [],
            )

    def member_revoke(self, vault_id: str, user_id: str, *, requested_by: str) -> VaultMeta:
        """Remove the member and their wrapping now, and record that the key must rotate."""
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            members = self._members(vault_id)
            remaining = [m for m in members if m.user_id != user_id]
            if len(remaining) == len(members):
                raise StoreError(f"user {user_id} is not a member")
            if not any(m.role == "owner" for m in remaining):
                raise LastOwner("that would leave the vault without an owner")
            rotation = meta.rotation or Rotation(
                reason=f"member {user_id} revoked",
                requested_at=now_iso(),
                requested_by=requested_by,
                from_version=meta.key_version,
            )
            meta = replace(meta, rotation=rotation)
            self.kv.commit(
                vault_id,
                {"meta.json": meta.to_json(), "members.json": _dumps([asdict(m) for m in remaining])},
                [_wrap_path(user_id)],
            )
            return meta

    def credential_put(self, vault_id: str, credential: CredentialMeta, blob: bytes) -> CredentialMeta:
        if len(blob) > MAX_CREDENTIAL_BYTES:
            raise StoreError(f"a credential may be at most {MAX_CREDENTIAL_BYTES} bytes encrypted")
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            if meta.rotation is not None:
                raise RotationPending("the vault's key must rotate first (a member was revoked)")
            _require_version(blob, meta.key_version, "the credential")
            existing = [p for p in self.kv.listdir(vault_id, "credentials") if p.endswith(".enc")]
            if len(existing) >= MAX_CREDENTIALS and _enc_path(credential.id) not in existing:
                raise VaultFull(f"a vault holds at most {MAX_CREDENTIALS} credentials")
            credential = replace(credential, key_version=meta.key_version)
            self.kv.commit(
                vault_id, {_enc_path(credential.id): blob, _cmeta_path(credential.id): credential.to_json()}, []
            )
            return credential

    def credential_replace(
        self,
        vault_id: str,
        credential_id: str,
        blob: bytes,
        *,
        updated_by: str,
        expires_at: str | None = None,
        rotate_every_days: int | None = None,
    ) -> CredentialMeta:
        """A new value for a credential, as its next version: its ciphertext and metadata change in one commit,
        so every reader (a bundle) sees the old version or the new one, never a mix."""
        if len(blob) > MAX_CREDENTIAL_BYTES:
            raise StoreError(f"a credential may be at most {MAX_CREDENTIAL_BYTES} bytes encrypted")
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            if meta.rotation is not None:
                raise RotationPending("the vault's key must rotate first (a member was revoked)")
            _require_version(blob, meta.key_version, "the credential")
            raw = self.kv.read(vault_id, _cmeta_path(credential_id))
            if raw is None:
                raise StoreError(f"no credential {credential_id} in vault {vault_id}")
            old = CredentialMeta.from_json(raw)
            new = replace(
                old,
                key_version=meta.key_version,
                version=old.version + 1,
                updated_at=now_iso(),
                updated_by=updated_by,
                expires_at=old.expires_at if expires_at is None else expires_at,
                rotate_every_days=old.rotate_every_days if rotate_every_days is None else rotate_every_days,
            )
            self.kv.commit(vault_id, {_enc_path(credential_id): blob, _cmeta_path(credential_id): new.to_json()}, [])
            return new

    def credential_delete(self, vault_id: str, credential_id: str) -> None:
        with self.kv.lock(vault_id):
            self._meta(vault_id)
            if self.kv.read(vault_id, _cmeta_path(credential_id)) is None:
                raise StoreError(f"no credential {credential_id} in vault {vault_id}")
            self.kv.commit(vault_id, {}, [_enc_path(credential_id), _cmeta_path(credential_id)])

    def rotate(
        self, vault_id: str, *, from_version: int, blobs: dict[str, bytes], wrappings: dict[str, bytes]
    ) -> VaultMeta:
        """Switch the whole vault to key version from_version + 1 in one commit.

        BLOBS must re-encrypt exactly the current credentials and WRAPPINGS must cover exactly the current
        members, all under the new version; otherwise the vault changed meanwhile and RotationConflict asks
        the trusted client to prepare again.
        """
        to_version = from_version + 1
        with self.kv.lock(vault_id):
            meta = self._meta(vault_id)
            if meta.key_version != from_version:
                raise StaleKeyVersion(f"the vault is at key version {meta.key_version}, not {from_version}")
            current = {
                p.removeprefix("credentials/").removesuffix(".enc")
                for p in self.kv.listdir(vault_id, "credentials")
                if p.endswith(".enc")
            }
            members = self._members(vault_id)
            if set(blobs) != current:
                raise RotationConflict("the credentials changed while the rotation was prepared")
            if set(wrappings) != {m.user_id for m in members}:
                raise RotationConflict("the members changed while the rotation was prepared")
            writes: dict[str, bytes] = {}
            for credential_id, blob in blobs.items():
                _require_version(blob, to_version, f"credential {credential_id}")
                writes[_enc_path(credential_id)] = blob
                raw = self.kv.read(vault_id, _cmeta_path(credential_id))
                if raw is not None:
                    writes[_cmeta_path(credential_id)] = replace(
                        CredentialMeta.from_json(raw), key_version=to_version
                    ).to_json()
            for user_id, wrapping in wrappings.items():
                _require_version(wrapping, to_version, f"the wrapping for {user_id}")
                writes[_wrap_path(user_id)] = wrapping
            meta = replace(meta, key_version=to_version, rotation=None)
            writes["meta.json"] = meta.to_json()
            self.kv.commit(vault_id, writes, [])
            return meta

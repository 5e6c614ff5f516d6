"""The trusted client side of vaults: everything that needs a plaintext key happens here, in the user's CLI.

Key pairs, vault keys, wrappings and credential ciphertext are made here with vaults.crypto and sent to the
control plane, which can open none of them. Buffers holding keys or secrets are wiped after use.
"""

from __future__ import annotations

import getpass
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aileron_cli.client import ApiClient, CliError
from vaults import crypto
from vaults.rotation import Undecryptable, rotation_prepare

ROTATION_ATTEMPTS = 3


def read_passphrase(*, confirm: bool = False) -> str:
    """AILERON_PASSPHRASE, else a hidden prompt on a terminal; never argv."""
    env = os.environ.get("AILERON_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        raise CliError("a passphrase is needed: set AILERON_PASSPHRASE or run in a terminal", exit_code=2)
    first = getpass.getpass("Aileron passphrase: ")
    if not first:
        raise CliError("the passphrase may not be empty", exit_code=2)
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise CliError("the passphrases differ", exit_code=2)
    return first


@dataclass
class Identity:
    user_id: str
    email: str
    organization_id: str


class VaultClient:
    def __init__(self, api: ApiClient, identity: Identity) -> None:
        self.api = api
        self.me = identity
        self._private: bytearray | None = None

    @property
    def base(self) -> str:
        return f"/api/v1/orgs/{self.me.organization_id}/vaults/"

    def close(self) -> None:
        crypto.wipe(self._private)
        self._private = None

    # keys

    def has_keys(self) -> bool:
        try:
            self.api.get("/api/v1/keys/")
        except CliError as exc:
            if "(404)" in str(exc):
                return False
            raise
        return True

    def create_keys(self, passphrase: str) -> None:
        material = crypto.user_keys_create(passphrase, user_id=self.me.user_id)
        self.api.request(
            "PUT",
            "/api/v1/keys/",
            json={
                "public_key": crypto.b64(material.public_key),
                "sealed_private_key": crypto.b64(material.sealed_private_key),
                "kdf": material.kdf.to_dict(),
            },
        )

    def public_key(self) -> bytes:
        return crypto.unb64(self.api.get("/api/v1/keys/")["public_key"])

    def unlock(self, passphrase_source: Callable[[], str] = read_passphrase) -> bytearray:
        if self._private is None:
            body = self.api.get("/api/v1/keys/")
            material = crypto.UserKeyMaterial.from_dict(body)
            try:
                self._private = crypto.user_keys_unlock(material, passphrase_source(), user_id=self.me.user_id)
            except crypto.DecryptionError:
                raise CliError("wrong passphrase", exit_code=2) from None
        return self._private

    # vaults

    def vaults(self) -> list[dict[str, Any]]:
        return list(self.api.get(self.base))

    def find(self, ref: str | None) -> dict[str, Any]:
        """A vault by id or name among mine; without REF, my personal vault."""
        mine = [v for v in self.vaults() if v["my_role"] is not None]
        if ref is None:
            found = [v for v in mine if v["type"] == "personal"]
            if not found:
                raise CliError("you have no personal vault here; name one with --vault")
            return found[0]
        found = [v for v in mine if ref in (v["id"], v["name"])]
        if not found:
            raise CliError(f"no vault {ref!r} that you are a member of")
        if len(found) > 1:
            raise CliError(f"several vaults are named {ref!r}; use its id")
        return found[0]

    def create_vault(
        self,
        name: str,
        type: str,
        team_id: str | None = None,
        project_id: str | None = None,
        auto_confirm: bool = True,
    ) -> dict[str, Any]:
        vault_id = str(uuid.uuid4())
        key = crypto.vault_key_new()
        try:
            wrapping = crypto.vault_key_wrap(
                key, self.public_key(), vault_id=vault_id, member_id=self.me.user_id, key_version=1
            )
        finally:
            crypto.wipe(key)
        body: dict[str, Any] = {"id": vault_id, "name": name, "type": type, "wrapping": crypto.b64(wrapping)}
        if team_id is not None:
            body["team"] = team_id
        if project_id is not None:
            body["project"] = project_id
        if not auto_confirm:
            body["auto_confirm"] = False
        return dict(self.api.post(self.base, body))

    def vault_key(self, vault: dict[str, Any]) -> tuple[int, bytearray]:
        body = self.api.get(f"{self.base}{vault['id']}/wrapping/")
        version = int(body["key_version"])
        try:
            key = crypto.vault_key_unwrap(
                crypto.unb64(body["wrapping"]),
                self.unlock(),
                vault_id=vault["id"],
                member_id=self.me.user_id,
                key_version=version,
            )
        except crypto.DecryptionError:
            raise CliError("your wrapping of this vault's key does not open; ask an owner to grant you again") from None
        return version, key

    def member_by_email(self, email: str) -> dict[str, Any]:
        members = self.api.get(f"/api/v1/orgs/{self.me.organization_id}/members/", params={"limit": 500})["results"]
        for member in members:
            if member["user"]["email"].lower() == email.lower():
                return dict(member)
        raise CliError(f"{email} is not a member of this organization")

    def grant(self, vault: dict[str, Any], email: str, role: str) -> dict[str, Any]:
        member = self.member_by_email(email)
        if not member.get("public_key"):
            raise CliError(f"{email} has no key pair yet; they must run `aileron join` or `aileron init` first")
        version, key = self.vault_key(vault)
        try:
            wrapping = crypto.vault_key_wrap(
                key,
                crypto.unb64(member["public_key"]),
                vault_id=vault["id"],
                member_id=member["user"]["id"],
                key_version=version,
            )
        finally:
            crypto.wipe(key)
        return dict(
            self.api.post(
                f"{self.base}{vault['id']}/members/",
                {"user_id": member["user"]["id"], "role": role, "wrapping": crypto.b64(wrapping)},
            )
        )

    def confirm_waiting(self, vaults: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Wrap each team vault's key, here, to everyone waiting for it in the vaults this user owns: what was
        done, one entry per person ({vault, email, confirmed, error})."""
        done: list[dict[str, Any]] = []
        for vault in vaults if vaults is not None else self.vaults():
            if vault.get("my_role") != "owner" or not vault.get("waiting"):
                continue
            for person in vault["waiting"]:
                entry = {"vault": vault["name"], "email": person["email"], "confirmed": False, "error": None}
                try:
                    self.grant(vault, person["email"], person["role"])
                except CliError as exc:
                    entry["error"] = str(exc)
                else:
                    entry["confirmed"] = True
                done.append(entry)
        return done

    def confirm_if_waiting(self, passphrase: str) -> list[dict[str, Any]]:
        """confirm_waiting, after an unlock the caller already asked for (as `launch` does): nothing is unlocked
        when nobody waits for a vault this user owns."""
        vaults = [
            v for v in self.vaults() if v.get("my_role") == "owner" and v.get("waiting") and v.get("auto_confirm", True)
        ]
        if not vaults:
            return []
        self.unlock(lambda: passphrase)
        return self.confirm_waiting(vaults)

    def revoke(self, vault: dict[str, Any], email: str) -> None:
        member = self.member_by_email(email)
        self.api.delete(f"{self.base}{vault['id']}/members/{member['user']['id']}/")

    def rotate(self, vault: dict[str, Any], progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Re-encrypt every credential under a new vault key and wrap it for every remaining member."""
        for _ in range(ROTATION_ATTEMPTS):
            export = self.api.get(f"{self.base}{vault['id']}/export/")
            version = int(export["key_version"])
            old_version, old_key = self.vault_key(vault)
            try:
                if old_version != version:
                    continue
                if progress:
                    progress(0, len(export["credentials"]))
                material = self._prepare(vault, export, version, old_key)
            finally:
                crypto.wipe(old_key)
            if progress:
                progress(len(material.credentials), len(material.credentials))
            try:
                return dict(
                    self.api.post(
                        f"{self.base}{vault['id']}/rotations/",
                        {
                            "from_version": version,
                            "credentials": {cid: crypto.b64(b) for cid, b in material.credentials.items()},
                            "wrappings": {uid: crypto.b64(w) for uid, w in material.wrappings.items()},
                        },
                    )
                )
            except CliError as exc:
                if "(409)" not in str(exc):
                    raise
        raise CliError("the vault kept changing during the rotation; run `aileron vault rotate` again")

    def _prepare(self, vault: dict[str, Any], export: dict[str, Any], version: int, old_key: bytearray) -> Any:
        try:
            return rotation_prepare(
                organization_id=self.me.organization_id,
                vault_id=vault["id"],
                from_version=version,
                old_key=old_key,
                credentials={cid: crypto.unb64(b) for cid, b in export["credentials"].items()},
                member_public_keys={m["user_id"]: crypto.unb64(m["public_key"]) for m in export["members"]},
            )
        except Undecryptable as exc:
            names = {c["id"]: c["name"] for c in self.credentials(vault)}
            bad = ", ".join(names.get(i, i) for i in exc.credential_ids)
            raise CliError(
                f"these secrets do not open with the vault's key (damaged or planted): {bad}; "
                f"remove them with `aileron secret rm NAME --vault {vault['name']}` and rotate again"
            ) from None

    # credentials

    def credentials(self, vault: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.api.get(f"{self.base}{vault['id']}/credentials/"))

    def _encrypt(self, vault: dict[str, Any], credential_id: str, value: bytearray) -> bytes:
        """VALUE under the vault's current key, bound to the credential id (the vault key is wiped after)."""
        version, key = self.vault_key(vault)
        try:
            return crypto.credential_encrypt(
                value,
                key,
                organization_id=self.me.organization_id,
                vault_id=vault["id"],
                credential_id=credential_id,
                key_version=version,
            )
        finally:
            crypto.wipe(key)

    def add_secret(
        self, vault: dict[str, Any], name: str, connector: str, value: bytearray, actions: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        credential_id = str(uuid.uuid4())
        blob = self._encrypt(vault, credential_id, value)
        return dict(
            self.api.post(
                f"{self.base}{vault['id']}/credentials/",
                {
                    "id": credential_id,
                    "name": name,
                    "connector": connector,
                    "ciphertext": crypto.b64(blob),
                    "action_bindings": list(actions),
                },
            )
        )

    def update_secret(
        self, vault: dict[str, Any], name: str, value: bytearray, *, schedule: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the secret NAME's value as its next version (encrypted here, bound to the same credential id);
        SCHEDULE: `expires_at` and `rotate_every_days`, when given."""
        matches = [c for c in self.credentials(vault) if c["name"] == name]
        if not matches:
            raise CliError(f"no secret {name!r} in vault {vault['name']!r} (`aileron secret add` makes one)")
        credential_id = matches[0]["id"]
        blob = self._encrypt(vault, credential_id, value)
        return dict(
            self.api.put(
                f"{self.base}{vault['id']}/credentials/{credential_id}/", {"ciphertext": crypto.b64(blob), **schedule}
            )
        )

    def remove_secret(self, vault: dict[str, Any], name: str) -> None:
        matches = [c for c in self.credentials(vault) if c["name"] == name]
        if not matches:
            raise CliError(f"no secret {name!r} in vault {vault['name']!r}")
        self.api.delete(f"{self.base}{vault['id']}/credentials/{matches[0]['id']}/")


def read_token(env_name: str, prompt: str) -> str:
    """A token or invitation secret from ENV_NAME, else stdin when piped, else a hidden prompt; never argv."""
    value = os.environ.get(env_name)
    if value:
        return value.strip()
    if sys.stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        value = sys.stdin.readline()
    if not value.strip():
        raise CliError(f"no value given: set {env_name}, pipe it on stdin or type it at the prompt", exit_code=2)
    return value.strip()


def read_secret_value() -> bytearray:
    """The secret from stdin when piped, else a hidden prompt; never argv, never echoed."""
    if sys.stdin.isatty():
        value = getpass.getpass("Secret value (hidden): ")
        data = bytearray(value.encode("utf-8"))
        del value
    else:
        data = bytearray(sys.stdin.buffer.read())
        while data.endswith((b"\n", b"\r")):
            data.pop()
    if not data:
        raise CliError("the secret value is empty", exit_code=2)
    return data

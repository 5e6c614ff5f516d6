"""Opening an agent session: mint its token, attest the data plane, hand it the sealed master key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aileron_cli.client import ApiClient, CliError
from aileron_cli.vaultops import Identity
from aileron_shared import keychannel as local
from vaults import crypto


@dataclass(frozen=True, slots=True)
class KeyChannel:
    """How this CLI reaches the data plane's key channel: the unix socket when the data plane runs on this
    machine (the fast path), else through the server it is logged in to, which relays each request to the
    organization's data plane (vaults.keyrelay) and cannot open what it carries."""

    api: ApiClient
    organization_id: str
    socket_path: Path | None = None

    @classmethod
    def choose(cls, api: ApiClient, organization_id: str, socket_path: Path) -> KeyChannel:
        return cls(api, organization_id, socket_path if socket_path.exists() else None)

    def __str__(self) -> str:
        return str(self.socket_path) if self.socket_path else f"{self.api.server} (relayed to its data plane)"

    def send(self, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """One request, the data plane's answer. Raises OSError or ValueError (socket), CliError (relay)."""
        if self.socket_path is not None:
            return local.request(self.socket_path, body, timeout)
        # The session token stays on this machine: a relayed `open` names the session by id (its master key is
        # sealed to the token's non-secret lookup part), so no database or log on the way ever holds the token.
        body = {k: v for k, v in body.items() if k != "session_token"}
        answer = self.api.request(
            "POST", f"/api/v1/orgs/{self.organization_id}/key-channel/", json=body, timeout=timeout + 15
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("answer"), dict):
            raise CliError(f"{self.api.server} relayed no answer from the data plane")
        return dict(answer["answer"])


@dataclass(frozen=True, slots=True)
class SessionOpened:
    session_id: str
    token: str
    expires_at: str


def session_open(
    api: ApiClient,
    identity: Identity,
    *,
    passphrase: str,
    name: str,
    minutes: int,
    channel: KeyChannel,
    expected_measurement: str | None = None,
    project_id: str | None = None,
    pins: list[str] | None = None,
) -> SessionOpened:
    """Start a session whose keys the data plane behind `channel` holds, once it has proved what it runs.

    The passphrase is checked here first (a wrong one mints nothing). The master key goes to the data plane only
    HPKE-sealed to the key in an attestation report this CLI verified against its own measurement of the data
    plane's code (`expected_measurement`, by default computed from this installation). On any failure after the
    token is minted, the token is deleted again. `project_id`: the organization's project the session works for
    (attribution, and the project's own TCP rules).
    """
    from dataplane import attestation, keychannel

    material = crypto.UserKeyMaterial.from_dict(api.get("/api/v1/keys/"))
    master = crypto.derive_master_key(passphrase, material.kdf)
    try:
        try:
            crypto.wipe(crypto.open_private_key(material.sealed_private_key, master, user_id=identity.user_id))
        except crypto.DecryptionError:
            raise CliError("wrong passphrase", exit_code=2) from None
        try:
            expected = expected_measurement or attestation.expected_measurement()
        except (attestation.AttestationError, OSError) as exc:
            raise CliError(f"cannot measure this installation's data plane: {exc}") from None
        created = api.post(
            f"/api/v1/orgs/{identity.organization_id}/session-tokens/",
            {
                "name": name,
                "expires_in_minutes": minutes,
                **({"project": project_id} if project_id else {}),
                **({"pins": pins} if pins else {}),
            },
        )

        def revoke() -> None:
            api.delete(f"/api/v1/orgs/{identity.organization_id}/session-tokens/{created['id']}/")

        try:
            answer = keychannel.open_session(
                channel.send,
                session_token=created["token"],
                session_id=created["id"],
                master_key=master,
                expected_measurement=expected,
            )
        except attestation.AttestationError as exc:
            revoke()
            raise CliError(f"the data plane's attestation failed: {exc}") from None
        except (OSError, ValueError) as exc:
            revoke()
            raise CliError(f"cannot talk to the credential service at {channel}: {exc}") from None
        except CliError as exc:
            revoke()
            raise CliError(f"cannot reach the data plane's key channel through {channel.api.server}: {exc}") from None
    finally:
        crypto.wipe(master)
    if not answer.get("ok"):
        revoke()
        raise CliError(f"the credential service refused the session: {answer.get('error')}")
    return SessionOpened(session_id=created["id"], token=created["token"], expires_at=created["expires_at"])

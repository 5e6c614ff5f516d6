"""Opening an agent session: mint its token, attest the local data plane, hand it the sealed master key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aileron_cli.client import ApiClient, CliError
from aileron_cli.vaultops import Identity
from vaults import crypto


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
    socket_path: Path,
    expected_measurement: str | None = None,
    project_id: str | None = None,
    pins: list[str] | None = None,
) -> SessionOpened:
    """Start a session whose keys the credential service at `socket_path` holds, once it has proved what it runs.

    The passphrase is checked here first (a wrong one mints nothing). The master key goes to the data plane only
    HPKE-sealed to the key in an attestation report this CLI verified against its own measurement of the data
    plane's code (`expected_measurement`, by default computed from this installation). On any failure after the
    token is minted, the token is deleted again. `project_id`: the organization's project the session works for
    (attribution, and the project's own TCP rules).
    """
    from dataplane import attestation, keychannel

    if not socket_path.exists():
        raise CliError(f"no credential service at {socket_path} (is `aileron service` running here?)")
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
                socket_path, session_token=created["token"], master_key=master, expected_measurement=expected
            )
        except attestation.AttestationError as exc:
            revoke()
            raise CliError(f"the data plane's attestation failed: {exc}") from None
        except (OSError, ValueError) as exc:
            revoke()
            raise CliError(f"cannot talk to the credential service at {socket_path}: {exc}") from None
    finally:
        crypto.wipe(master)
    if not answer.get("ok"):
        revoke()
        raise CliError(f"the credential service refused the session: {answer.get('error')}")
    return SessionOpened(session_id=created["id"], token=created["token"], expires_at=created["expires_at"])

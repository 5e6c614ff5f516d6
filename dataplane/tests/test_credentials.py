"""The credential service against a real control plane: unlock, decrypt, wipe, expire, refuse."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from dataplane import keychannel
from dataplane.control import ControlPlane, ControlPlaneError, NotFoundError
from dataplane.credentials import CredentialService, SessionUnknown, WrongKey
from tests.service import BIN, Service
from vaults import crypto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PASSPHRASE = "correct horse battery staple"  # the service fixture's AILERON_PASSPHRASE


def cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Any:
    result = subprocess.run([str(BIN / "aileron"), *args], env=env, input=stdin, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout) if "--json" in args else result.stdout


class World:
    """A user of their own (own AILERON_HOME, own organization) on the module's shared service."""

    def __init__(self, service: Service, home: Path) -> None:
        self.service = service
        self.env = {**service.env, "AILERON_HOME": str(home)}
        email = f"alice-{uuid.uuid4().hex[:8]}@example.com"
        created = cli(self.env, "init", "--org", "Acme", "--email", email, "--server", service.url, "--json")
        self.org = created["organization"]["id"]
        self.user_id = created["user"]["id"]
        self.pat = json.loads((home / "cli.json").read_text())["token"]
        cli(self.env, "secret", "add", "github-token", "--connector", "github", stdin=b"ghp_credential_service")
        secrets = cli(self.env, "secret", "list", "--json")
        self.vault_id, self.credential_id = secrets[0]["vault_id"], secrets[0]["id"]
        self.service_token = (service.home / "dataplane" / "service-token").read_text().strip()

    def session_token(self, minutes: int = 60) -> dict[str, Any]:
        response = httpx.post(
            f"{self.service.url}/api/v1/orgs/{self.org}/session-tokens/",
            json={"name": "agent", "expires_in_minutes": minutes},
            headers={"Authorization": f"Bearer {self.pat}"},
        )
        response.raise_for_status()
        return dict(response.json())

    def master_key(self, passphrase: str = PASSPHRASE) -> bytearray:
        keys = httpx.get(f"{self.service.url}/api/v1/keys/", headers={"Authorization": f"Bearer {self.pat}"}).json()
        return crypto.derive_master_key(passphrase, crypto.KdfParams.from_dict(keys["kdf"]))


@pytest.fixture
def world(module_service: Service, tmp_path: Path) -> World:
    return World(module_service, tmp_path / "cli-home")


def test_an_unlocked_session_decrypts_and_ending_it_wipes_the_keys(world: World) -> None:
    control = ControlPlane(world.service.url, world.service_token)
    creds = CredentialService(control)
    session = world.session_token()
    info = creds.open(session_token=session["token"], master_key=world.master_key())
    assert (info.user_id, info.organization_id) == (world.user_id, world.org)

    plain = creds.decrypt(session_id=info.session_id, vault_id=world.vault_id, credential_id=world.credential_id)
    assert bytes(plain) == b"ghp_credential_service"
    crypto.wipe(plain)

    held = creds._sessions[info.session_id]
    private_key, vault_keys = held.private_key, list(held.vault_keys.values())
    assert any(private_key) and vault_keys
    assert creds.close(info.session_id)
    assert private_key == bytearray(len(private_key)) and all(k == bytearray(32) for k in vault_keys)
    with pytest.raises(SessionUnknown):
        creds.decrypt(session_id=info.session_id, vault_id=world.vault_id, credential_id=world.credential_id)


def test_the_ttl_ends_a_session(world: World) -> None:
    now = [1000.0]
    creds = CredentialService(ControlPlane(world.service.url, world.service_token), ttl=60, clock=lambda: now[0])
    info = creds.open(session_token=world.session_token()["token"], master_key=world.master_key())
    now[0] += 61
    assert creds.sweep() == 1 and len(creds) == 0
    with pytest.raises(SessionUnknown):
        creds.decrypt(session_id=info.session_id, vault_id=world.vault_id, credential_id=world.credential_id)


def test_a_wrong_master_key_or_a_dead_session_is_refused(world: World) -> None:
    control = ControlPlane(world.service.url, world.service_token)
    creds = CredentialService(control)
    with pytest.raises(WrongKey):
        creds.open(session_token=world.session_token()["token"], master_key=world.master_key("not it"))
    session = world.session_token()
    info = creds.open(session_token=session["token"], master_key=world.master_key())
    httpx.delete(
        f"{world.service.url}/api/v1/orgs/{world.org}/session-tokens/{session['id']}/",
        headers={"Authorization": f"Bearer {world.pat}"},
    ).raise_for_status()
    with pytest.raises(NotFoundError):  # the control plane no longer serves ciphertext for a revoked session
        creds.decrypt(session_id=info.session_id, vault_id=world.vault_id, credential_id=world.credential_id)
    with pytest.raises(NotFoundError):
        creds.open(session_token=session["token"], master_key=world.master_key())


def test_the_data_plane_endpoints_take_only_the_service_token(world: World) -> None:
    session = world.session_token()
    for token in (world.pat, session["token"]):
        response = httpx.post(
            f"{world.service.url}/api/v1/dataplane/sessions/resolve/",
            json={"session_token": session["token"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 403


def test_an_unreachable_control_plane_fails_closed(world: World) -> None:
    creds = CredentialService(ControlPlane("http://127.0.0.1:9", world.service_token, timeout=1))
    with pytest.raises(ControlPlaneError):
        creds.open(session_token=world.session_token()["token"], master_key=world.master_key())


def test_aileron_session_start_unlocks_through_the_local_key_channel(world: World) -> None:
    # the key channel lives in the service's AILERON_HOME, which the CLI finds through its own AILERON_HOME:
    # here the user's CLI home is another folder, so point it at the service's socket folder.
    env = {**world.env}
    (Path(env["AILERON_HOME"]) / "run").symlink_to(world.service.home / "run")
    started = cli(env, "session", "start", "--json")
    socket_path = world.service.home / "run" / "credentials.sock"
    assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
    assert keychannel.request(socket_path, {"op": "status", "session_id": started["session_id"]})["open"] is True
    wrong = subprocess.run(
        [str(BIN / "aileron"), "session", "start"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "AILERON_PASSPHRASE": "wrong"},
    )
    assert wrong.returncode == 2 and wrong.stderr.strip() == "aileron: wrong passphrase"
    cli(env, "session", "end", started["session_id"])
    assert keychannel.request(socket_path, {"op": "status", "session_id": started["session_id"]})["open"] is False
    who = httpx.get(f"{world.service.url}/api/v1/whoami/", headers={"Authorization": f"Bearer {started['token']}"})
    assert who.status_code == 401


def test_the_data_plane_imports_no_django() -> None:
    code = (
        "import sys; import dataplane.credserver, dataplane.keychannel, dataplane.credentials, dataplane.control; "
        "import dataplane.attestation, dataplane.usage, dataplane.server, dataplane.proxy, dataplane.spool; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'rest_framework'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout + result.stderr

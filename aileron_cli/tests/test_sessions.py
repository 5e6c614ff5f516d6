"""session_open against a running service: a data plane that fails attestation gets no key and leaves no token."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from aileron_cli.client import ApiClient, CliError
from aileron_cli.sessions import session_open
from aileron_cli.vaultops import Identity
from dataplane import keychannel
from tests.service import BIN, Service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PASSPHRASE = "correct horse battery staple"  # the service fixture's AILERON_PASSPHRASE


def cli(env: dict[str, str], *args: str) -> Any:
    result = subprocess.run([str(BIN / "aileron"), *args], env=env, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.fixture
def alice(module_service: Service, tmp_path: Path) -> tuple[ApiClient, Identity]:
    env = {**module_service.env, "AILERON_HOME": str(tmp_path / "home")}
    email = f"alice-{uuid.uuid4().hex[:8]}@example.com"
    created = cli(env, "init", "--org", "Acme", "--email", email, "--server", module_service.url, "--json")
    token = json.loads((tmp_path / "home" / "cli.json").read_text())["token"]
    identity = Identity(created["user"]["id"], email, created["organization"]["id"])
    return ApiClient(module_service.url, token=token), identity


def socket_of(service: Service) -> Path:
    return service.home / "run" / "credentials.sock"


def live_session_tokens(api: ApiClient, identity: Identity) -> list[Any]:
    """Deleting a token revokes it: the row stays, inactive."""
    listed = api.get(f"/api/v1/orgs/{identity.organization_id}/session-tokens/")
    return [t for t in (listed["results"] if isinstance(listed, dict) else listed) if t["active"]]


def test_session_open_unlocks_a_session_through_the_attested_channel(
    module_service: Service, alice: tuple[ApiClient, Identity]
) -> None:
    api, identity = alice
    opened = session_open(
        api, identity, passphrase=PASSPHRASE, name="agent", minutes=10, socket_path=socket_of(module_service)
    )
    status = keychannel.request(socket_of(module_service), {"op": "status", "session_id": opened.session_id})
    assert status["open"] is True and opened.token.startswith("ail_ses_")


def test_a_data_plane_that_fails_attestation_gets_no_key_and_the_token_is_deleted(
    module_service: Service, alice: tuple[ApiClient, Identity]
) -> None:
    api, identity = alice
    before = len(live_session_tokens(api, identity))
    with pytest.raises(CliError, match=r"^the data plane's attestation failed: the data plane measures"):
        session_open(
            api,
            identity,
            passphrase=PASSPHRASE,
            name="agent",
            minutes=10,
            socket_path=socket_of(module_service),
            expected_measurement="ab" * 32,  # what a tampered data plane, seen from an honest CLI, looks like
        )
    assert len(live_session_tokens(api, identity)) == before


def test_a_wrong_passphrase_mints_nothing(module_service: Service, alice: tuple[ApiClient, Identity]) -> None:
    api, identity = alice
    with pytest.raises(CliError, match="wrong passphrase"):
        session_open(api, identity, passphrase="not it", name="a", minutes=10, socket_path=socket_of(module_service))
    assert live_session_tokens(api, identity) == []

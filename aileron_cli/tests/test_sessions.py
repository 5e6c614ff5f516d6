"""session_open against a running service: a data plane that fails attestation gets no key and leaves no token;
a CLI without the data plane's socket (another machine) opens and ends its session through the server's relay."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from aileron_cli.client import ApiClient, CliError
from aileron_cli.sessions import KeyChannel, session_open
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
    channel = KeyChannel(api, identity.organization_id, socket_of(module_service))
    opened = session_open(api, identity, passphrase=PASSPHRASE, name="agent", minutes=10, channel=channel)
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
            channel=KeyChannel(api, identity.organization_id, socket_of(module_service)),
            expected_measurement="ab" * 32,  # what a tampered data plane, seen from an honest CLI, looks like
        )
    assert len(live_session_tokens(api, identity)) == before


def test_a_wrong_passphrase_mints_nothing(module_service: Service, alice: tuple[ApiClient, Identity]) -> None:
    api, identity = alice
    with pytest.raises(CliError, match="wrong passphrase"):
        session_open(
            api,
            identity,
            passphrase="not it",
            name="a",
            minutes=10,
            channel=KeyChannel(api, identity.organization_id, socket_of(module_service)),
        )
    assert live_session_tokens(api, identity) == []


def test_without_the_socket_the_session_is_opened_and_ended_through_the_servers_relay(
    module_service: Service, alice: tuple[ApiClient, Identity]
) -> None:
    api, identity = alice
    relayed = KeyChannel(api, identity.organization_id)  # no socket: a CLI on another machine
    assert str(relayed).endswith("(relayed to its data plane)")
    opened = session_open(api, identity, passphrase=PASSPHRASE, name="remote", minutes=10, channel=relayed)
    # The data plane itself (asked on its socket) holds the session's unlocked keys.
    local = socket_of(module_service)
    assert keychannel.request(local, {"op": "status", "session_id": opened.session_id})["open"] is True
    assert relayed.send({"op": "status", "session_id": opened.session_id}) == {
        "ok": True,
        "open": True,
        "expires_in": relayed.send({"op": "status", "session_id": opened.session_id})["expires_in"],
    }
    assert relayed.send({"op": "close", "session_id": opened.session_id}) == {"ok": True, "closed": True}
    assert keychannel.request(local, {"op": "status", "session_id": opened.session_id})["open"] is False


def test_a_relayed_attestation_failure_sends_no_key_and_deletes_the_token(
    module_service: Service, alice: tuple[ApiClient, Identity]
) -> None:
    api, identity = alice
    with pytest.raises(CliError, match=r"^the data plane's attestation failed: the data plane measures"):
        session_open(
            api,
            identity,
            passphrase=PASSPHRASE,
            name="agent",
            minutes=10,
            channel=KeyChannel(api, identity.organization_id),
            expected_measurement="ab" * 32,
        )
    assert live_session_tokens(api, identity) == []


def test_the_relay_serves_a_person_only_for_their_own_sessions(
    module_service: Service, alice: tuple[ApiClient, Identity], tmp_path: Path
) -> None:
    api, identity = alice
    opened = session_open(
        api, identity, passphrase=PASSPHRASE, name="mine", minutes=10, channel=KeyChannel(api, identity.organization_id)
    )
    # Mallory, in her own organization on the same server, can neither see nor end alice's session...
    env = {**module_service.env, "AILERON_HOME": str(tmp_path / "mallory")}
    created = cli(
        env, "init", "--org", "Evil", "--email", "mallory@example.com", "--server", module_service.url, "--json"
    )
    mallory = ApiClient(module_service.url, token=json.loads((tmp_path / "mallory" / "cli.json").read_text())["token"])
    theirs = KeyChannel(mallory, created["organization"]["id"])
    for op in ("status", "close"):
        with pytest.raises(CliError, match=r"No such session of yours\. \(404\)"):
            theirs.send({"op": op, "session_id": opened.session_id})
    # ... nor open it, nor send what the relay does not carry, nor relay into alice's organization.
    with pytest.raises(CliError, match=r"No live session of yours has that id\. \(404\)"):
        theirs.send({"op": "open", "session_id": opened.session_id, "nonce": "A" * 44, "sealed_master_key": "AAAA"})
    with pytest.raises(CliError, match=r"op must be one of attest, open, status, close\. \(400\)"):
        theirs.send({"op": "rotate", "session_id": opened.session_id, "vault_id": str(uuid.uuid4())})
    with pytest.raises(CliError, match=r"No such organization\. \(404\)"):
        KeyChannel(mallory, identity.organization_id).send({"op": "status", "session_id": opened.session_id})
    # A session token is not a person's token: it relays nothing.
    with pytest.raises(CliError, match=r"Only a person's own token relays to the key channel\. \(403\)"):
        KeyChannel(ApiClient(module_service.url, token=opened.token), identity.organization_id).send(
            {"op": "attest", "nonce": "A" * 44}
        )
    assert keychannel.request(socket_of(module_service), {"op": "status", "session_id": opened.session_id})["open"]


def test_a_relayed_session_token_never_reaches_the_server(
    module_service: Service, alice: tuple[ApiClient, Identity]
) -> None:
    """The token is a live credential for the proxy: a relayed `open` names the session by id, so no row, WAL
    frame or backup of the control plane's database ever holds it, and a token sent anyway is refused."""
    api, identity = alice
    opened = session_open(
        api,
        identity,
        passphrase=PASSPHRASE,
        name="remote",
        minutes=10,
        channel=KeyChannel(api, identity.organization_id),
    )
    assert keychannel.request(socket_of(module_service), {"op": "status", "session_id": opened.session_id})["open"]
    secret = opened.token.encode()
    held = [p for p in module_service.home.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert held == []
    with pytest.raises(CliError, match=r"a session token is never relayed\. \(400\)"):
        api.post(
            f"/api/v1/orgs/{identity.organization_id}/key-channel/",
            {"op": "open", "session_token": opened.token, "nonce": "A" * 44, "sealed_master_key": "AAAA"},
        )

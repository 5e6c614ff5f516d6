"""The data plane's side of the key-channel relay: it answers what the control plane relays with the socket's
code, refuses what is not relayable even if the control plane asks, and outlives a control plane that is down."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from dataplane import attestation, keychannel
from dataplane.control import ControlPlane, ControlPlaneError, NotFoundError
from dataplane.credentials import CredentialService
from vaults import crypto


class RelayingControl(ControlPlane):
    """Hands out queued requests (after failing `down` pulls), and keeps the answers."""

    def __init__(self, requests: list[dict[str, Any]], *, down: int = 0, gone: frozenset[str] = frozenset()) -> None:
        super().__init__("http://127.0.0.1:9", "ail_svc_unused")
        self.requests, self.down, self.gone = requests, down, gone
        self.pulls = 0
        self.answers: dict[str, dict[str, Any]] = {}

    async def keychannel_pull(self, *, timeout: float) -> list[dict[str, Any]]:
        self.pulls += 1
        if self.down:
            self.down -= 1
            raise ControlPlaneError("control plane unreachable: ConnectError")
        handed, self.requests = self.requests, []
        if not handed:
            await asyncio.sleep(0.01)
        return handed

    async def keychannel_answer(self, request_id: str, answer: dict[str, Any]) -> None:
        if request_id in self.gone:
            raise NotFoundError("nobody waits for that answer")
        self.answers[request_id] = answer


def channel_for(control: ControlPlane) -> keychannel.Channel:
    key = x25519.X25519PrivateKey.generate()
    provider = attestation.SoftwareProvider(
        public_key=key.public_key().public_bytes_raw(), config=attestation.dataplane_config(ttl_seconds=60)
    )
    return keychannel.Channel(CredentialService(control, ttl=60), provider, key)


async def run_until(control: RelayingControl, channel: keychannel.Channel, want: int) -> None:
    task = asyncio.create_task(keychannel.relay(channel, control, poll=0.01))
    try:
        async with asyncio.timeout(10):
            while len(control.answers) < want:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()


def test_relayed_requests_are_answered_as_the_socket_would_and_only_relayable_ones() -> None:
    nonce = os.urandom(attestation.NONCE_BYTES)
    control = RelayingControl(
        [
            {"id": "a", "op": "attest", "body": {"nonce": crypto.b64(nonce)}},
            {"id": "b", "op": "rotate", "body": {"session_id": "s", "vault_id": "v"}},
            {"id": "c", "op": "status", "body": {"session_id": "nobody"}},
            {"id": "d", "op": "attest", "body": "not an object"},
            {"id": "e", "op": "open", "body": {"session_token": "ail_ses_x", "nonce": crypto.b64(nonce)}},
        ]
    )
    channel = channel_for(control)
    asyncio.run(run_until(control, channel, 5))
    report = attestation.Report.from_json(control.answers["a"]["report"])
    assert report.nonce == nonce and report.public_key == channel.private_key.public_key().public_bytes_raw()
    assert control.answers["b"] == {"ok": False, "error": "op 'rotate' is not relayed"}
    assert control.answers["c"] == {"ok": True, "open": False, "expires_in": None}
    assert control.answers["d"] == {"ok": False, "error": "malformed request"}
    assert control.answers["e"] == {"ok": False, "error": "malformed request"}


def test_the_relay_outlives_a_control_plane_that_is_down_and_a_cli_that_stopped_waiting() -> None:
    nonce = crypto.b64(os.urandom(attestation.NONCE_BYTES))
    control = RelayingControl(
        [
            {"id": "gone", "op": "attest", "body": {"nonce": nonce}},
            {"id": "here", "op": "attest", "body": {"nonce": nonce}},
        ],
        down=2,
        gone=frozenset({"gone"}),
    )
    asyncio.run(run_until(control, channel_for(control), 1))
    assert control.pulls >= 3 and list(control.answers) == ["here"] and control.answers["here"]["ok"] is True


def test_one_requester_asking_for_report_after_report_never_pushes_out_anothers_nonce() -> None:
    channel = channel_for(RelayingControl([]))
    alices = os.urandom(attestation.NONCE_BYTES)
    channel.remember(alices, "relayed:alice")
    for _ in range(keychannel.MAX_PENDING_NONCES * 2):
        channel.remember(os.urandom(attestation.NONCE_BYTES), "relayed:mallory")
    assert sum(1 for _, who in channel.pending.values() if who == "relayed:mallory") == keychannel.MAX_PENDING_PER_OWNER
    assert channel.redeem(alices) and not channel.redeem(alices)  # still there, and good once

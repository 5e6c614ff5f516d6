"""Attestation reports, and the key channel that takes a master key only sealed to an attested key."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from dataplane import attestation, keychannel
from dataplane.attestation import AttestationError, Report, SoftwareProvider
from dataplane.control import ControlPlane, SessionKeys
from dataplane.credentials import CredentialService
from vaults import crypto

CONFIG = attestation.dataplane_config(ttl_seconds=3600)


def fresh_key() -> bytes:
    return x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()


@pytest.fixture(scope="module")
def measurement() -> str:
    return attestation.measure(CONFIG)


@pytest.fixture
def provider() -> SoftwareProvider:
    return SoftwareProvider(public_key=fresh_key(), config=CONFIG)


# --- reports -------------------------------------------------------------------------------------------


def test_a_report_round_trips_and_verifies(provider: SoftwareProvider, measurement: str) -> None:
    nonce = os.urandom(32)
    report = provider.report(nonce)
    again = Report.from_json(report.to_json())
    assert again == report
    assert (again.provider, again.measurement, again.public_key, again.nonce) == (
        "software",
        measurement,
        provider.public_key,
        nonce,
    )
    SoftwareProvider().verify(again, nonce=nonce, expected_measurement=measurement)


def test_a_report_for_another_nonce_is_refused(provider: SoftwareProvider, measurement: str) -> None:
    report = provider.report(os.urandom(32))
    with pytest.raises(AttestationError, match="another nonce"):
        SoftwareProvider().verify(report, nonce=os.urandom(32), expected_measurement=measurement)


def test_a_report_with_an_edited_measurement_is_refused(provider: SoftwareProvider, measurement: str) -> None:
    nonce = os.urandom(32)
    forged = dataclasses.replace(provider.report(nonce), measurement="00" * 32)
    with pytest.raises(AttestationError, match="evidence does not commit"):
        SoftwareProvider().verify(forged, nonce=nonce, expected_measurement="00" * 32)


def test_a_report_whose_key_was_swapped_is_refused(provider: SoftwareProvider, measurement: str) -> None:
    nonce = os.urandom(32)
    swapped = dataclasses.replace(provider.report(nonce), public_key=fresh_key())
    with pytest.raises(AttestationError, match="evidence does not commit"):
        SoftwareProvider().verify(swapped, nonce=nonce, expected_measurement=measurement)


def test_a_data_plane_with_tampered_code_fails_verification(tmp_path: Path, measurement: str) -> None:
    for name, path in attestation.measured_files(attestation.code_root()):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp_path / name)
    assert attestation.measure(CONFIG, root=tmp_path) == measurement  # a faithful copy measures the same
    with (tmp_path / "dataplane" / "credentials.py").open("a") as handle:
        handle.write("\nLEAK = True\n")
    tampered = SoftwareProvider(public_key=fresh_key(), config=CONFIG, root=tmp_path)
    assert tampered.measurement != measurement
    nonce = os.urandom(32)
    with pytest.raises(AttestationError, match="differs from this installation"):
        SoftwareProvider().verify(tampered.report(nonce), nonce=nonce, expected_measurement=measurement)


def test_a_data_plane_with_another_config_fails_verification(measurement: str) -> None:
    other = SoftwareProvider(public_key=fresh_key(), config=attestation.dataplane_config(ttl_seconds=7 * 86400))
    nonce = os.urandom(32)
    with pytest.raises(AttestationError, match="code or config"):
        SoftwareProvider().verify(other.report(nonce), nonce=nonce, expected_measurement=measurement)


def test_a_stale_report_is_refused(measurement: str) -> None:
    now = [1_000_000.0]
    old = SoftwareProvider(public_key=fresh_key(), config=CONFIG, clock=lambda: now[0])
    nonce = os.urandom(32)
    report = old.report(nonce)
    now[0] += attestation.MAX_AGE_SECONDS + 1
    with pytest.raises(AttestationError, match="not fresh"):
        SoftwareProvider(clock=lambda: now[0]).verify(report, nonce=nonce, expected_measurement=measurement)


def test_a_report_from_another_provider_is_refused(provider: SoftwareProvider, measurement: str) -> None:
    nonce = os.urandom(32)
    report = dataclasses.replace(provider.report(nonce), provider="sev-snp")
    with pytest.raises(AttestationError, match="'sev-snp', not 'software'"):
        SoftwareProvider().verify(report, nonce=nonce, expected_measurement=measurement)


@pytest.mark.parametrize(
    "data",
    ["not json", "[]", {"provider": "software"}, {"provider": "software", "measurement": "ab", "issued_at": "now"}],
)
def test_a_malformed_report_is_an_attestation_error(data: Any) -> None:
    with pytest.raises(AttestationError, match="malformed attestation report"):
        Report.from_json(data)


def test_a_verifier_cannot_report_and_a_nonce_has_one_size(provider: SoftwareProvider) -> None:
    with pytest.raises(AttestationError, match="holds no key"):
        SoftwareProvider().report(os.urandom(32))
    with pytest.raises(AttestationError, match="32 bytes"):
        provider.report(b"short")


def test_providers_are_found_by_name() -> None:
    assert isinstance(attestation.provider_by_name("software"), SoftwareProvider)
    with pytest.raises(AttestationError, match="unknown attestation provider 'tdx'"):
        attestation.provider_by_name("tdx")


def test_the_measurement_covers_the_data_plane_and_its_connectors_but_not_tests() -> None:
    names = [name for name, _ in attestation.measured_files(attestation.code_root())]
    assert names == sorted(names)
    assert {"dataplane/keychannel.py", "connectors/builtin/github/connector.toml", "vaults/crypto.py"} <= set(names)
    assert not [n for n in names if "/tests/" in n or n.endswith(".pyc")]


# --- the key channel -----------------------------------------------------------------------------------

USER = "user-1"
TOKEN = "ail_ses_" + "L" * 12 + "s" * 32


class FakeControl(ControlPlane):
    """Answers session_resolve for one token, as the control plane would."""

    def __init__(self, sealed_private_key: bytes) -> None:
        super().__init__("http://127.0.0.1:9", "ail_svc_unused")
        self.sealed = sealed_private_key

    def session_resolve(self, session_token: str | None = None, *, session_id: str | None = None) -> SessionKeys:
        assert session_token == TOKEN
        return SessionKeys("session-1", USER, "org-1", "2999-01-01T00:00:00+00:00", self.sealed, {})


class RunningChannel:
    def __init__(self, service: CredentialService, path: Path) -> None:
        self.service, self.path = service, path
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self._listening():  # the socket file exists from bind(), before listen(): connect to be sure
                break
            threading.Event().wait(0.01)
        assert self._listening(), "the key channel did not start"

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.path))
            except OSError:
                return False
        return True

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(keychannel.serve(self.service, self.path, relayed=False))
        try:
            self.loop.run_until_complete(self.task)
        except (asyncio.CancelledError, keychannel.ChannelError):
            pass

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=10)


@pytest.fixture
def channel() -> Iterator[tuple[RunningChannel, bytearray]]:
    master = bytearray(os.urandom(32))
    private = x25519.X25519PrivateKey.generate().private_bytes_raw()
    service = CredentialService(FakeControl(crypto.seal_private_key(private, master, user_id=USER)), ttl=3600)
    folder = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))  # unix socket paths are short
    running = RunningChannel(service, folder / "run" / "credentials.sock")
    try:
        yield running, master
    finally:
        running.stop()
        service.close_all()
        shutil.rmtree(folder, ignore_errors=True)


def expected_for_channel() -> str:
    return attestation.measure(attestation.dataplane_config(ttl_seconds=3600))


def test_the_channel_refuses_a_plaintext_master_key(channel: tuple[RunningChannel, bytearray]) -> None:
    running, master = channel
    answer = keychannel.request(running.path, {"op": "open", "session_token": TOKEN, "master_key": crypto.b64(master)})
    assert answer == {"ok": False, "error": "master key must be sealed to the attested key"}
    assert len(running.service) == 0


def test_the_channel_opens_a_session_with_a_master_key_sealed_to_its_attested_key(
    channel: tuple[RunningChannel, bytearray],
) -> None:
    running, master = channel
    answer = keychannel.open_session(
        running.path, session_token=TOKEN, master_key=master, expected_measurement=expected_for_channel()
    )
    assert answer["ok"] is True and answer["session_id"] == "session-1"
    assert running.service.status("session-1") is not None


def test_open_session_sends_nothing_to_a_data_plane_that_measures_differently(
    channel: tuple[RunningChannel, bytearray],
) -> None:
    running, master = channel
    with pytest.raises(AttestationError, match="differs from this installation"):
        keychannel.open_session(running.path, session_token=TOKEN, master_key=master, expected_measurement="ab" * 32)
    assert len(running.service) == 0


def _attest(path: Path) -> tuple[bytes, Report]:
    nonce = os.urandom(32)
    answer = keychannel.request(path, {"op": "attest", "nonce": crypto.b64(nonce)})
    assert answer["ok"] is True
    return nonce, Report.from_json(answer["report"])


def _open(path: Path, nonce: bytes, sealed: bytes) -> dict[str, Any]:
    body = {"op": "open", "session_token": TOKEN, "nonce": crypto.b64(nonce), "sealed_master_key": crypto.b64(sealed)}
    return keychannel.request(path, body)


def test_a_sealed_key_opens_one_session_for_its_own_token_and_nonce_only(
    channel: tuple[RunningChannel, bytearray],
) -> None:
    running, master = channel
    nonce, report = _attest(running.path)
    for_another_token = crypto.master_key_seal(master, report.public_key, token_lookup="M" * 12, nonce=nonce)
    refused = _open(running.path, nonce, for_another_token)
    assert refused["ok"] is False and "does not open here" in refused["error"]

    nonce, report = _attest(running.path)
    to_another_key = crypto.master_key_seal(master, fresh_key(), token_lookup="L" * 12, nonce=nonce)
    assert "does not open here" in _open(running.path, nonce, to_another_key)["error"]

    nonce, report = _attest(running.path)
    sealed = crypto.master_key_seal(master, report.public_key, token_lookup="L" * 12, nonce=nonce)
    assert _open(running.path, nonce, sealed)["ok"] is True
    replay = _open(running.path, nonce, sealed)
    assert replay["ok"] is False and "no pending attestation" in replay["error"]


def test_a_nonce_the_channel_never_attested_is_refused(channel: tuple[RunningChannel, bytearray]) -> None:
    running, master = channel
    _, report = _attest(running.path)
    nonce = os.urandom(32)
    sealed = crypto.master_key_seal(master, report.public_key, token_lookup="L" * 12, nonce=nonce)
    assert "no pending attestation" in _open(running.path, nonce, sealed)["error"]


def test_attest_wants_a_32_byte_nonce(channel: tuple[RunningChannel, bytearray]) -> None:
    running, _ = channel
    for nonce in (None, "not base64!", base64.b64encode(b"short").decode()):
        answer = keychannel.request(running.path, {"op": "attest", "nonce": nonce})
        assert answer["ok"] is False and "32-byte nonce" in answer["error"]


def test_serve_refuses_a_provider_that_attests_another_key(tmp_path: Path) -> None:
    service = CredentialService(FakeControl(b""), ttl=3600)
    provider = SoftwareProvider(public_key=fresh_key(), config=CONFIG)
    with pytest.raises(keychannel.ChannelError, match="another key"):
        asyncio.run(
            keychannel.serve(
                service, tmp_path / "s.sock", provider=provider, private_key=x25519.X25519PrivateKey.generate()
            )
        )


def test_a_sealed_master_key_is_bound_to_its_token_lookup_and_nonce() -> None:
    private = x25519.X25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    master, nonce = os.urandom(32), os.urandom(32)
    sealed = crypto.master_key_seal(master, public, token_lookup="abc", nonce=nonce)
    assert bytes(crypto.master_key_open(sealed, private, token_lookup="abc", nonce=nonce)) == master
    for lookup, other_nonce in (("abd", nonce), ("abc", os.urandom(32))):
        with pytest.raises(crypto.DecryptionError):
            crypto.master_key_open(sealed, private, token_lookup=lookup, nonce=other_nonce)

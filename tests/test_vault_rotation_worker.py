"""A revoke done without rotating is completed by the worker, through a vault owner's unlocked session."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.service import BIN, Service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Any:
    result = subprocess.run([str(BIN / "aileron"), *args], env=env, input=stdin, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout) if "--json" in args else result


def team(env: dict[str, str]) -> dict[str, Any]:
    return next(v for v in cli(env, "vault", "list", "--json") if v["name"] == "Team")


def test_the_worker_rotates_through_an_owners_session(service: Service, tmp_path: Path) -> None:
    alice = service.env
    bob = {**service.env, "AILERON_HOME": str(tmp_path / "bob"), "AILERON_PASSPHRASE": "bob's passphrase"}
    cli(alice, "init", "--org", "Acme", "--email", "alice@example.com", "--server", service.url)
    cli(alice, "vault", "create", "Team")
    cli(alice, "secret", "add", "stripe-key", "--connector", "stripe", "--vault", "Team", stdin=b"sk_test_rotate")
    invitation = cli(alice, "invite", "bob@example.com", "--json")["token"]
    cli({**bob, "AILERON_INVITATION": invitation}, "join", "--server", service.url)
    cli(alice, "vault", "grant", "Team", "bob@example.com", "--role", "reader")

    # No owner session yet: the revoke leaves the rotation pending, and `vault list` says so.
    cli(alice, "vault", "revoke", "Team", "bob@example.com", "--no-rotate")
    time.sleep(3)
    assert team(alice)["rotation_pending"] is not None and team(alice)["key_version"] == 1
    listed = cli(alice, "vault", "list")
    assert b"await key rotation" in listed.stderr

    # Alice unlocks a session; the worker's periodic task (or the next revoke) finds it and rotates.
    cli(alice, "session", "start", "--json")
    carol_invite = cli(alice, "invite", "carol@example.com", "--json")["token"]
    carol = {**service.env, "AILERON_HOME": str(tmp_path / "carol"), "AILERON_PASSPHRASE": "carol's passphrase"}
    cli({**carol, "AILERON_INVITATION": carol_invite}, "join", "--server", service.url)
    cli(alice, "vault", "grant", "Team", "carol@example.com", "--role", "reader")
    cli(alice, "vault", "revoke", "Team", "carol@example.com", "--no-rotate")  # enqueues the task again
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and team(alice)["rotation_pending"] is not None:
        time.sleep(0.5)
    rotated = team(alice)
    assert rotated["rotation_pending"] is None, service.log.read_text()[-3000:]
    assert rotated["key_version"] == 2
    assert [m["role"] for m in rotated["members"]] == ["owner"]
    assert "rotated to key version 2" in service.log.read_text()
    # The vault still works for its owner under the new key.
    cli(alice, "secret", "add", "after", "--connector", "stripe", "--vault", "Team", stdin=b"sk_after")

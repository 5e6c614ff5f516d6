"""A team on one Aileron, end to end with real processes: the owner sets up team Support with a team vault and
invites bob into the team; bob joins from his own AILERON_HOME and his first `aileron launch` reaches Linear
with the team's key injected, with no admin step in between (the data plane, holding the owner's unlocked
session, let him into the vault). When bob leaves the team his next request gets no credential and the vault
key is rotated."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_world import World, cli, proxy_world
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
TEAM_KEY = b"lin_api_support_team_key_0123456789"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("team"), credentials=False) as w:
        yield w


def json_of(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Any:
    return json.loads(cli(env, *args, "--json", stdin=stdin).stdout)


def vault_named(env: dict[str, str], name: str) -> dict[str, Any]:
    return next(v for v in json_of(env, "vault", "list") if v["name"] == name)


def wait_until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_bob_joins_the_team_and_his_first_launch_uses_the_team_key_until_he_leaves(
    world: World, tmp_path: Path
) -> None:
    alice = world.service.env  # holds a live session (the world's), unlocked in the data plane
    cli(alice, "team", "create", "Support")
    cli(alice, "connector", "enable", "linear", "--team", "support")
    json_of(alice, "vault", "create", "Support keys", "--team", "support")
    cli(alice, "secret", "add", "linear-team", "--connector", "linear", "--vault", "Support keys", stdin=TEAM_KEY)
    invitation = json_of(alice, "invite", "bob@example.com", "--team", "Support")["token"]

    bob_home = tmp_path / "bob"
    bob = {
        **world.service.env,
        "AILERON_HOME": str(bob_home),
        "AILERON_PASSPHRASE": "bob's own passphrase",
        "PATH": f"{BIN}:{os.environ.get('PATH', os.defpath)}",  # the `linear` shim
    }
    assert "AILERON_PROXY" not in bob  # `launch` learns the proxy (on a free port here) from the server
    joined = json_of({**bob, "AILERON_INVITATION": invitation}, "join", "--server", world.service.url)
    assert joined["teams"] == ["support"]
    # Until issue 15's remote sessions, a CLI reaches the data plane's key channel on the same machine only:
    # bob's home points at the service's.
    (bob_home / "run").symlink_to(world.service.home / "run")

    # Nobody typed a command for bob: the worker had alice's live session wrap the key to him.
    members = wait_until(
        lambda: [m for m in vault_named(alice, "Support keys")["members"] if m["role"] == "reader"],
        "bob's confirmation in the team vault",
    )
    assert len(members) == 1 and vault_named(alice, "Support keys")["waiting"] == []

    mark = len(world.upstream.received)
    first = subprocess.run(
        [str(BIN / "aileron"), "launch", "--sandbox", "none", "--", "linear", "viewer"],
        env=bob,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr.decode() + first.stdout.decode()
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/graphql")]
    assert got[0].headers["authorization"] == TEAM_KEY.decode()
    records = world.audit_wait(lambda rs: any(r["connector"] == "linear" and r.get("completed_at") for r in rs))
    assert any(r["user"] and r["connector"] == "linear" and r["decision"] == "allow" for r in records)

    # Bob leaves the team: revoked from its vault, which rotates through alice's session; no credential reaches
    # his next request.
    cli(alice, "team", "remove", "support", "bob@example.com")
    rotated = wait_until(
        lambda: (v := vault_named(alice, "Support keys"))["rotation_pending"] is None and v["key_version"] == 2 and v,
        "the rotation after bob left",
    )
    assert [m["role"] for m in rotated["members"]] == ["owner"]
    mark = len(world.upstream.received)
    after = subprocess.run(
        [str(BIN / "aileron"), "launch", "--sandbox", "none", "--", "linear", "viewer"],
        env=bob,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert after.returncode != 0
    assert world.received_since(mark) == []
    assert b"linear" in after.stdout + after.stderr

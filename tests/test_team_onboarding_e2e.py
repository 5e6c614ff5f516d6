"""A team on one Aileron, end to end with real processes: the owner sets up team Support with a team vault and
invites bob into the team; bob joins from his own AILERON_HOME and his first `aileron launch` reaches Linear
with the team's key injected, with no admin step in between (the data plane, holding the owner's unlocked
session, let him into the vault). When bob leaves the team his next request gets no credential and the vault
key is rotated.

Bob has no key channel socket: his CLI unlocks his session through the server's relay. In the second variant
he is on another host, a network namespace whose only way to the service is a veth link to the address its
API and proxy listen on."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_client as docker_client
from tests.proxy_world import World, cli, proxy_world
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
TEAM_KEY = b"lin_api_support_team_key_0123456789"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def other_host() -> Iterator[tuple[str, list[str]]]:
    """A network namespace linked to this one by a veth pair: (this side's address, the command prefix that runs
    a program over there). Over there nothing but that link exists: not this host's loopback, nor its sockets'
    addresses."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a second host needs root and iproute2 (ip netns): run as root with iproute2 installed")
    name = f"ail{secrets.token_hex(3)}"
    subnet = f"10.213.{secrets.randbelow(250) + 1}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here ({exc.stderr.decode().strip()}): needs CAP_NET_ADMIN")
    try:
        _ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}p")
        _ip("link", "set", f"{name}p", "netns", name)
        _ip("addr", "add", f"{subnet}.1/30", "dev", f"{name}h")
        _ip("link", "set", f"{name}h", "up")
        _ip("-n", name, "addr", "add", f"{subnet}.2/30", "dev", f"{name}p")
        _ip("-n", name, "link", "set", f"{name}p", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield f"{subnet}.1", ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "link", "del", f"{name}h"], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture(scope="module", params=["same-machine", "other-host"])
def placed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, list[str]]]:
    """The world, and the command prefix bob's CLI runs under (none: this machine, with his own AILERON_HOME)."""
    with contextlib.ExitStack() as stack:
        host, prefix = stack.enter_context(other_host()) if request.param == "other-host" else ("127.0.0.1", [])
        world = stack.enter_context(proxy_world(tmp_path_factory.mktemp("team"), credentials=False, host=host))
        yield world, prefix


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
    placed: tuple[World, list[str]], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    world, over_there = placed
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

    def bob_runs(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        return subprocess.run(
            [*over_there, str(BIN / "aileron"), *args],
            env=env or bob,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    if over_there:  # over there, this machine's loopback (the upstream, the API's loopback port) is out of reach
        for port in (world.upstream.port, world.service.port):
            probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 2)"
            assert subprocess.run([*over_there, sys.executable, "-c", probe], capture_output=True).returncode != 0
    joining = bob_runs("join", "--server", world.service.url, "--json", env={**bob, "AILERON_INVITATION": invitation})
    assert joining.returncode == 0, joining.stderr.decode()
    assert json.loads(joining.stdout)["teams"] == ["support"]
    # Told when his token crosses a network in the clear (not for this machine's loopback).
    assert (b"is plain HTTP: your token crosses the network unencrypted" in joining.stderr) == bool(over_there)
    assert not (bob_home / "run" / "credentials.sock").exists()  # no key channel here: the server relays it

    # Nobody typed a command for bob: the worker had alice's live session wrap the key to him.
    members = wait_until(
        lambda: [m for m in vault_named(alice, "Support keys")["members"] if m["role"] == "reader"],
        "bob's confirmation in the team vault",
    )
    assert len(members) == 1 and vault_named(alice, "Support keys")["waiting"] == []

    mark = len(world.upstream.received)
    first = bob_runs("launch", "--sandbox", "none", "--", "linear", "viewer")
    assert first.returncode == 0, first.stderr.decode() + first.stdout.decode()
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/graphql")]
    assert got[0].headers["authorization"] == TEAM_KEY.decode()
    records = world.audit_wait(lambda rs: any(r["connector"] == "linear" and r.get("completed_at") for r in rs))
    assert any(r["user"] and r["connector"] == "linear" and r["decision"] == "allow" for r in records)

    if over_there:
        # From a docker sandbox too: the relay bob's CLI runs for it reaches the proxy on the other host.
        request.getfixturevalue("base_image")
        project = tmp_path / "project"
        project.mkdir()
        project.chmod(0o755)
        mark = len(world.upstream.received)
        boxed = bob_runs("launch", "--sandbox", "docker", "--dir", str(project), "--", "linear", "viewer", timeout=240)
        assert boxed.returncode == 0, boxed.stderr.decode() + boxed.stdout.decode()
        assert b"in a docker sandbox" in boxed.stderr
        got = world.received_since(mark)
        assert [(r.method, r.path) for r in got] == [("POST", "/graphql")]
        assert got[0].headers["authorization"] == TEAM_KEY.decode()

    # Bob leaves the team: revoked from its vault, which rotates through alice's session; no credential reaches
    # his next request.
    cli(alice, "team", "remove", "support", "bob@example.com")
    rotated = wait_until(
        lambda: (v := vault_named(alice, "Support keys"))["rotation_pending"] is None and v["key_version"] == 2 and v,
        "the rotation after bob left",
    )
    assert [m["role"] for m in rotated["members"]] == ["owner"]
    mark = len(world.upstream.received)
    after = bob_runs("launch", "--sandbox", "none", "--", "linear", "viewer")
    assert after.returncode != 0
    assert world.received_since(mark) == []
    assert b"linear" in after.stdout + after.stderr

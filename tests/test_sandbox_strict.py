"""`mediation: "strict"` end to end: `aileron launch` refuses it in one line where the launch or the organization
cannot satisfy it, and where they can, the agent's shell runs only allowed commands and every one is audited."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_available
from tests.docker_engine import docker_client as docker_client
from tests.proxy_world import World, proxy_world
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STRICT: dict[str, object] = {"customizations": {"aileron": {"mediation": "strict"}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("strict")) as w:
        yield w


def strict_project(tmp_path: Path, devcontainer: dict[str, object] = STRICT) -> Path:
    project = tmp_path / "project"
    (project / ".devcontainer").mkdir(parents=True)
    project.chmod(0o777)  # writable by the agent, whoever runs the test
    (project / ".devcontainer" / "devcontainer.json").write_text(json.dumps(devcontainer), encoding="utf-8")
    return project


def launch(world: World, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}"}
    return subprocess.run(
        [str(BIN / "aileron"), "launch", "--dir", str(project), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def set_organization(world: World, *, egress: dict[str, object], shell_policy: dict[str, object]) -> None:
    with world.api() as api:
        for path, body in (("egress", egress), ("shell-policy", shell_policy)):
            saved = api.put(f"/api/v1/orgs/{world.org_id}/{path}/", json=body)
            assert saved.status_code == 200, saved.text


def sessions_opened(world: World) -> int:
    with world.api() as api:
        listed = api.get(f"/api/v1/orgs/{world.org_id}/session-tokens/", params={"limit": "500"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    return len(body["results"] if isinstance(body, dict) else body)


def test_strict_is_refused_unsandboxed_in_one_line(world: World, tmp_path: Path) -> None:
    result = launch(world, strict_project(tmp_path), "--sandbox", "none", "--", "true")
    assert result.returncode == 2
    assert result.stderr == (
        'aileron: mediation is "strict" in this project\'s devcontainer.json: it needs a sandbox, and --sandbox '
        "none runs the agent unsandboxed (use --sandbox docker or netns)\n"
    )


@pytest.mark.parametrize("sandbox", ["none", "netns"])
def test_gvisor_is_refused_outside_the_docker_sandbox_in_one_line(world: World, tmp_path: Path, sandbox: str) -> None:
    """The same file's other runtime setting: a project that asks for gVisor never runs without it."""
    project = strict_project(tmp_path, {"customizations": {"aileron": {"runtime": "gvisor"}}})
    before = sessions_opened(world)
    result = launch(world, project, "--sandbox", sandbox, "--", "true")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f'aileron: {project}/.devcontainer/devcontainer.json asks for runtime "gvisor", which runs the docker '
        f"sandbox under runsc; the {sandbox} sandbox cannot (use --sandbox docker)\n"
    )
    assert sessions_opened(world) == before  # refused before any session was opened


def test_strict_is_refused_with_a_byo_image_in_one_line(world: World, tmp_path: Path) -> None:
    project = strict_project(
        tmp_path, {"customizations": {"aileron": {"mediation": "strict", "image": "aileron-test/any-byo:1"}}}
    )
    result = launch(world, project, "--sandbox", "docker", "--", "true")
    assert result.returncode == 2
    assert result.stderr == (
        'aileron: mediation is "strict" in this project\'s devcontainer.json: a bring-your-own image '
        "(customizations.aileron.image) is not allowed; use an image built FROM aileron/sandbox-base\n"
    )


@pytest.mark.skipif(docker_available() is not None, reason=str(docker_available()))
def test_strict_is_refused_before_a_session_where_the_organization_lacks_an_egress_allowlist(
    world: World, base_image: str, tmp_path: Path
) -> None:
    set_organization(
        world,
        egress={"mode": "open", "allow": []},
        shell_policy={"mode": "enforce", "deny": [], "allow": ["echo *"], "record_allowed": False},
    )
    before = sessions_opened(world)
    result = launch(world, strict_project(tmp_path), "--sandbox", "docker", "--", "bash", "-c", "echo RAN")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        'aileron: mediation is "strict" in this project\'s devcontainer.json, but the organization lacks an '
        'egress allow list (egress mode "allowlist"): an organization admin can set it (or use mediation '
        '"default")\n'
    )
    assert "RAN" not in result.stdout
    assert sessions_opened(world) == before


@pytest.mark.skipif(docker_available() is not None, reason=str(docker_available()))
def test_strict_runs_only_allowed_commands_and_audits_every_one(world: World, base_image: str, tmp_path: Path) -> None:
    set_organization(
        world,
        egress={"mode": "allowlist", "allow": ["api.github.com"]},
        # record_allowed off: strict records the allowed commands anyway
        shell_policy={"mode": "enforce", "deny": [], "allow": ["echo *", "touch *"], "record_allowed": False},
    )
    project = strict_project(tmp_path)
    script = "echo STRICT-RAN; touch /workspace/made-strictly; ls /workspace; echo NEVER"
    result = launch(world, project, "--sandbox", "docker", "--", "bash", "-c", script)
    output = result.stdout.replace("\r\n", "\n")

    assert result.returncode == 126, result.stderr + output
    assert "STRICT-RAN" in output and "NEVER" not in output
    assert "blocked by your organization's shell policy" in output + result.stderr
    assert (project / "made-strictly").exists()
    session_id = result.stderr.split("aileron: session ", 1)[1].split()[0]
    records = world.audit_wait(
        lambda rs: (
            {r["args"]["command"] for r in rs if r["session_id"] == session_id}
            >= {"echo STRICT-RAN", "touch /workspace/made-strictly", "ls /workspace"}
        ),
        action="shell.command",
    )
    decisions = {r["args"]["command"]: r["decision"] for r in records if r["session_id"] == session_id}
    assert decisions == {
        "echo STRICT-RAN": "allow",
        "touch /workspace/made-strictly": "allow",
        "ls /workspace": "deny",
    }

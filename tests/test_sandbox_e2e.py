"""A scripted agent in a real sandbox (docker, netns) reaches GitHub only through the real proxy, holding nothing.

The agent runs `github create-issue` and `gh api` with nothing but the runtime contract: the fake upstream gets
the credential the proxy injected, while the sandbox's environment, files and processes hold none. The sandbox
is driven as `aileron launch` drives it: a Running whose output is read until the agent's terminal closes.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from connectors.registry import installed, manifest
from runtime.sandbox import backends, contract
from runtime.sandbox.relay import HostRelay
from runtime.sandbox.spec import Backend, Running, SandboxSpec
from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_client as docker_client
from tests.proxy_world import World, proxy_world

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PROXY_PORT_INSIDE = 3128


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("proxy")) as w:
        yield w


@pytest.fixture(scope="module")
def proxy_socket(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The host end of the sandbox's way out: a private folder's unix socket relayed to the data plane's proxy."""
    folder = tmp_path_factory.mktemp("relay")
    folder.chmod(0o700)
    relay = HostRelay(folder / "proxy.sock", "127.0.0.1", world.service.proxy_port)
    relay.start()
    yield relay.socket_path
    relay.stop()


def backend_or_skip(name: str) -> Backend:
    backend = backends.get(name)
    reason = backend.available()
    if reason is not None:
        pytest.skip(f"the {name} sandbox is not available here: {reason}")
    return backend


@dataclass
class Ran:
    code: int | None
    output: str
    started_in: float  # seconds from start() called to start() returned
    notes: list[str]  # what the backend said about the run (e.g. the image has no agent user)

    def lines(self, prefix: str) -> list[str]:
        return [line[len(prefix) :].strip() for line in self.output.splitlines() if line.startswith(prefix)]


def contract_for(world: World, sandbox: str) -> tuple[dict[str, str], dict[str, bytes]]:
    from aileron_cli.main import HINT

    found = installed(Path(world.service.env["AILERON_HOME"]))
    return contract.contract(
        token=world.token,
        session_id=world.session_id,
        session_ca_pem=world.ca_file.read_bytes(),
        manifest_json=json.dumps(manifest(found)).encode(),
        hint=HINT.format(systems=", ".join(c.name for c in found), shims="`github`"),
        connectors=found,
        proxy_port_inside=PROXY_PORT_INSIDE,
        sandbox=sandbox,
    )


def run_agent(
    world: World,
    backend: Backend,
    image: str,
    script: str,
    *,
    proxy_socket: Path | None,
    workdir: Path | None = None,
    timeout: float = 240,
) -> Ran:
    """Start the sandbox, type nothing, read its terminal until it closes, then take the exit code."""
    env, files = contract_for(world, backend.name)
    spec = SandboxSpec(
        image=image,
        argv=["bash", "-c", script],
        env={**env, "TERM": "dumb"},
        files=files,
        workdir=workdir,
        proxy_socket=proxy_socket,
        proxy_port_inside=PROXY_PORT_INSIDE,
        rows=50,
        columns=200,
        name="e2e",
    )
    began = time.monotonic()
    running = backend.start(spec)
    started_in = time.monotonic() - began
    notes = list(getattr(running, "notes", []))
    output = bytearray()
    try:
        deadline = began + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([running], [], [], 1.0)
            if ready:
                chunk = running.read()
                if not chunk:
                    break
                output += chunk
        code = running.wait(30)
    finally:
        running.stop()
    text = output.decode(errors="replace").replace("\r\n", "\n")
    world.outputs[f"{backend.name} agent"] = bytes(output)
    return Ran(code, text, started_in, notes)


# The scripted agent. It never names a credential: the pattern it searches for is split, so that its own
# command line and environment cannot match it.
AGENT_SCRIPT = r"""
set -u
echo "HINT $(head -c 40 /etc/aileron/hint.txt)"
echo "USER $(id -un 2>/dev/null || id -u)"
github create-issue --repo octo/hello --title 'From the sandbox' --body 'made inside'
echo "STEP create-issue $?"
if command -v gh >/dev/null; then
  GH_PROMPT_DISABLED=1 gh api /repos/octo/hello
  echo "STEP gh $?"
else
  echo "STEP gh missing"
fi
pattern="cana""ry-"
grep -raoE --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev \
  -e "$pattern[a-z]+-[0-9a-f]{24}" -e "Aileron connects" / 2>/dev/null | sed 's/^/FOUND /'
echo "STEP grep done"
sleep 60 & sleeper=$!  # a second process of the agent's, whose environment is read like the shell's
for p in /proc/[0-9]*; do
  echo "PROC ${p#/proc/} $(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)"
  tr '\0' '\n' < "$p/environ" 2>/dev/null | sed 's/^/ENV /'
done
kill "$sleeper"
echo "STEP end"
"""


def assert_the_agent_held_no_credential(world: World, ran: Ran) -> None:
    for name, canary in world.canaries.items():
        assert canary.decode() not in ran.output, f"the {name} credential is visible inside the sandbox"
    found = ran.lines("FOUND ")
    assert "/etc/aileron/hint.txt:Aileron connects" in found  # the search reached the contract's files
    assert [line for line in found if "ry-" in line] == [], "a file inside the sandbox holds a credential"
    environment = ran.lines("ENV ")
    # The dump worked: it shows the contract, whose token and proxy are the agent's by design.
    assert f"AILERON_TOKEN={world.token}" in environment
    assert any(line.startswith("HTTPS_PROXY=http://aileron:") for line in environment)
    assert any(line.endswith("sleep 60") for line in ran.lines("PROC "))


def assert_github_got_the_injected_credential(world: World, mark: int, ran: Ran, *, gh: bool) -> None:
    assert ran.code == 0, ran.output[-3000:]
    assert ran.lines("STEP create-issue ") == ["0"], ran.output[-3000:]
    bearer = f"Bearer {world.canaries['github'].decode()}"
    received = world.received_since(mark)
    [issue] = [r for r in received if r.method == "POST" and r.path == "/repos/octo/hello/issues"]
    assert issue.headers["authorization"] == bearer
    assert json.loads(issue.body) == {"title": "From the sandbox", "body": "made inside"}
    assert issue.headers["user-agent"] == "aileron-shim/github"
    if gh:
        assert ran.lines("STEP gh ") == ["0"], ran.output[-3000:]
        [repo] = [r for r in received if r.method == "GET" and r.path == "/repos/octo/hello"]
        assert repo.headers["authorization"] == bearer
        assert repo.headers["user-agent"].startswith("GitHub CLI")
    records = world.audit_wait(
        lambda rs: any(r["session_id"] == world.session_id and r["upstream_status"] == 201 for r in rs),
        action="github.create-issue",
    )
    assert records


def writable_workdir(tmp_path: Path) -> Path:
    """The project folder; the container's agent user (not this test's user) must be able to write it."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "README").write_text("the agent's project\n")
    os.chmod(workdir, 0o777)  # noqa: S103 - a test folder; the agent's uid is not this test's
    return workdir


@pytest.fixture(params=["docker", "netns"])
def sandbox(request: pytest.FixtureRequest) -> tuple[Backend, str]:
    """A backend that works here, and its image: the base image for docker, the host's own root for netns."""
    backend = backend_or_skip(request.param)
    return backend, request.getfixturevalue("base_image") if request.param == "docker" else ""


def test_a_scripted_agent_reaches_github_only_through_the_proxy_and_holds_no_credential(
    world: World, proxy_socket: Path, sandbox: tuple[Backend, str], tmp_path: Path
) -> None:
    backend, image = sandbox
    if backend.name == "netns" and shutil.which("gh") is None:
        pytest.skip("the netns sandbox shows this host's tools, and gh is not installed (Debian package gh)")
    mark = len(world.upstream.received)
    ran = run_agent(world, backend, image, AGENT_SCRIPT, proxy_socket=proxy_socket, workdir=writable_workdir(tmp_path))
    if ran.lines("STEP gh ") == ["missing"]:  # the base image is ours: it must have gh
        pytest.fail(f"the {backend.name} sandbox ({image or 'the host'}) has no gh CLI: " + ran.output[-500:])
    assert_github_got_the_injected_credential(world, mark, ran, gh=True)
    assert_the_agent_held_no_credential(world, ran)
    assert ran.lines("HINT ") == ["Aileron connects you to anthropic, gemin"]
    if backend.name == "docker":
        assert ran.lines("USER ") == ["agent"]


def test_the_agent_writes_its_project_and_nothing_else(
    world: World, proxy_socket: Path, sandbox: tuple[Backend, str], tmp_path: Path
) -> None:
    backend, image = sandbox
    workdir = writable_workdir(tmp_path)
    script = r"""
    cd /workspace && cat README && echo made > made-inside && echo "STEP project $?"
    for target in /etc/passwd /usr/bin/made-inside /made-inside /etc/aileron/actions.json; do
      (echo x > "$target") 2>/dev/null && echo "WROTE $target"
    done
    echo "STEP end"
    """
    ran = run_agent(world, backend, image, script, proxy_socket=proxy_socket, workdir=workdir)
    assert ran.code == 0, ran.output
    assert "the agent's project" in ran.output and ran.lines("STEP project ") == ["0"]
    assert (workdir / "made-inside").read_text() == "made\n"
    assert ran.lines("WROTE ") == [], "the agent wrote outside its project"


@pytest.fixture(scope="module")
def byo_image(docker_client: DockerClient, base_image: str) -> str:
    """A bring-your-own image with neither python3 nor an `agent` user (built FROM the base, offline)."""
    tag = f"aileron-test/byo-without-python:{base_image.rsplit(':', 1)[-1]}"
    dockerfile = (
        f"FROM {base_image}\nUSER root\n"
        "RUN rm -f /usr/bin/python3* /usr/local/bin/aileron /usr/local/bin/github && userdel agent\n"
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="none", rm=True)
    return tag


def test_a_byo_image_without_python_or_an_agent_user_gets_the_same_way_out(
    world: World, proxy_socket: Path, byo_image: str
) -> None:
    backend = backend_or_skip("docker")
    mark = len(world.upstream.received)
    script = r"""
    command -v python3 || echo "NO python3"
    echo "UID $(id -u)"
    curl -sS -o /dev/null -w 'STATUS %{http_code}\n' https://api.github.com/repos/octo/byo
    (exec 3<>/dev/tcp/1.1.1.1/443) 2>/dev/null && echo "DIRECT open" || echo "DIRECT closed"
    """
    ran = run_agent(world, backend, byo_image, script, proxy_socket=proxy_socket)
    assert ran.code == 0, ran.output
    assert "NO python3" in ran.output
    assert ran.notes == [f"the image {byo_image} has no user `agent`: the agent runs as root"]
    assert ran.lines("UID ") == ["0"]  # root in the container, with no capability and no way out
    assert ran.lines("STATUS ") == ["200"], ran.output
    assert ran.lines("DIRECT ") == ["closed"]
    [got] = [r for r in world.received_since(mark) if r.path == "/repos/octo/byo"]
    assert got.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"


def read_until(running: Running, marker: bytes, timeout: float = 30) -> bytes:
    seen = bytearray()
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        if select.select([running], [], [], 0.5)[0]:
            chunk = running.read()
            if not chunk:
                break
            seen += chunk
    return bytes(seen)


def test_the_terminal_carries_keystrokes_size_and_exit_code_and_stop_leaves_nothing(
    world: World, proxy_socket: Path, sandbox: tuple[Backend, str]
) -> None:
    backend, image = sandbox
    script = 'echo "SIZE $(stty size)"; read -r line; echo "GOT $line"; read -r _; echo "SIZE $(stty size)"; exit 7'
    env, files = contract_for(world, backend.name)
    spec = SandboxSpec(image=image, argv=["bash", "-c", script], env=env, files=files, proxy_socket=proxy_socket)
    running = backend.start(spec)
    try:
        assert b"SIZE 24 80" in read_until(running, b"SIZE")
        running.write(b"typed by a person\r")
        assert b"GOT typed by a person" in read_until(running, b"GOT")
        assert running.wait(0.2) is None  # still running
        running.resize(33, 101)
        running.write(b"\r")
        assert b"SIZE 33 101" in read_until(running, b"SIZE 33")
        assert running.wait(30) == 7
    finally:
        running.stop()
        running.stop()  # idempotent
    if backend.name == "docker":
        import docker

        left = docker.from_env().containers.list(all=True, filters={"label": "aileron.sandbox"})
        assert left == [], "stop() left containers behind"
    folder = getattr(running, "folder", None)
    assert folder is not None and not Path(folder).exists(), "stop() left the session folder behind"


@pytest.fixture(scope="module")
def base_rootfs(docker_client: DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base image's files as a folder: what the netns backend takes as an image."""
    folder = tmp_path_factory.mktemp("rootfs")
    container = docker_client.containers.create(base_image, entrypoint=["/nonexistent"], network_mode="none")
    untar = subprocess.Popen(["tar", "-C", str(folder), "-x"], stdin=subprocess.PIPE)
    try:
        assert untar.stdin is not None
        for chunk in cast(Iterator[bytes], container.export()):  # bytes, whatever the stubs say
            untar.stdin.write(chunk)
        untar.stdin.close()
        assert untar.wait(120) == 0
    finally:
        container.remove(force=True)
    return folder


def test_the_netns_sandbox_runs_an_image_given_as_a_root_filesystem(
    world: World, proxy_socket: Path, base_rootfs: Path, tmp_path: Path
) -> None:
    backend = backend_or_skip("netns")
    mark = len(world.upstream.received)
    ran = run_agent(world, backend, str(base_rootfs), AGENT_SCRIPT, proxy_socket=proxy_socket, workdir=tmp_path)
    assert_github_got_the_injected_credential(world, mark, ran, gh=True)
    assert_the_agent_held_no_credential(world, ran)
    assert "Python 3.13" in run_agent(world, backend, str(base_rootfs), "python3 --version", proxy_socket=None).output

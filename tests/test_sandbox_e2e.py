"""A scripted agent in a real sandbox (docker, netns) reaches GitHub only through the real proxy, holding nothing.

The agent runs `github create-issue` and `gh api` with nothing but the runtime contract: the fake upstream gets
the credential the proxy injected, while the sandbox's environment, files and processes hold none. The sandbox
is driven as `aileron launch` drives it: a Running whose output is read until the agent's terminal closes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import select
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from connectors.registry import installed, manifest
from runtime.sandbox import backends, contract
from runtime.sandbox.backends import SandboxError
from runtime.sandbox.relay import HostRelay
from runtime.sandbox.spec import Backend, Running, SandboxSpec
from runtime.sandbox.toolbox import DEFAULT_PATH, TOOLBOX
from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_client as docker_client
from tests.proxy_world import World, proxy_world
from tests.service import BIN

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
    from aileron_cli.connector_cmd import HINT

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
    argv0: str = "bash",
) -> Ran:
    """Start the sandbox, type nothing, read its terminal until it closes, then take the exit code."""
    env, files = contract_for(world, backend.name)
    spec = SandboxSpec(
        image=image,
        argv=[argv0, "-c", script],
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
    # Without the line of the toolbox being made: once per base image, by whichever test starts first after a build.
    notes = [n for n in getattr(running, "notes", []) if not n.startswith("made the aileron toolbox")]
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


def assert_github_got_the_injected_credential(
    world: World, mark: int, ran: Ran, *, gh: bool, session_id: str | None = None
) -> None:
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
        lambda rs: any(r["session_id"] == (session_id or world.session_id) and r["upstream_status"] == 201 for r in rs),
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


class UnderGvisor:
    """The docker backend with every sandbox under gVisor, as `customizations.aileron.runtime: "gvisor"` asks."""

    name = "docker"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def available(self) -> str | None:
        return self.inner.available()

    def start(self, spec: SandboxSpec) -> Any:
        return self.inner.start(dataclasses.replace(spec, runtime="gvisor"))


def gvisor_or_skip() -> Backend:
    import docker

    from runtime.sandbox.docker_backend import gvisor_unavailable

    backend = backend_or_skip("docker")
    client = docker.from_env()
    try:
        reason = gvisor_unavailable(client)
    finally:
        client.close()
    if reason is not None:
        pytest.skip(f"gVisor is not available here: {reason}")
    return UnderGvisor(backend)


@pytest.fixture(params=["docker", "netns", "gvisor"])
def sandbox(request: pytest.FixtureRequest) -> tuple[Backend, str]:
    """A backend that works here, and its image: the base image for docker (under runc, or gVisor's runsc), the
    host's own root for netns."""
    backend = gvisor_or_skip() if request.param == "gvisor" else backend_or_skip(request.param)
    return backend, request.getfixturevalue("base_image") if request.param != "netns" else ""


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


def test_a_gvisor_sandbox_runs_on_gvisors_kernel_not_the_hosts(
    world: World, proxy_socket: Path, base_image: str
) -> None:
    """`runtime: "gvisor"`: the agent's system calls meet gVisor's kernel (its own boot log and release), and
    the proxy is still its one way out."""
    backend = gvisor_or_skip()
    script = (
        'dmesg | head -1; echo "RELEASE $(uname -r)"\n'
        "curl -sS -o /dev/null -w 'STATUS %{http_code}\\n' https://api.github.com/repos/octo/hello\n"
    )
    ran = run_agent(world, backend, base_image, script, proxy_socket=proxy_socket)
    assert ran.code == 0, ran.output[-2000:]
    assert "Starting gVisor" in ran.output, ran.output[-2000:]
    assert ran.lines("RELEASE ") != [os.uname().release]
    assert ran.lines("STATUS ") == ["200"], ran.output[-2000:]


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
    """A bring-your-own image with neither python3, nor aileron's commands and venv, nor an `agent` user (built
    FROM the base, offline)."""
    tag = f"aileron-test/byo-without-python:{base_image.rsplit(':', 1)[-1]}"
    dockerfile = (
        f"FROM {base_image}\nUSER root\n"
        "RUN rm -rf /usr/bin/python3* /usr/lib/python3* /opt/aileron /usr/local/bin/* && userdel agent\n"
    )
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="none", rm=True)
    return tag


def test_a_byo_image_without_python_or_an_agent_user_gets_the_same_way_out_and_the_shims(
    world: World, proxy_socket: Path, byo_image: str
) -> None:
    backend = backend_or_skip("docker")
    mark = len(world.upstream.received)
    script = r"""
    command -v python3 || echo "NO python3"
    ls /opt/aileron >/dev/null 2>&1 || echo "NO venv"
    echo "UID $(id -u)"
    echo "GITHUB $(command -v github)"
    curl -sS -o /dev/null -w 'STATUS %{http_code}\n' https://api.github.com/repos/octo/byo
    (exec 3<>/dev/tcp/1.1.1.1/443) 2>/dev/null && echo "DIRECT open" || echo "DIRECT closed"
    github create-issue --repo octo/hello --title 'From the sandbox' --body 'made inside'
    echo "STEP create-issue $?"
    echo "LOGIN $(bash -lc 'command -v aileron')"
    """
    ran = run_agent(world, backend, byo_image, script, proxy_socket=proxy_socket)
    assert ran.code == 0, ran.output
    assert "NO python3" in ran.output and "NO venv" in ran.output
    assert ran.notes == [f"the image {byo_image} has no user `agent`: the agent runs as root"]
    assert ran.lines("UID ") == ["0"]  # root in the container, with no capability and no way out
    assert ran.lines("GITHUB ") == [f"{TOOLBOX}/bin/github"]
    assert ran.lines("LOGIN ") == [f"{TOOLBOX}/bin/aileron"]  # a login shell's PATH is /etc/profile's
    assert ran.lines("STATUS ") == ["200"], ran.output
    assert ran.lines("DIRECT ") == ["closed"]
    [got] = [r for r in world.received_since(mark) if r.path == "/repos/octo/byo"]
    assert got.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    assert_github_got_the_injected_credential(world, mark, ran, gh=False)


def test_aileron_launch_gives_a_byo_image_the_contract_and_the_shims(
    world: World, byo_image: str, tmp_path: Path
) -> None:
    """The whole startup sequence with a devcontainer naming a BYO image: what the user runs."""
    backend_or_skip("docker")
    project = tmp_path / "project"
    (project / ".devcontainer").mkdir(parents=True)
    project.chmod(0o755)
    (project / ".devcontainer" / "devcontainer.json").write_text(
        json.dumps({"customizations": {"aileron": {"image": byo_image}}}), encoding="utf-8"
    )
    script = r"""
    echo "GITHUB $(command -v github)"
    head -c 1 /etc/aileron/actions.json && echo " MANIFEST"
    github create-issue --repo octo/hello --title 'From the sandbox' --body 'made inside'
    echo "STEP create-issue $?"
    """
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}"}
    mark = len(world.upstream.received)
    result = subprocess.run(
        [str(BIN / "aileron"), "launch", "--sandbox", "docker", "--dir", str(project), "--", "bash", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
    )
    ran = Ran(result.returncode, result.stdout.decode(errors="replace").replace("\r\n", "\n"), 0.0, [])
    assert result.returncode == 0, result.stderr.decode() + ran.output
    assert f"in a docker sandbox ({byo_image})" in result.stderr.decode()
    assert ran.lines("GITHUB ") == [f"{TOOLBOX}/bin/github"]
    assert "{ MANIFEST" in ran.output
    [session_id] = re.findall(r"aileron: session (\S+) in a docker sandbox", result.stderr.decode())
    assert_github_got_the_injected_credential(world, mark, ran, gh=False, session_id=session_id)


def test_without_a_toolbox_the_sandbox_still_runs_and_says_why(
    world: World, proxy_socket: Path, base_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The toolbox is a convenience, not a boundary: a cache that cannot be written costs the BYO shims only."""
    backend = backend_or_skip("docker")
    monkeypatch.setenv("AILERON_CACHE_DIR", "/dev/null/cache")
    script = 'echo "CLI $(command -v aileron)"; ls /opt/aileron-toolbox >/dev/null 2>&1 || echo "NO toolbox"'
    ran = run_agent(world, backend, base_image, script, proxy_socket=proxy_socket)
    assert ran.code == 0, ran.output
    assert ran.lines("CLI ") == ["/usr/local/bin/aileron"] and "NO toolbox" in ran.output
    assert ran.notes == [
        "cannot make the aileron toolbox in /dev/null/cache/sandbox/toolbox: Not a directory; the aileron CLI and "
        "the shims are only what the image has"
    ]


STATIC_BUSYBOX = Path("/bin/busybox")


def _is_static(binary: Path) -> bool:
    listed = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)  # noqa: S607
    return "not a dynamic executable" in listed.stdout + listed.stderr


@pytest.fixture(scope="module", params=["dash-and-glibc", "static-busybox"])
def shell_only_image(request: pytest.FixtureRequest, docker_client: DockerClient) -> Iterator[str]:
    """An image of nothing but a shell. "dash-and-glibc": this host's /bin/sh and the C library it links, a glibc
    of the host's Debian (older than the base image's trixie on a bookworm host). "static-busybox": Debian's
    busybox-static as /bin/sh and nothing else, so no C library and no dynamic loader at all (as a musl image
    has none of glibc's)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        if request.param == "static-busybox":
            if not (STATIC_BUSYBOX.is_file() and _is_static(STATIC_BUSYBOX)):
                pytest.skip("no static busybox here (apt-get install busybox-static)")
            archive.add(STATIC_BUSYBOX, arcname="bin/busybox")
            link = tarfile.TarInfo("bin/sh")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(link)
        else:
            shell = Path("/bin/sh").resolve()
            listed = subprocess.run(["ldd", str(shell)], capture_output=True, text=True, check=True).stdout  # noqa: S607
            archive.add(shell, arcname="bin/sh")
            for library in [word for line in listed.splitlines() for word in line.split() if word.startswith("/")]:
                archive.add(Path(library).resolve(), arcname=library.lstrip("/"))
        for name, data in {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "tmp/.keep": b""}.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    # Its own tag: test runs may share the engine.
    repository, run = "aileron-test/shell-only", f"{request.param}-{os.getpid()}"
    docker_client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=run)
    yield f"{repository}:{run}"
    docker_client.images.remove(f"{repository}:{run}", force=True)


def test_an_image_of_only_a_shell_and_another_or_no_c_library_runs_the_cli_and_the_shims(
    world: World, proxy_socket: Path, shell_only_image: str, base_image: str
) -> None:
    backend = backend_or_skip("docker")
    mark = len(world.upstream.received)
    # POSIX sh and its builtins only: the image has no other program.
    script = r"""
    echo "PATH $PATH"
    aileron --version
    echo "STEP version $?"
    github create-issue --repo octo/hello --title 'From the sandbox' --body 'made inside'
    echo "STEP create-issue $?"
    """
    ran = run_agent(world, backend, shell_only_image, script, proxy_socket=proxy_socket, argv0="/bin/sh")
    assert ran.code == 0, ran.output
    with pytest.raises(SandboxError) as caught:  # as with the mediated shell, started by /usr/bin/env
        run_agent(world, backend, shell_only_image, script, proxy_socket=proxy_socket, argv0="/usr/bin/env")
    assert str(caught.value) == f"the image {shell_only_image} has no /usr/bin/env, which starts the agent"
    assert ran.lines("PATH ") == [f"{DEFAULT_PATH}:/etc/aileron/bin:{TOOLBOX}/bin"]
    assert ran.lines("STEP version ") == ["0"] and "aileron, version" in ran.output, ran.output
    assert_github_got_the_injected_credential(world, mark, ran, gh=False)


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


ACME_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "Acme things", "version": "1"},
    "paths": {
        "/v1/things/{thing}": {
            "get": {
                "summary": "Get a thing",
                "parameters": [{"name": "thing", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the thing"}},
            }
        }
    },
}


@pytest.fixture(scope="module")
def imported_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A world whose user imported a connector of their own (`aileron connector import`), not built in."""
    folder = tmp_path_factory.mktemp("imported")
    spec = folder / "acme.json"
    spec.write_text(json.dumps(ACME_SPEC))
    with proxy_world(folder, imported={"acme": (spec, "api.acme.test")}) as w:
        yield w


def test_a_connector_the_user_imported_has_its_shim_in_the_sandbox(
    imported_world: World, sandbox: tuple[Backend, str], tmp_path: Path
) -> None:
    """The sandbox gets the package and a command of the connector's name, as the built-in shims have."""
    backend, image = sandbox
    world = imported_world
    folder = tmp_path_factory_folder(tmp_path)
    relay = HostRelay(folder / "proxy.sock", "127.0.0.1", world.service.proxy_port)
    relay.start()
    try:
        mark = len(world.upstream.received)
        script = r"""
        echo "CMD $(command -v acme)"
        acme --help
        acme get-v1-things-thing --thing t-42
        echo "STEP acme $?"
        acme get-v1-things-thing --nope 1
        echo "STEP bad $?"
        """
        ran = run_agent(world, backend, image, script, proxy_socket=relay.socket_path)
    finally:
        relay.stop()
    assert ran.code == 0, ran.output
    assert ran.lines("CMD ") == ["/etc/aileron/bin/acme"], ran.output
    assert "usage: acme ACTION" in ran.output and "get-v1-things-thing" in ran.output, ran.output
    assert ran.lines("STEP acme ") == ["0"], ran.output
    assert ran.lines("STEP bad ") == ["2"], ran.output
    [got] = [r for r in world.received_since(mark) if r.path == "/v1/things/t-42"]
    assert got.headers["authorization"] == f"Bearer {world.canaries['acme'].decode()}"
    assert got.headers["user-agent"] == "aileron-shim/acme"


def test_without_a_sandbox_an_imported_connector_has_its_command_too(imported_world: World, tmp_path: Path) -> None:
    world = imported_world
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}"}
    env["PATH"] = "/usr/bin:/bin"  # not the venv: the command must find this aileron by itself
    mark = len(world.upstream.received)
    script = 'echo "CMD $(command -v acme)"; acme get-v1-things-thing --thing t-none; echo "STEP acme $?"'
    result = subprocess.run(
        [str(BIN / "aileron"), "launch", "--sandbox", "none", "--", "sh", "-c", script],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode() + out
    ran = Ran(result.returncode, out, 0.0, [])
    [command] = ran.lines("CMD ")
    assert command.endswith("/bin/acme") and not Path(command).exists()  # in the session's folder, gone after
    assert ran.lines("STEP acme ") == ["0"], out + result.stderr.decode()
    [got] = [r for r in world.received_since(mark) if r.path == "/v1/things/t-none"]
    assert got.headers["authorization"] == f"Bearer {world.canaries['acme'].decode()}"


def tmp_path_factory_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "relay"
    folder.mkdir(mode=0o700)
    return folder


def test_the_agent_writes_a_project_of_another_owner_as_that_owner(
    world: World, proxy_socket: Path, base_image: str, docker_client: DockerClient, tmp_path: Path
) -> None:
    """A project folder owned by neither uid 1000 (the image's agent) nor root: the agent becomes its owner."""
    from runtime.sandbox.user_image import LABEL_KIND

    backend = backend_or_skip("docker")
    if os.getuid() not in (0, 1000):
        uid, gid = os.getuid(), os.getgid()  # this user's own folder already has another owner than 1000
    elif os.getuid() == 0:
        uid, gid = 1234, 1235
    else:
        pytest.skip("the test's user is uid 1000, the agent's: only root could give the folder another owner")
    for derived in docker_client.images.list(filters={"label": f"{LABEL_KIND}=sandbox-user"}):
        docker_client.images.remove(str(derived.id), force=True)  # so this run makes the image and says so
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    (project / "README").write_text("the agent's project\n")
    for path in (project, project / "README"):
        os.chown(path, uid, gid)
    script = r"""
    echo "ID $(id -un) $(id -u) $(id -g)"
    echo made > /workspace/made-inside && echo "WROTE $?"
    echo more >> /workspace/README && echo "APPENDED $?"
    touch "$HOME/.agent-home" && echo "HOME writable"
    """
    first = run_agent(world, backend, base_image, script, proxy_socket=proxy_socket, workdir=project)
    assert first.code == 0, first.output
    assert first.lines("ID ") == [f"agent {uid} {gid}"]
    assert first.lines("WROTE ") == ["0"] and first.lines("APPENDED ") == ["0"] and "HOME writable" in first.output
    made = (project / "made-inside").stat()
    assert (made.st_uid, made.st_gid) == (uid, gid)
    assert (project / "README").read_text() == "the agent's project\nmore\n"
    [note] = first.notes
    assert note.startswith("made aileron/sandbox-user:") and note.endswith(
        f"-{uid}-{gid}: the agent runs as uid {uid}, the project folder's owner"
    )
    again = run_agent(world, backend, base_image, script, proxy_socket=proxy_socket, workdir=project)
    assert again.lines("ID ") == [f"agent {uid} {gid}"] and again.notes == []  # made once, reused


def _mounts_of(project: Path) -> list[str]:
    """This process's mounts of the project or at a workspace mount point: not the whole table, which other
    containers starting on the machine change under the test."""
    workspace = str(Path(tempfile.gettempdir()) / "aileron-workspace-")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        root, mount_point = line.split()[3:5]
        if mount_point.startswith(workspace) or root.startswith(str(project)) or mount_point.startswith(str(project)):
            found.append(line)
    return found


def test_a_project_owned_by_root_is_written_as_root_by_an_agent_that_is_not_root(
    world: World, proxy_socket: Path, base_image: str, tmp_path: Path
) -> None:
    """Launched as root (build machines, CI): the project is root's and not writable by others. The agent stays
    uid 1000 without capabilities, writes the project through an idmapped mount, and its files are root's."""
    backend = backend_or_skip("docker")
    if os.getuid() != 0:
        pytest.skip("only root can make a folder owned by root here")
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    (project / "README").write_text("root's project\n")
    (project / "README").chmod(0o644)
    mounts_before = _mounts_of(project)
    script = r"""
    echo "ID $(id -u) $(id -g) $(grep CapEff /proc/self/status | tr -d '\t')"
    echo "SEES $(stat -c %u:%g /workspace) $(stat -c %u:%g /workspace/README)"
    echo made > /workspace/made-inside && echo "WROTE $?"
    mkdir /workspace/sub && touch /workspace/sub/deeper && echo "MKDIR $?"
    echo more >> /workspace/README && echo "APPENDED $?"
    (echo x > /etc/made-inside) 2>/dev/null; echo "SYSTEM $?"
    """
    ran = run_agent(world, backend, base_image, script, proxy_socket=proxy_socket, workdir=project)
    assert ran.code == 0, ran.output
    assert ran.lines("ID ") == ["1000 1000 CapEff:0000000000000000"], "the agent was made root or kept capabilities"
    assert ran.lines("SEES ") == ["1000:1000 1000:1000"]
    assert ran.lines("WROTE ") == ["0"] and ran.lines("MKDIR ") == ["0"] and ran.lines("APPENDED ") == ["0"]
    assert ran.lines("SYSTEM ") == ["1"], "the agent could write the image's system files"
    assert ran.notes == []
    for path in ("made-inside", "sub", "sub/deeper", "README"):
        made = (project / path).stat()
        assert (made.st_uid, made.st_gid) == (0, 0), f"{path} belongs to {made.st_uid}:{made.st_gid} on the host"
    assert (project / "made-inside").read_text() == "made\n"
    assert (project / "README").read_text() == "root's project\nmore\n"
    assert _mounts_of(project) == mounts_before, "the idmapped mount was left behind"
    assert not list(Path(tempfile.gettempdir()).glob("aileron-workspace-*")), "its mount point was left behind"


def test_without_root_a_root_owned_project_is_read_only_and_the_launch_says_why(
    world: World, proxy_socket: Path, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no idmapped mount can be made (here: as if not root), the agent is still not made root."""
    from runtime.sandbox import idmap

    backend = backend_or_skip("docker")
    if os.getuid() != 0:
        pytest.skip("only root can make a folder owned by root here")
    monkeypatch.setattr(idmap, "unavailable", lambda: "making an idmapped mount needs root")
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    script = 'echo "ID $(id -u)"; (echo x > /workspace/made-inside) 2>/dev/null; echo "WROTE $?"'
    ran = run_agent(world, backend, base_image, script, proxy_socket=proxy_socket, workdir=project)
    assert ran.code == 0, ran.output
    assert ran.lines("ID ") == ["1000"] and ran.lines("WROTE ") == ["1"]
    assert ran.notes == [
        f"the project folder {project.resolve()} belongs to root: the agent (uid 1000) can read it but not write it "
        "(launch as the folder's owner, or chown it)"
    ]

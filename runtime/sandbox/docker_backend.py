"""The `docker` sandbox: the agent in a container with no network but loopback, its proxy reached over a socket.

Two containers per session, as in a pod. The relay container (the base image, which has python3) owns the
network namespace: no interface but loopback, the host's proxy socket mounted, and `relay.py` listening on
127.0.0.1:<proxy_port_inside>. The agent container joins that namespace and nothing else: any image works,
BYO images without python or a shell included, the agent cannot see or signal the relay (another pid
namespace), and the relay holds no secret. The runtime contract's files are bind-mounted read-only, one by one;
the session CA is added to the image's own trust store (read from the image before the start). Every image
gets the aileron toolbox (toolbox.py) read-only at /opt/aileron-toolbox, last on its PATH: the `aileron` CLI and
the connector shims with their own Python, for BYO images that have none. When the project folder's owner is
not the image's `agent` uid, the agent runs in a derived image where it is (user_image.py); when it is root's
(launched as root), the agent gets an idmapped mount of it instead (idmap.py): it writes the project as root
without being root.

Under gVisor (`SandboxSpec.runtime == "gvisor"`, the devcontainer's `customizations.aileron.runtime`) the agent
container runs under runsc, an application kernel of its own between the agent and the host's. A gVisor sandbox
has its own loopback, which another container's relay cannot listen on, so there is one container: the relay
(the image's python3) starts first in it, listening on that loopback, and then becomes the agent, as in the
netns sandbox; the proxy socket's folder is mounted and reached through runsc's `--host-uds`. The engine needs
runsc registered with that flag and with no network of its own (Debian's `runsc` package, then in
/etc/docker/daemon.json: `{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--host-uds=all",
"--network=none"]}}}` and a reload of dockerd); launch refuses gVisor in one line otherwise. runsc does not
honour idmapped mounts: a root-owned project is read-only to the agent there (the launch says so).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runtime.sandbox import idmap, relay
from runtime.sandbox.backends import SandboxError
from runtime.sandbox.contract import SYSTEM_CA_BUNDLES, file_mode, with_system_trust
from runtime.sandbox.spec import SandboxSpec
from runtime.sandbox.toolbox import PROFILE, PROFILE_TEXT, TOOLBOX, ensure_toolbox, path_with_toolbox
from runtime.sandbox.user_image import PasswdEntry, for_project, passwd_entry

AGENT_USER = "agent"
PROXY_DIR = "/run/aileron"  # the proxy socket's folder, in the relay container only
RELAY_SCRIPT = "/run/aileron-relay/relay.py"
WORKSPACE = "/workspace"
RELAY_READY_SECONDS = 20.0
GVISOR = "runsc"  # the engine's name for gVisor's runtime
GVISOR_ARGS = ("--host-uds=all", "--network=none")  # the proxy socket reachable; no network but its loopback
GVISOR_FIX = (
    'apt-get install runsc, add {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": '
    '["--host-uds=all", "--network=none"]}}} to /etc/docker/daemon.json and reload dockerd (kill -HUP)'
)
IMAGE_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")  # what runs the relay inside a gVisor sandbox
LABEL = "aileron.sandbox"
SHELL = "/bin/sh"
IMAGE_FILES = ("/etc/passwd", SHELL)
SIZED = 'stty rows {rows} cols {columns} 2>/dev/null; exec "$@"'


def _default_relay_image() -> str:
    from runtime.sandbox.image import base_image_tag

    return base_image_tag()


class DockerRunning:
    """Running, for the agent container: its terminal is the attach stream (raw bytes, since it has a TTY)."""

    def __init__(
        self,
        client: Any,
        agent: Any,
        relay_container: Any,
        sock: Any,
        folder: Path,
        notes: list[str],
        workspace_mount: Path | None = None,
    ):
        self.client = client
        self.agent = agent
        self.relay = relay_container
        self._io = sock  # the SDK's SocketIO; its raw socket is what we read, write and select on
        self.sock = getattr(sock, "_sock", sock)
        self.folder = folder
        self.notes = notes  # one-line remarks for the launcher to show (e.g. the image has no `agent` user)
        self.workspace_mount = workspace_mount  # the idmapped mount of a root-owned project, detached at stop
        self._exit: int | None = None
        self._exited = threading.Event()
        self._stopped = False
        threading.Thread(target=self._watch, name=f"aileron-wait {agent.name}", daemon=True).start()

    def _watch(self) -> None:
        try:
            result = self.agent.wait()
            self._exit = int(result.get("StatusCode", -1))
        except Exception:  # noqa: BLE001 - removed under us by stop(): the run is over either way
            self._exit = -1
        self._exited.set()

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def read(self, size: int = 65536) -> bytes:
        try:
            return bytes(self.sock.recv(size))
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def resize(self, rows: int, columns: int) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            self.agent.resize(height=rows, width=columns)

    def wait(self, timeout: float | None = None) -> int | None:
        return self._exit if self._exited.wait(timeout) else None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        import docker.errors

        for container in (self.agent, self.relay):
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        # The SDK keeps the attach request's response on the socket; closed later by the collector, it would
        # complain about its already closed file.
        response = getattr(self._io, "_response", None)
        with contextlib.suppress(OSError, ValueError):
            if response is not None:
                response.raw.close()
                response.close()
            self._io.close()
        if self.workspace_mount is not None:
            idmap.unmount(self.workspace_mount)
        shutil.rmtree(self.folder, ignore_errors=True)


class DockerBackend:
    name = "docker"

    def __init__(
        self,
        *,
        relay_image: str | None = None,
        memory: str = "8g",
        pids: int = 4096,
    ) -> None:
        self._relay_image = relay_image
        self.memory = memory
        self.pids = pids

    @property
    def relay_image(self) -> str:
        return self._relay_image or _default_relay_image()

    def _client(self) -> Any:
        import docker
        import docker.errors

        try:
            client = docker.from_env(timeout=60)
            client.ping()
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the Docker engine is not reachable: {_first_line(exc)}") from None
        return client

    def available(self) -> str | None:
        try:
            import docker  # noqa: F401
        except ImportError:
            return "the docker SDK is not installed (pip install docker)"
        try:
            self._client().close()
        except SandboxError as exc:
            return str(exc)
        return None

    def start(self, spec: SandboxSpec) -> DockerRunning:
        import docker.errors

        client = self._client()
        image = _image(client, spec.image)
        gvisor = spec.runtime == "gvisor"
        if gvisor and (why := gvisor_unavailable(client)) is not None:
            raise SandboxError(why)
        session = f"{_slug(spec.name) or 'agent'}-{uuid.uuid4().hex[:8]}"
        folder = Path(tempfile.mkdtemp(prefix=f"aileron-sandbox-{session}-"))
        os.chmod(folder, 0o700)
        relay_container = agent = None
        notes: list[str] = []
        workspace_mount: Path | None = None
        try:
            # Reading the image (its users, its trust store) and finding the toolbox (made once per base image)
            # overlap the relay's start: each takes a few 100 ms.
            made: list[str] = []
            with ThreadPoolExecutor(max_workers=2) as pool:
                starter = [spec.argv[0]] if spec.argv and spec.argv[0].startswith("/") else []
                pythons = list(IMAGE_PYTHONS) if gvisor else []
                reading = pool.submit(
                    read_image_files, client, spec.image, [*IMAGE_FILES, *SYSTEM_CA_BUNDLES, *starter, *pythons]
                )
                toolboxing = pool.submit(ensure_toolbox, client, self.relay_image, progress=made.append)
                if gvisor:
                    network_mode = "none"  # its own loopback, inside gVisor; the relay runs in the agent's container
                elif spec.proxy_socket is not None:
                    relay_container = self._start_relay(client, spec, session)
                    network_mode = f"container:{relay_container.id}"
                else:
                    network_mode = "none"  # no proxy given: no way out at all
                found = reading.result()
                try:
                    toolbox: Path | None = toolboxing.result()
                except SandboxError as exc:  # a convenience, not a boundary: the sandbox runs without it
                    toolbox = None
                    notes.append(f"{exc}; the aileron CLI and the shims are only what the image has")
            notes.extend(line for line in made if line.startswith("made "))  # not the "making ..." line
            if starter and starter[0] not in found:  # else the engine's own words: "exec: no such file"
                raise SandboxError(f"the image {spec.image} has no {starter[0]}, which starts the agent")
            user = AGENT_USER
            run_image = spec.image
            agent_entry = passwd_entry(found.get("/etc/passwd"), AGENT_USER)
            if agent_entry is None:
                fallback = (image.attrs.get("Config") or {}).get("User") or "root"
                notes.append(f"the image {spec.image} has no user `{AGENT_USER}`: the agent runs as {fallback}")
                user = fallback
            elif spec.workdir is not None:
                project = Path(spec.workdir).resolve()
                why_not: str | None = None
                # (not under gVisor: runsc does not honour idmapped mounts)
                if project.stat().st_uid == 0 and agent_entry.uid != 0 and not gvisor and idmap.unavailable() is None:
                    workspace_mount, why_not = _idmapped_project(project, agent_entry)
                if workspace_mount is None:
                    owned = for_project(client, image, spec.image, agent_entry, project)
                    run_image = owned.image
                    note = why_not or owned.note
                    notes.extend([note] if note else [])
            files = with_system_trust(spec.files, found.get)
            argv = list(spec.argv)
            if SHELL in found:
                # The terminal's size from its first instant (the engine can only resize it once it runs).
                argv = [SHELL, "-c", SIZED.format(rows=spec.rows, columns=spec.columns), "sh", *argv]
                files = {PROFILE: PROFILE_TEXT.encode(), **files}
            else:
                notes.append(f"the image {spec.image} has no {SHELL}: the aileron CLI and shims cannot run in it")
            env = {**spec.env, "PATH": path_with_toolbox((image.attrs.get("Config") or {}).get("Env"), spec.env)}
            mounts = _write_files(folder / "files", files)
            if gvisor and spec.proxy_socket is not None:
                python = next((p for p in IMAGE_PYTHONS if p in found), None)
                if python is None:
                    raise SandboxError(
                        f"the image {spec.image} has no python3, which runs the proxy relay inside a gVisor sandbox "
                        '(use an image FROM the base image, or runtime "runc")'
                    )
                socket_path = Path(spec.proxy_socket).resolve()
                if agent_entry is not None:  # the derived image's agent is the project owner; else the image's
                    owner = Path(spec.workdir).stat() if run_image != spec.image and spec.workdir else None
                    _open_socket_to(socket_path, owner.st_uid if owner else agent_entry.uid)
                mounts += [_bind(Path(relay.__file__).resolve(), RELAY_SCRIPT), _bind(socket_path.parent, PROXY_DIR)]
                listen = [
                    "--listen",
                    f"127.0.0.1:{spec.proxy_port_inside}",
                    "--socket",
                    f"{PROXY_DIR}/{socket_path.name}",
                ]
                argv = [python, RELAY_SCRIPT, *listen, "--", *argv]
            if toolbox is not None:
                mounts.append(_bind(toolbox, TOOLBOX))
            if spec.workdir is not None:
                source = workspace_mount or Path(spec.workdir).resolve()
                mounts.append(_bind(source, WORKSPACE, read_only=False))
            agent = client.containers.create(
                run_image,
                entrypoint=argv[:1],
                command=argv[1:],
                name=f"aileron-{session}",
                labels={LABEL: "agent", "aileron.session": session},
                environment=env,
                user=user,
                working_dir=WORKSPACE if spec.workdir is not None else None,
                tty=True,  # always a terminal, as with every backend: the stream is then raw, not multiplexed
                stdin_open=True,
                network_mode=network_mode,
                mounts=mounts,
                runtime=GVISOR if gvisor else None,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=self.pids,
                mem_limit=self.memory,
                memswap_limit=self.memory,
            )
            sock = agent.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            agent.start()  # attached first, so nothing the agent prints early is lost
            running = DockerRunning(client, agent, relay_container, sock, folder, notes, workspace_mount)
        except BaseException as exc:
            for container in (agent, relay_container):
                if container is not None:
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
            if workspace_mount is not None:
                idmap.unmount(workspace_mount)
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, docker.errors.APIError):
                raise SandboxError(f"docker could not start the sandbox: {_first_line(exc)}") from None
            raise
        running.resize(spec.rows, spec.columns)
        return running

    def _start_relay(self, client: Any, spec: SandboxSpec, session: str) -> Any:
        assert spec.proxy_socket is not None  # noqa: S101 - the caller checked
        socket_path = Path(spec.proxy_socket).resolve()
        info = socket_path.parent.stat()
        relay_image = self.relay_image
        _image(client, relay_image, what="the relay image (the base image; `aileron sandbox build-base`)")
        container = client.containers.create(
            relay_image,
            entrypoint=["python3", RELAY_SCRIPT],
            command=["--listen", f"127.0.0.1:{spec.proxy_port_inside}", "--socket", f"{PROXY_DIR}/{socket_path.name}"],
            name=f"aileron-{session}-relay",
            labels={LABEL: "relay", "aileron.session": session},
            # The socket's folder is private to the launching user: the relay runs as that user to enter it.
            user=f"{info.st_uid}:{info.st_gid}",
            network_mode="none",
            mounts=[
                _bind(Path(relay.__file__).resolve(), RELAY_SCRIPT),
                _bind(socket_path.parent, PROXY_DIR),
            ],
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=64,
            mem_limit="128m",
        )
        try:
            container.start()
            deadline = time.monotonic() + RELAY_READY_SECONDS
            while b"ready" not in container.logs(stdout=True, stderr=False):
                container.reload()
                if container.status not in ("created", "running") or time.monotonic() > deadline:
                    said = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
                    raise SandboxError(
                        f"the proxy relay did not start in {relay_image}: {said.splitlines()[-1] if said else ''}"
                    )
                time.sleep(0.01)
        except BaseException:
            container.remove(force=True)
            raise
        return container


def gvisor_unavailable(client: Any) -> str | None:
    """Why the engine cannot run a gVisor sandbox (one line with the fix), or None."""
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception as exc:  # noqa: BLE001 - the engine's own words, in one line
        return f"cannot ask the Docker engine for its runtimes: {_first_line(exc)}"
    if GVISOR not in runtimes:
        return f"gVisor was asked for (customizations.aileron.runtime) but the Docker engine has no runsc: {GVISOR_FIX}"
    args = (runtimes[GVISOR].get("runtimeArgs") or []) if isinstance(runtimes[GVISOR], dict) else []
    missing = [arg for arg in GVISOR_ARGS if arg not in args]
    if missing:
        return f"the Docker engine's runsc runs without {' '.join(missing)}: {GVISOR_FIX}"
    return None


def _open_socket_to(socket_path: Path, uid: int) -> None:
    """Let the agent's uid connect to the proxy socket from inside a gVisor sandbox, where the relay runs as the
    agent. Launched as root, the socket becomes the agent's, still in the folder owner's group (a relay
    container, which runs as that owner with no capabilities, and the netns relay can use it too), and its
    private folder traversable (not listable); launched as another user, the agent is that user (the derived
    image) or cannot connect."""
    if os.getuid() != 0 or uid == 0:
        return
    folder = socket_path.parent.stat()
    os.chown(socket_path, uid, folder.st_gid)
    os.chmod(socket_path, 0o660)
    os.chmod(socket_path.parent, 0o711)  # noqa: S103 - traverse only: the socket inside is the agent's and root's


def _idmapped_project(project: Path, agent: PasswdEntry) -> tuple[Path | None, str | None]:
    """A root-owned project, mounted so that `agent` writes it and what it writes is root's; else None and why."""
    try:
        return idmap.mount_for_agent(project, uid=agent.uid, gid=agent.gid), None
    except idmap.IdmapError as exc:
        return None, (
            f"the project folder {project} belongs to root and {exc}: the agent (uid {agent.uid}) can read it but "
            f"not write it (chown it to uid {agent.uid}, or let others write it)"
        )


def read_image_files(client: Any, image: str, paths: list[str]) -> dict[str, bytes]:
    """Files of an image, read from a created (never started) container; absent ones are left out, and anything
    but a regular file (a symbolic link, a folder) is there with no content."""
    import docker.errors

    probe = client.containers.create(image, entrypoint=["/nonexistent"], network_mode="none", labels={LABEL: "probe"})
    found: dict[str, bytes] = {}
    try:
        for path in paths:
            try:
                chunks, _ = probe.get_archive(path)
            except docker.errors.NotFound:
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                member = next(iter(tar.getmembers()), None)
                extracted = tar.extractfile(member) if member is not None and member.isfile() else None
                found[path] = extracted.read() if extracted is not None else b""
    finally:
        probe.remove(force=True)
    return found


def _image(client: Any, reference: str, what: str = "the sandbox image") -> Any:
    import docker.errors

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        raise SandboxError(f"{what} {reference} is not in the local Docker engine; build it first") from None


def _write_files(root: Path, files: dict[str, bytes]) -> list[Any]:
    """Each file written under `root` (readable by the agent: nothing here is secret) and bound read-only."""
    mounts = []
    for inside, content in sorted(files.items()):
        if not inside.startswith("/") or ".." in Path(inside).parts:
            raise SandboxError(f"a sandbox file must have an absolute path without '..': {inside!r}")
        host = root / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(content)
        host.chmod(file_mode(inside))
        mounts.append(_bind(host, inside))
    return mounts


def _bind(source: Path, target: str, *, read_only: bool = True) -> Any:
    from docker.types import Mount

    return Mount(target=target, source=str(source), type="bind", read_only=read_only)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-.")[:40]


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else exc.__class__.__name__

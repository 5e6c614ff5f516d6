"""The `netns` sandbox, for hosts without Docker: bubblewrap namespaces around the agent, on a PTY we own.

New user, network (loopback only), pid, ipc and uts namespaces. The filesystem is a read-only view: of the
host's system folders (/usr, /etc, ...) and the Python that runs Aileron (so the shims work), or of a root
filesystem folder given as the image. The homes, /tmp, /run and /var are empty and private, so the user's
files, ~/.aileron included, are out of sight; the project is mounted read-write at /workspace. The contract's
files are bound read-only (folders of the view that must receive one are rebuilt entry by entry). The first
process is `relay.py`, which listens on the sandbox's loopback for the proxy socket and then becomes the agent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pty
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from runtime.sandbox import contract, relay
from runtime.sandbox.backends import SandboxError
from runtime.sandbox.contract import SYSTEM_CA_BUNDLES, file_mode, with_system_trust
from runtime.sandbox.local_backend import PtyProcess, set_size
from runtime.sandbox.spec import SandboxSpec

WORKSPACE = "/workspace"
HOME = "/home/agent"
PROXY_DIR = "/run/aileron"
RELAY_SCRIPT = "/run/aileron-relay/relay.py"
# What the host view shows of the host; the rest of its root (homes, /root, /srv, /mnt, /media, /var, ...) is not
# there at all.
HOST_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Of a root filesystem folder, everything but these, which the sandbox gets fresh.
FRESH = ("dev", "proc", "sys", "tmp", "run", "var", "home", "root")
# Aileron's own packages: bound from wherever they are imported from (a source checkout, for an editable install).
PACKAGES = (
    "aileron_cli",
    "aileron_site",
    "approvals",
    "audit",
    "connectors",
    "dataplane",
    "policies",
    "runtime",
    "tenants",
    "vaults",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NetnsRunning(PtyProcess):
    """Running, for bwrap on a PTY: the master end is the agent's terminal."""

    def __init__(self, process: subprocess.Popen[bytes], master: int, folder: Path) -> None:
        self.process = process
        self.master = master
        self.folder = folder
        self.notes: list[str] = []
        self._closed = False

    def stop(self) -> None:
        if self.process.poll() is None:
            # bwrap leads its own session; its sandbox dies with it (--die-with-parent, then the pid namespace).
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if not self._closed:
            self._closed = True
            os.close(self.master)
        shutil.rmtree(self.folder, ignore_errors=True)


class NetnsBackend:
    name = "netns"

    def __init__(self) -> None:
        self._unavailable: str | None | bool = False  # False: not checked yet

    def available(self) -> str | None:
        if self._unavailable is False:
            self._unavailable = _check()
        return self._unavailable if isinstance(self._unavailable, str) else None

    def start(self, spec: SandboxSpec) -> NetnsRunning:
        reason = self.available()
        if reason is not None:
            raise SandboxError(f"the netns sandbox cannot start: {reason}")
        root = Path(spec.image).resolve() if spec.image else None
        if root is not None and not root.is_dir():
            raise SandboxError(f"the netns sandbox's image must be a root filesystem folder: {spec.image}")
        folder = Path(tempfile.mkdtemp(prefix=f"aileron-netns-{spec.name or 'agent'}-"))
        os.chmod(folder, 0o700)
        try:
            argv, env = bwrap_argv(spec, root, folder)
            master, slave = pty.openpty()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            set_size(slave, spec.rows, spec.columns)
            # setsid --ctty: bwrap leads a session whose controlling terminal is the PTY, so the agent has job
            # control and /dev/tty; without a preexec function, which is unsafe while the host relay's thread runs.
            # The environment goes through bwrap's own (private to this user), never its command line: the
            # session token must not show in `ps` to the host's other users.
            process = subprocess.Popen(  # noqa: S603 - our own fixed command line
                [shutil.which("setsid") or "setsid", "--ctty", *argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            os.close(slave)
        return NetnsRunning(process, master, folder)


def _check() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed: apt-get install bubblewrap"
    if shutil.which("setsid") is None:
        return "setsid is not installed: apt-get install util-linux"
    trial = subprocess.run(
        ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=30,
    )
    if trial.returncode != 0:
        said = trial.stderr.strip().splitlines()
        return f"bubblewrap cannot create namespaces here: {said[-1] if said else trial.returncode}"
    return None


def bwrap_argv(spec: SandboxSpec, root: Path | None, folder: Path) -> tuple[list[str], dict[str, str]]:
    """bwrap's command line and environment (which it passes on) for `spec`; the files are written to `folder`."""
    read = _reader(root)
    files = with_system_trust(spec.files, read)
    for inside in files:
        if not inside.startswith("/") or ".." in Path(inside).parts:
            raise SandboxError(f"a sandbox file must have an absolute path without '..': {inside!r}")
    destinations = set(files)
    args = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",  # user (where allowed), ipc, pid, net (loopback only), uts, cgroup
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--hostname",
        "aileron-sandbox",
    ]
    path = DEFAULT_PATH
    python: str
    if root is None:
        for top in HOST_SYSTEM:
            host = Path(top)
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), top]
            elif host.is_dir():
                args += _view(host, top, destinations, rebuild=top == "/etc")
        runtime_paths = _aileron_runtime()
        python = sys.executable
        path = f"{Path(sys.executable).parent}:{DEFAULT_PATH}"
    else:
        for entry in sorted(os.listdir(root)):
            host = root / entry
            if entry in FRESH:
                continue
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{entry}"]
            elif host.is_dir():
                args += _view(host, f"/{entry}", destinations)
            else:
                args += ["--ro-bind", str(host), f"/{entry}"]
        python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if (root / p[1:]).exists()), "")
    # Fresh and private to this sandbox (paths inside it, not this host's temporary folders).
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var"]  # noqa: S108
    args += ["--dir", "/var/tmp", "--tmpfs", "/home", "--dir", HOME]  # noqa: S108
    if root is None:
        # After the fresh folders: a checkout or venv under /tmp, /home or /var would be hidden by them otherwise.
        for extra in runtime_paths:
            args += ["--ro-bind", str(extra), str(extra)]
    made: set[str] = set()
    for inside, content in sorted(files.items()):
        for parent in reversed(Path(inside).parents[:-1]):  # readable folders (bwrap would make them 0700)
            if str(parent) not in made and not _in_view(root, str(parent), destinations):
                args += ["--perms", "0755", "--dir", str(parent)]
            made.add(str(parent))
        host = folder / "files" / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(content)
        host.chmod(file_mode(inside))
        args += ["--ro-bind", str(host), inside]
    if spec.workdir is not None:
        args += ["--bind", str(Path(spec.workdir).resolve()), WORKSPACE, "--chdir", WORKSPACE]
    else:
        args += ["--chdir", HOME]
    path = f"{path}:{contract.BIN}"  # the shims of connectors that are not built in
    env = {"HOME": HOME, "USER": "agent", "LOGNAME": "agent", "PATH": path, "TERM": "xterm-256color", **spec.env}
    args += ["--remount-ro", "/"]
    command = list(spec.argv)
    if spec.proxy_socket is not None:
        if not python:
            raise SandboxError(f"the netns sandbox needs python3 in {root} to run its proxy relay")
        socket_path = Path(spec.proxy_socket).resolve()
        args += ["--ro-bind", str(socket_path.parent), PROXY_DIR]
        args += ["--ro-bind", str(Path(relay.__file__).resolve()), RELAY_SCRIPT]
        listen = f"127.0.0.1:{spec.proxy_port_inside}"
        socket_inside = f"{PROXY_DIR}/{socket_path.name}"
        command = [python, "-I", "-S", RELAY_SCRIPT, "--listen", listen, "--socket", socket_inside, "--", *command]
    return [*args, "--", *command], env


def _view(host: Path, inside: str, destinations: set[str], *, rebuild: bool = False) -> list[str]:
    """A read-only view of a folder; one that must receive a contract file is rebuilt entry by entry.

    A rebuilt folder leaves out what others may not read (/etc/shadow, /etc/sudoers, /etc/ssl/private, ...):
    the agent runs as the launching user, who may be root, and those are secrets of the host's.
    """
    if not rebuild and not any(d.startswith(inside + "/") for d in destinations):
        return ["--ro-bind", str(host), inside]
    args = ["--dir", inside]
    for entry in sorted(os.listdir(host)):
        source, target = host / entry, f"{inside}/{entry}"
        if target in destinations:
            continue  # the contract's file takes its place
        if not _public(source):
            continue
        if source.is_symlink():
            args += ["--symlink", os.readlink(source), target]
        elif source.is_dir():
            args += _view(source, target, destinations)
        else:
            args += ["--ro-bind", str(source), target]
    return args


def _public(path: Path) -> bool:
    """Readable by anyone (and, for a folder, enterable): what a view may show of the host."""
    try:
        mode = path.stat().st_mode if not path.is_symlink() else stat.S_IROTH | stat.S_IXOTH
    except OSError:
        return False
    wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & wanted == wanted


def _in_view(root: Path | None, inside: str, destinations: set[str]) -> bool:
    """Whether the view already has this folder (from the host or the root filesystem, or rebuilt by _view)."""
    base = root or Path("/")
    return (base / inside.lstrip("/")).is_dir()


def _reader(root: Path | None) -> Callable[[str], bytes | None]:
    base = root or Path("/")

    def read(path: str) -> bytes | None:
        if path not in SYSTEM_CA_BUNDLES:
            return None
        candidate = base / path.lstrip("/")
        try:
            return candidate.read_bytes() if candidate.is_file() and not candidate.is_symlink() else None
        except OSError:
            return None

    return read


def _aileron_runtime() -> list[Path]:
    """The interpreter, its environment and Aileron's packages, outside the system folders already in view."""
    found: set[Path] = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            found.add(Path(location).resolve())
    system = [Path(top).resolve() for top in HOST_SYSTEM if Path(top).exists()]
    kept = [p for p in found if not any(p == s or s in p.parents for s in system)]
    # A folder inside another one kept is already there.
    return sorted(p for p in kept if not any(q in p.parents for q in kept))

"""The sandbox base image, `aileron/sandbox-base:<version>`, built locally: no image registry is needed.

    client = engine()                                  # the local Docker engine, or one ImageError line
    built = build_base(client=client, progress=print)  # BaseImage(tag, image_id, size, seconds, cached, ...)

How: debootstrap a minimal Debian (trixie) root filesystem from the host's Debian mirror, `docker import` it as
`aileron/sandbox-rootfs:<suite>-<recipe>`, then `docker build` FROM it with no network: a venv at /opt/aileron
gets a wheel of the installed aileron packages and the wheels of what the CLI and the shims import (click, rich,
httpx, websockets, cryptography, argon2-cffi, graphql-core; never Django), fetched on the host for the image's
Python. The commands (`aileron`, `github`, `slack`, `linear`, `stripe`) are linked into /usr/local/bin, and the
agent runs as `agent` (uid 1000, home /home/agent) in /workspace.

Caches, so a rebuild needs neither debootstrap nor the network: the root filesystem as a tar and the wheels,
under ~/.cache/aileron/sandbox (XDG_CACHE_HOME or AILERON_CACHE_DIR move it), and the rootfs image itself.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image

Progress = Callable[[str], None]

BASE_REPOSITORY = "aileron/sandbox-base"
ROOTFS_REPOSITORY = "aileron/sandbox-rootfs"
SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = (
    "bash",
    "ca-certificates",
    "curl",
    "gh",
    "git",
    "iproute2",
    "less",
    "procps",
    "python3",
    "python3-venv",
)
# What `aileron` (status, audit, approvals, actions) and the shims import when they run; found by running every
# command in a clean venv holding only these. `aileron service`, `dataplane` and `launch` need the full install
# and are not meant to run inside a sandbox.
RUNTIME_REQUIREMENTS = ("argon2-cffi", "click", "cryptography", "graphql-core", "httpx", "rich", "websockets")
# Bump when the root filesystem recipe changes: the cached tar and rootfs image are keyed by it.
ROOTFS_RECIPE = 1

VENV = "/opt/aileron"
AGENT_USER = "agent"
AGENT_UID = 1000
AGENT_HOME = "/home/agent"
WORKSPACE = "/workspace"

LABEL_VERSION = "org.aileron.version"  # on the base image and, inherited, on every image built FROM it
LABEL_KIND = "org.aileron.kind"
LABEL_PYTHON = "org.aileron.python"
LABEL_SUITE = "org.aileron.suite"
LABEL_SOURCE = "org.aileron.source"  # source_digest() of the aileron it holds

# debootstrap prints a line per package retrieved, validated, extracted, unpacked and configured: only the
# phases are worth showing.
_PER_PACKAGE_LINE = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) \S")
_DOC_EXCLUDES = """\
# Written by aileron sandbox build-base: a sandbox needs no manuals or translations (as Debian's slim images).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


class ImageError(Exception):
    """A failure to report as one line."""


@dataclass(frozen=True)
class BaseImage:
    tag: str  # aileron/sandbox-base:<version>, also tagged :latest
    image_id: str
    size: int  # bytes, as the engine reports it
    seconds: float  # this call, cache hits included
    cached: bool  # the image was already there and nothing was built
    python: str  # the image's python3, e.g. "3.13"
    suite: str
    steps: tuple[tuple[str, float], ...] = ()  # (step, seconds) of what this call did

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "tags": [self.tag, f"{BASE_REPOSITORY}:latest"],
            "image_id": self.image_id,
            "size": self.size,
            "seconds": round(self.seconds, 2),
            "cached": self.cached,
            "python": self.python,
            "suite": self.suite,
            "steps": [{"step": name, "seconds": round(sec, 2)} for name, sec in self.steps],
        }


# --- names and places ---------------------------------------------------------------------------------------


def aileron_version() -> str:
    from aileron_site import __version__

    return __version__


def base_image_tag(version: str | None = None) -> str:
    """aileron/sandbox-base:<version>; a local version's `+` is not allowed in a tag and becomes `-`."""
    return f"{BASE_REPOSITORY}:{(version or aileron_version()).replace('+', '-')}"


def cache_dir() -> Path:
    explicit = os.environ.get("AILERON_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser() / "sandbox"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache").expanduser() / "aileron" / "sandbox"


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this host's apt uses (so a local mirror or proxy is honoured), else deb.debian.org.

    AILERON_DEBIAN_MIRROR wins. Security and third-party sources are skipped: only an archive whose URI path
    ends in /debian serves trixie's main suite.
    """
    explicit = os.environ.get("AILERON_DEBIAN_MIRROR")
    if explicit:
        return explicit.rstrip("/")
    for uri in _apt_uris(apt_dir):
        if uri.rstrip("/").endswith("/debian") and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _apt_uris(apt_dir: Path) -> Iterator[str]:
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in {".list", ".sources"})
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if path.suffix == ".sources" and line.lower().startswith("uris:"):
                yield from line.split(":", 1)[1].split()
            elif line.startswith("deb "):
                fields = [f for f in line.split()[1:] if not f.startswith("[")]
                # "deb [opt=val] URI suite ...": options in brackets may contain spaces only when quoted; rare.
                if fields and "]" not in fields[0]:
                    yield fields[0]


# --- the Docker engine --------------------------------------------------------------------------------------


def engine(timeout: float = 120.0) -> DockerClient:
    """The local Docker engine (DOCKER_HOST or /var/run/docker.sock), answering; else one ImageError line."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        raise ImageError(f"the Docker engine is not reachable: {_engine_reason(exc)}") from None
    return client


def _engine_reason(exc: Exception) -> str:
    text = str(exc)
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    socket_path = host.removeprefix("unix://") if host.startswith("unix://") else None
    if socket_path and not Path(socket_path).exists():
        return f"no socket at {socket_path} (is dockerd running? start it or set DOCKER_HOST)"
    if "PermissionError" in text or "Permission denied" in text:
        return f"permission denied on {socket_path or host} (join the docker group, or run as root)"
    if "Connection refused" in text:
        return f"connection refused at {host} (is dockerd running?)"
    text = text.removeprefix("Error while fetching server API version: ")
    return text.splitlines()[0][:300] if text else type(exc).__name__


def local_image(client: DockerClient, ref: str) -> Image | None:
    """The image if the engine has it; never pulls."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


def docker_build(
    client: DockerClient,
    *,
    context: Path,
    tag: str,
    progress: Progress,
    dockerfile: str | None = None,
    buildargs: Mapping[str, str] | None = None,
    target: str | None = None,
    labels: Mapping[str, str] | None = None,
    network: str = "none",
    nocache: bool = False,
) -> str:
    """Build a Dockerfile with the engine's own builder; never pulls a FROM image. Returns the image id.

    `network="none"` (the default) runs every RUN step without a network; "host" or "default" when a RUN step
    must download. Each `Step n/m` line and every line a step prints go to `progress` as they arrive, so a long
    RUN step is not silent. A failing step is an ImageError: its first line names the step and the builder's
    error, the next ones are the last BUILD_ERROR_LINES lines the step printed (the builder removes the step's
    container, so they are nowhere else).
    """
    from docker.errors import APIError, BuildError

    log = _BuildLog(progress)
    try:
        stream = client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            buildargs=dict(buildargs or {}),
            target=target,
            labels=dict(labels or {}),
            network_mode=network,
            nocache=nocache,
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
            use_config_proxy=False,
        )
        for chunk in stream:
            if "error" in chunk:
                log.flush()
                raise ImageError(build_failure_text(tag, log.step, str(chunk["error"]), log.step_output))
            log.feed(str(chunk.get("stream", "")))
    except (APIError, BuildError) as exc:
        raise ImageError(f"building {tag} failed: {_api_error_text(exc)}") from None
    image = local_image(client, tag)
    if image is None or not image.id:
        raise ImageError(f"building {tag} failed: the engine reported no image")
    return str(image.id)


BUILD_ERROR_LINES = 30  # of the failing step's output, in the error


def build_failure_text(tag: str, step: str, error: str, output: Iterable[str]) -> str:
    """The failure of a build: one line naming the step and the builder's error, then what the step printed last.

    >>> print(build_failure_text("t", "Step 2/3 : RUN make", "returned a non-zero code: 2", ["cc -c a.c", "boom"]))
    building t failed at Step 2/3 : RUN make: returned a non-zero code: 2
      its last 2 lines of output:
      | cc -c a.c
      | boom
    """
    detail = error.strip().splitlines()[-1] if error.strip() else "the builder gave no reason"
    at = f" at {step}" if step else ""
    text = f"building {tag} failed{at}: {detail}"
    kept = list(output)[-BUILD_ERROR_LINES:]
    if kept:
        count = "line" if len(kept) == 1 else f"{len(kept)} lines"
        text += f"\n  its last {count} of output:" + "".join(f"\n  | {line}" for line in kept)
    return text


class _BuildLog:
    """The builder's output arrives in pieces (a RUN step's stderr a character at a time, coloured): whole lines,
    each shown as it completes (a step's own output indented under its `Step n/m` line), and the current step's
    last lines kept for an error message."""

    _ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
    _NOISE = ("---> ", "Running in ", "Removing intermediate", "Successfully ", "Using cache")

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.pending = ""
        self.step = ""
        self.step_output: list[str] = []

    def feed(self, text: str) -> None:
        self.pending += self._ANSI.sub("", text).replace("\r\n", "\n")
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line.rsplit("\r", 1)[-1].rstrip())  # a progress bar's redrawn line: its last state

    def flush(self) -> None:
        self._line(self.pending.rsplit("\r", 1)[-1].rstrip())
        self.pending = ""

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        if line.startswith("Step "):
            self.step, self.step_output = line, []
            self.progress(line)
        elif not line.lstrip().startswith(self._NOISE):
            self.step_output = [*self.step_output[-(BUILD_ERROR_LINES - 1) :], line]
            self.progress(f"  | {line}")


def _api_error_text(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


# --- build-base ---------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        began = time.monotonic()
        result = action()
        self.steps.append((name, time.monotonic() - began))
        return result

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def build_base(
    *,
    client: DockerClient,
    progress: Progress,
    rebuild: bool = False,
    refresh_rootfs: bool = False,
    version: str | None = None,
    mirror: str | None = None,
    agents: Iterable[str] = (),
) -> BaseImage:
    """Build aileron/sandbox-base:<version> (and :latest), or report the one already there.

    `rebuild` builds again without the engine's build cache, reusing the cached Debian root filesystem;
    `refresh_rootfs` also runs debootstrap again. `agents` (names in runtime.sandbox.agents.AGENTS) are
    installed too; the agents an image already carries stay in it when it is built again, unless `rebuild`.
    """
    from runtime.sandbox import agents as agent_cli

    clock = _Clock(progress)
    tag = base_image_tag(version)
    existing = local_image(client, tag)
    source = source_digest()
    wanted = set(agents)
    if existing is not None and not (rebuild or refresh_rootfs):
        labels = existing.labels or {}
        carried = set(agent_cli.agents_in(labels.get(agent_cli.LABEL_AGENTS)))
        if labels.get(LABEL_SOURCE) == source and wanted <= carried:
            size = _size_text(_image_size(existing))
            progress(f"{tag} is already built ({size}): nothing to do (--rebuild builds it again)")
            return _result(existing, tag, clock, cached=True)
        if labels.get(LABEL_SOURCE) == source:
            progress(f"{tag} lacks {', '.join(sorted(wanted - carried))}: building it again with them")
        else:
            progress(f"{tag} was built from other aileron code than this one's: building it again")
        wanted |= carried

    arch = _check_architecture(client)
    rootfs_ref, python = clock.step(
        "debian root filesystem",
        lambda: _rootfs_image(client, progress=progress, arch=arch, refresh=refresh_rootfs, mirror=mirror),
    )
    with tempfile.TemporaryDirectory(prefix="aileron-base-") as scratch:
        context = Path(scratch)
        wheels = context / "wheels"
        wheels.mkdir()
        clock.step("wheels", lambda: _collect_wheels(wheels, python=python, arch=arch, progress=progress))
        extra = ""
        if wanted:
            fetched = clock.step(
                "agents",
                lambda: agent_cli.fetch_agents(
                    sorted(wanted),
                    arch=arch,
                    cache=cache_dir(),
                    rootfs_ref=rootfs_ref,
                    client=client,
                    progress=progress,
                ),
            )
            agent_cli.stage_context(fetched, context)
            extra = agent_cli.dockerfile_lines(fetched)
        (context / "Dockerfile").write_text(_base_dockerfile(rootfs_ref, extra), encoding="utf-8")
        progress(f"building {tag} from {rootfs_ref} (no network)")
        labels = {
            LABEL_VERSION: (version or aileron_version()),
            LABEL_KIND: "sandbox-base",
            LABEL_PYTHON: python,
            LABEL_SUITE: SUITE,
            LABEL_SOURCE: source,
            agent_cli.LABEL_AGENTS: agent_cli.label_value(wanted),
        }
        image_id = clock.step(
            "docker build",
            lambda: docker_build(
                client, context=context, tag=tag, progress=progress, labels=labels, network="none", nocache=rebuild
            ),
        )
    client.api.tag(image_id, BASE_REPOSITORY, "latest")
    image = client.images.get(tag)
    if existing is not None and existing.id != image.id:
        remove_untagged(client, str(existing.id))
    progress(f"built {tag} ({_size_text(_image_size(image))}) in {clock.elapsed:.1f}s")
    return _result(image, tag, clock, cached=False)


def remove_untagged(client: DockerClient, image_id: str) -> None:
    """The image a rebuild replaced, now without a tag: removed unless a container still uses it."""
    from docker.errors import APIError

    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
    except APIError:
        pass


def _result(image: Image, tag: str, clock: _Clock, *, cached: bool) -> BaseImage:
    labels = image.labels or {}
    return BaseImage(
        tag=tag,
        image_id=str(image.id),
        size=_image_size(image),
        seconds=clock.elapsed,
        cached=cached,
        python=str(labels.get(LABEL_PYTHON, "")),
        suite=str(labels.get(LABEL_SUITE, "")),
        steps=tuple(clock.steps),
    )


def _image_size(image: Image) -> int:
    return int(image.attrs.get("Size") or 0)


def _size_text(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


def _check_architecture(client: DockerClient) -> str:
    """debootstrap builds for this machine, the wheels are chosen for it: the engine must run the same."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    engine_arch = str(client.info().get("Architecture", arch)).lower()
    engine_arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(engine_arch, engine_arch)
    if engine_arch != arch:
        raise ImageError(f"the Docker engine runs {engine_arch} and this machine {arch}: build on the engine's host")
    if arch not in {"x86_64", "aarch64"}:
        raise ImageError(f"building the base image on {arch} is not supported (x86_64 and aarch64 are)")
    return arch


def _rootfs_key() -> str:
    recipe = json.dumps([ROOTFS_RECIPE, SUITE, sorted(DEBIAN_PACKAGES), _DOC_EXCLUDES], sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _rootfs_image(
    client: DockerClient, *, progress: Progress, arch: str, refresh: bool, mirror: str | None
) -> tuple[str, str]:
    """The imported Debian root filesystem: (image ref, its python3 version). Built only when not cached."""
    ref = f"{ROOTFS_REPOSITORY}:{SUITE}-{_rootfs_key()}"
    image = local_image(client, ref)
    if image is not None and not refresh and (image.labels or {}).get(LABEL_PYTHON):
        progress(f"reusing the Debian {SUITE} root filesystem ({ref})")
        return ref, str(image.labels[LABEL_PYTHON])
    cache = cache_dir()
    tarball = cache / f"rootfs-{SUITE}-{_rootfs_key()}-{arch}.tar"
    meta_path = tarball.with_suffix(".json")
    if refresh or not (tarball.is_file() and meta_path.is_file()):
        _debootstrap(tarball, progress=progress, mirror=mirror or debian_mirror())
    else:
        progress(f"using the cached Debian {SUITE} root filesystem ({tarball})")
    python = str(json.loads(meta_path.read_text(encoding="utf-8"))["python"])
    progress(f"importing it as {ref}")
    changes = [
        f"LABEL {LABEL_PYTHON}={python} {LABEL_SUITE}={SUITE}",
        "ENV LANG=C.UTF-8",
        'CMD ["bash"]',
    ]
    try:
        client.api.import_image_from_file(
            str(tarball), repository=ROOTFS_REPOSITORY, tag=ref.split(":", 1)[1], changes=changes
        )
    except Exception as exc:  # the SDK raises APIError or, for a broken tar, requests' errors
        raise ImageError(f"docker import of {tarball} failed: {_api_error_text(exc)}") from None
    imported = local_image(client, ref)
    if imported is None:
        raise ImageError(f"docker import of {tarball} produced no image {ref}")
    if image is not None and image.id != imported.id:
        remove_untagged(client, str(image.id))  # goes once no base image is built on it any more
    return ref, python


def _debootstrap(tarball: Path, *, progress: Progress, mirror: str) -> None:
    """debootstrap --variant=minbase into a scratch folder, trim it, and keep it as a tar for next time."""
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed: apt-get install debootstrap")
    if not Path(f"/usr/share/debootstrap/scripts/{SUITE}").exists():
        raise ImageError(f"this debootstrap does not know Debian {SUITE}: upgrade it (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root: run `sudo aileron sandbox build-base` (once; later builds reuse it)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    log_path = tarball.with_suffix(".log")
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
    try:
        progress(f"debootstrap {SUITE} from {mirror} (about a minute; log: {log_path})")
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            SUITE,
            str(root),
            mirror,
        ]
        with log_path.open("w", encoding="utf-8") as log:
            process = subprocess.Popen(  # noqa: S603 (fixed arguments)
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
            )
            assert process.stdout is not None  # noqa: S101 (Popen with PIPE)
            last = ""
            for line in process.stdout:
                log.write(line)
                line = line.rstrip()
                if line:
                    last = line
                if line.startswith(("I: ", "W: ", "E: ")) and not _PER_PACKAGE_LINE.match(line):
                    progress(f"  {line}")
            code = process.wait()
        if code != 0:
            raise ImageError(f"debootstrap failed (exit {code}): {last[:200]} (log: {log_path})")
        _trim_rootfs(root, mirror=mirror)
        python = _chroot_python(root)
        progress("packing the root filesystem for the cache")
        partial = tarball.with_suffix(".tar.partial")
        tar = subprocess.run(  # noqa: S603
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root), "-cf", str(partial), "."],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        if tar.returncode != 0:
            raise ImageError(f"packing the root filesystem failed: {tar.stderr.strip()[:200]}")
        partial.replace(tarball)
        meta = {"suite": SUITE, "python": python, "mirror": mirror, "packages": list(DEBIAN_PACKAGES)}
        tarball.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _trim_rootfs(root: Path, *, mirror: str) -> None:
    """No package cache or stale lists; no manuals; apt pointed at the suite; Docker supplies the network files."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / folder).glob("*"):
            if entry.is_file():
                entry.unlink()
    for entry in (root / "var/cache/apt").glob("*.bin"):
        entry.unlink()
    share = root / "usr/share"
    for folder in ("doc", "man", "info", "locale"):
        base = share / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*"), reverse=True):
            if (folder, path.name) in {("doc", "copyright"), ("locale", "locale.alias")}:
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()) and path.parent != share / "man":
                path.rmdir()  # man/manN stay: some packages' scripts expect them
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/aileron-nodoc").write_text(_DOC_EXCLUDES, encoding="utf-8")
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    security = "http://deb.debian.org/debian-security"
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        encoding="utf-8",
    )
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("", encoding="utf-8")
    (root / "etc/hostname").write_text("sandbox\n", encoding="utf-8")


def _chroot_python(root: Path) -> str:
    result = subprocess.run(  # noqa: S603
        ["chroot", str(root), "/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    version = result.stdout.strip()
    if result.returncode != 0 or not re.fullmatch(r"3\.\d+", version):
        raise ImageError(f"the new root filesystem's python3 does not run: {result.stderr.strip()[:200]}")
    return version


# --- the wheels the image installs --------------------------------------------------------------------------


def _collect_wheels(dest: Path, *, python: str, arch: str, progress: Progress) -> None:
    """dest gets a wheel of the installed aileron packages and, for the image's Python, the pinned runtime
    dependencies: from the wheel cache when it has them (no network), else downloaded into it first."""
    aileron = aileron_wheel(dest)
    progress(f"packed {aileron.name} from the installed aileron")
    cache = cache_dir() / "wheels" / f"cp{python.replace('.', '')}-{arch}"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aileron-pins-") as pins:
        constraints = Path(pins) / "constraints.txt"
        constraints.write_text("\n".join(_host_pins()) + "\n", encoding="utf-8")
        requirements = [_pinned(name) for name in RUNTIME_REQUIREMENTS]
        target = [
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python,
            *_platform_options(arch),
            "-c",
            str(constraints),
        ]
        offline = _pip_download([*target, "--no-index", "--find-links", str(cache), "-d", str(dest), *requirements])
        if offline.returncode == 0:
            progress(f"wheels for Python {python} from the cache ({cache})")
            return
        progress(f"downloading wheels for Python {python} ({', '.join(requirements)})")
        online = _pip_download([*target, "-d", str(cache), *requirements])
        if online.returncode != 0:
            raise ImageError(f"could not fetch wheels for the image's Python {python}: {_last_line(online.stderr)}")
        again = _pip_download([*target, "--no-index", "--find-links", str(cache), "-d", str(dest), *requirements])
        if again.returncode != 0:
            raise ImageError(f"the wheel cache {cache} is incomplete: {_last_line(again.stderr)}")


def _platform_options(arch: str) -> list[str]:
    """pip takes the platforms it may choose literally: every manylinux tag trixie's glibc (2.41) satisfies."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(41, 16, -1)]
    tags += [f"manylinux2014_{arch}"] + ([f"manylinux2010_{arch}", f"manylinux1_{arch}"] if arch == "x86_64" else [])
    return [option for tag in tags for option in ("--platform", tag)]


def _pip_download(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603


def _last_line(text: str) -> str:
    """pip's first ERROR line says what is missing; its last one only points at the docs."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING")]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip failed"])[0][:300]


def _pinned(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def _host_pins() -> list[str]:
    """The image gets the versions this machine runs: every installed distribution, pinned."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name and name.lower() != "aileron":
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def _package_files(dist: importlib.metadata.Distribution) -> tuple[list[str], dict[str, bytes]]:
    """The installed aileron packages' files (no tests, no bytecode), by their path in a wheel."""
    top_level = (dist.read_text("top_level.txt") or "").split()
    if not top_level:
        raise ImageError("the installed aileron distribution lists no packages (top_level.txt): reinstall it")
    files: dict[str, bytes] = {}
    for package in top_level:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise ImageError(f"cannot find the installed package {package}: reinstall aileron")
        root = Path(locations[0])
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or "__pycache__" in relative.parts or "tests" in relative.parts:
                continue
            if path.suffix in {".pyc", ".pyo"}:
                continue
            files[f"{package}/{relative.as_posix()}"] = path.read_bytes()
    return top_level, files


def source_digest() -> str:
    """What the base image's aileron is made of: a SHA-256 of the installed packages' files and entry points,
    so `build-base` knows an image of the same version but other code (a checkout being worked on) is stale."""
    dist = importlib.metadata.distribution("aileron")
    digest = hashlib.sha256(_entry_points_text(dist.entry_points).encode())
    for name, data in sorted(_package_files(dist)[1].items()):
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def aileron_wheel(dest: Path) -> Path:
    """A wheel of the aileron packages as installed here (a source checkout, an editable or a wheel install),
    without tests; console scripts and entry points copied from the installed distribution. No build backend
    and no network: the image installs it with `pip --no-index`."""
    dist = importlib.metadata.distribution("aileron")
    version = dist.version
    top_level, files = _package_files(dist)
    info = f"aileron-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: aileron\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: aileron sandbox build-base\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/top_level.txt"] = ("\n".join(top_level) + "\n").encode()
    files[f"{info}/entry_points.txt"] = _entry_points_text(dist.entry_points).encode()
    record_lines = [f"{name},sha256={_urlsafe_digest(data)},{len(data)}" for name, data in files.items()]
    record_lines.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    wheel = dest / f"aileron-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    wheel.write_bytes(buffer.getvalue())
    return wheel


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _entry_points_text(entry_points: Iterable[importlib.metadata.EntryPoint]) -> str:
    groups: dict[str, list[str]] = {}
    for ep in entry_points:
        groups.setdefault(ep.group, []).append(f"{ep.name} = {ep.value}")
    return "".join(f"[{group}]\n" + "\n".join(sorted(lines)) + "\n\n" for group, lines in sorted(groups.items()))


def console_scripts() -> list[str]:
    """The commands the aileron distribution installs: `aileron` and the connector shims."""
    dist = importlib.metadata.distribution("aileron")
    return sorted(ep.name for ep in dist.entry_points if ep.group == "console_scripts")


def _base_dockerfile(rootfs_ref: str, agents: str = "") -> str:
    """The base image's Dockerfile; `agents` are runtime.sandbox.agents' lines, run as root after the rest."""
    commands = " ".join(console_scripts())
    return f"""\
# Generated by `aileron sandbox build-base`. One stage: a second would leave its image behind, untagged, and
# the wheels it spares the final image weigh about 8 MB.
FROM {rootfs_ref}
COPY wheels /tmp/wheels
RUN set -e; \\
    python3 -m venv {VENV}; \\
    {VENV}/bin/pip install --quiet --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl; \\
    {VENV}/bin/pip uninstall --quiet --yes pip; \\
    rm -rf /tmp/wheels; \\
    for command in {commands}; do ln -s {VENV}/bin/$command /usr/local/bin/$command; done; \\
    useradd --uid {AGENT_UID} --user-group --create-home --home-dir {AGENT_HOME} --shell /bin/bash {AGENT_USER}; \\
    install -d -o {AGENT_USER} -g {AGENT_USER} {WORKSPACE}; \\
    install -d /etc/aileron; \\
    aileron --version; \\
    for command in {commands}; do $command --help >/dev/null; done
{agents}ENV LANG=C.UTF-8
USER {AGENT_USER}
WORKDIR {WORKSPACE}
CMD ["bash", "-l"]
"""

"""What every sandbox backend is given and gives back. Pure: no Django."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SandboxSpec:
    """One agent run. Paths in `files` are absolute inside the sandbox; the backend writes them read-only."""

    image: str  # docker: an image reference; netns: a root filesystem folder (or "" for the host's own /)
    argv: list[str]  # the agent command, run under the mediated shell's environment
    env: dict[str, str]  # the runtime contract's environment (HTTPS_PROXY, AILERON_TOKEN, CA paths, ...)
    files: dict[str, bytes] = field(default_factory=dict)  # CA, manifest, gh hosts.yml, shell policy, hint ...
    workdir: Path | None = None  # the project folder, mounted read-write at /workspace
    proxy_socket: Path | None = None  # a host unix socket that reaches the data plane's proxy
    proxy_port_inside: int = 3128  # where the agent's HTTPS_PROXY points, on the sandbox's own loopback
    tty: bool = True
    rows: int = 24
    columns: int = 80
    name: str = ""  # a label (container name suffix, log lines)
    runtime: str = "runc"  # docker: "gvisor" runs the agent under runsc (docker_backend.py)


class Running(Protocol):
    """A started sandbox: its terminal as a byte stream, and its lifetime."""

    def fileno(self) -> int: ...  # select()-able: readable when the agent wrote output

    def read(self, size: int = 65536) -> bytes: ...  # b"" once the agent's terminal closed

    def write(self, data: bytes) -> None: ...  # keystrokes to the agent

    def resize(self, rows: int, columns: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...  # exit code, None if still running

    def stop(self) -> None: ...  # kill and remove; idempotent


class Backend(Protocol):
    name: str

    def available(self) -> str | None: ...  # None if usable here, else a one-line reason

    def start(self, spec: SandboxSpec) -> Running: ...

"""The sandbox backends by name: `docker` and `netns` (and `none`, the explicit unsandboxed mode)."""

from __future__ import annotations

from runtime.sandbox.spec import Backend

NAMES = ("docker", "netns", "none")


class SandboxError(RuntimeError):
    """A sandbox cannot be started; the message is one line that says why and, where it can, what to do."""


def get(name: str) -> Backend:
    """The backend called `name`; imported on demand (the docker SDK is needed only by `docker`)."""
    if name == "docker":
        from runtime.sandbox.docker_backend import DockerBackend

        return DockerBackend()
    if name == "netns":
        from runtime.sandbox.netns_backend import NetnsBackend

        return NetnsBackend()
    if name == "none":
        from runtime.sandbox.local_backend import LocalBackend

        return LocalBackend()
    raise SandboxError(f"no sandbox backend {name!r}: use one of {', '.join(NAMES)}")

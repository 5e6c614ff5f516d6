"""`aileron sandbox`: the agent's sandbox base image (build-base)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from aileron_cli.client import CliError


def _cleanly[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """main.fail_cleanly, with image and devcontainer errors as one line too; main is imported when the command
    runs, since main imports this module while it is loading."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from aileron_cli import main
        from runtime.sandbox.image import ImageError

        @main.fail_cleanly
        def run() -> R:
            try:
                return func(*args, **kwargs)
            except ImageError as exc:
                raise CliError(str(exc)) from None

        return run()

    return wrapper


def _progress() -> Callable[[str], None]:
    """Each step on stderr with the time since the command started."""
    started = time.monotonic()

    def say(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    return say


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group()
def sandbox() -> None:
    """Agent sandboxes: the base image."""


@sandbox.command("build-base")
@click.option("--rebuild", is_flag=True, help="Build again even if this version's image exists.")
@click.option("--refresh-rootfs", is_flag=True, help="Also run debootstrap again instead of using its cache.")
@click.option("--mirror", default=None, help="Debian archive URL [default: this machine's apt mirror].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_cleanly
def build_base(rebuild: bool, refresh_rootfs: bool, mirror: str | None, as_json: bool) -> None:
    """Build aileron/sandbox-base:<version> locally, from Debian packages (no image registry needed).

    debootstrap (as root) makes a minimal Debian root filesystem, cached for later builds; the aileron CLI and
    the connector shims are installed into it without a network. The agent runs as `agent` (uid 1000).
    """
    from runtime.sandbox import image

    result = image.build_base(
        client=image.engine(), progress=_progress(), rebuild=rebuild, refresh_rootfs=refresh_rootfs, mirror=mirror
    )
    if as_json:
        _emit(result.as_dict())
    elif not result.cached:
        click.echo(f"{result.tag}  {result.image_id[:19]}  {result.size / 1e6:.0f} MB  {result.seconds:.1f}s")

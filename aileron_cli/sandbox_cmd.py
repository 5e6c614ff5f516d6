"""`aileron sandbox`: the base image (build-base), a project's .devcontainer (init, show) and its image (build)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from aileron_cli.client import CliError
from aileron_cli.common import fail_cleanly

NETWORKS = ("none", "host", "default")


def _cleanly[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """fail_cleanly, with image and devcontainer errors as one line too."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from runtime.sandbox.backends import SandboxError
        from runtime.sandbox.image import ImageError

        @fail_cleanly
        def run() -> R:
            try:
                return func(*args, **kwargs)
            except (ImageError, SandboxError) as exc:
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
    """Agent sandboxes: the base image, and a project's .devcontainer."""


@sandbox.command("build-base")
@click.option("--rebuild", is_flag=True, help="Build again even if this version's image exists.")
@click.option("--refresh-rootfs", is_flag=True, help="Also run debootstrap again instead of using its cache.")
@click.option("--mirror", default=None, help="Debian archive URL [default: this machine's apt mirror].")
@click.option(
    "--with",
    "with_agents",
    default="",
    metavar="AGENTS",
    help="Agents to install, comma-separated: claude-code, codex, gemini-cli (Node.js comes with the last two).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_cleanly
def build_base(rebuild: bool, refresh_rootfs: bool, mirror: str | None, with_agents: str, as_json: bool) -> None:
    """Build aileron/sandbox-base:<version> locally, from Debian packages (no image registry needed).

    debootstrap (as root) makes a minimal Debian root filesystem, cached for later builds; the aileron CLI and
    the connector shims are installed into it without a network. The agent runs as `agent` (uid 1000). The
    toolbox that gives bring-your-own images the CLI and the shims is made from it too (once per base image).
    `--with claude-code,codex,gemini-cli` adds the agents (versions pinned by this aileron), fetched here with
    npm and installed without a network; they stay in the image until `--rebuild`.
    """
    from runtime.sandbox import image
    from runtime.sandbox.agents import parse_with
    from runtime.sandbox.toolbox import ensure_toolbox

    agents = parse_with(with_agents)
    client = image.engine()
    progress = _progress()
    result = image.build_base(
        client=client,
        progress=progress,
        rebuild=rebuild,
        refresh_rootfs=refresh_rootfs,
        mirror=mirror,
        agents=agents,
    )
    toolbox = ensure_toolbox(client, result.tag, progress=progress)
    if as_json:
        _emit({**result.as_dict(), "toolbox": str(toolbox)})
    elif not result.cached:
        click.echo(f"{result.tag}  {result.image_id[:19]}  {result.size / 1e6:.0f} MB  {result.seconds:.1f}s")


@sandbox.command("init")
@click.option(
    "--dir",
    "project",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    help="The project folder [default: the current one].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing .devcontainer/devcontainer.json or Dockerfile.")
@_cleanly
def init(project: Path, force: bool) -> None:
    """Write .devcontainer/devcontainer.json and a Dockerfile FROM aileron/sandbox-base, with commented snippets
    for common tools (Node.js, Claude Code, Codex, Python tools, ...)."""
    from runtime.sandbox.devcontainer import scaffold

    for path in scaffold(project, force=force):
        click.echo(f"wrote {path}")
    click.echo("Next: uncomment what the agent needs in the Dockerfile, then `aileron sandbox build`.")


def _project_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dir",
        "project",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        default=Path(),
        help="The project folder [default: the current one].",
    )(func)


@sandbox.command("show")
@_project_option
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as JSON.")
@_cleanly
def show(project: Path, as_json: bool) -> None:
    """What `aileron launch` would run for this project, from its devcontainer.json (no Docker needed)."""
    from runtime.sandbox.devcontainer import load_config

    data = load_config(project).as_dict()
    if as_json:
        _emit(data)
        return
    width = max(len(key) for key in data)
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value)
        click.echo(f"{key:<{width}}  {text}")


@sandbox.command("build")
@_project_option
@click.option("--rebuild", is_flag=True, help="Build without the build cache.")
@click.option(
    "--network",
    type=click.Choice(NETWORKS),
    default="none",
    show_default=True,
    help="The build's network: a RUN line that downloads needs host (or default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_cleanly
def build(project: Path, rebuild: bool, network: str, as_json: bool) -> None:
    """Build this project's sandbox image from its devcontainer.json, or check that the image it names is here."""
    from runtime.sandbox.devcontainer import load_config, resolve_image
    from runtime.sandbox.image import engine

    config = load_config(project)
    for key in config.ignored:
        click.echo(f"note: devcontainer key {key} is not applied by aileron", err=True)
    resolved = resolve_image(config, engine(), _progress(), rebuild=rebuild, network=network)
    data = {
        "image": resolved.ref,
        "image_id": resolved.image_id,
        "built": resolved.built,
        "seconds": round(resolved.seconds, 2),
        "tier": config.tier,
        "aileron_version": resolved.aileron_version,
    }
    if as_json:
        _emit(data)
        return
    state = "built" if resolved.built else "ready"
    click.echo(f"{resolved.ref}  {resolved.image_id[:19]}  {state} ({config.tier})")
    sys.stdout.flush()

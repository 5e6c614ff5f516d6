"""The local Docker engine for tests, and the sandbox base image built once per test session.

A test module takes a fixture by importing it under its own name (which also keeps ruff from calling it unused):

    from tests.docker_engine import base_image as base_image, docker_client as docker_client

    def test_it_runs_without_a_network(docker_client, base_image): ...

`docker_available()` says why Docker cannot be used here (None when it can), for `skipif` marks and fixtures of
other modules. Without an engine the tests skip and say why; in CI (AILERON_NO_SKIPS=1) a skip fails the run, so
`.ci/run` installs docker.io and debootstrap and starts dockerd. The base image of this aileron version is reused
when the engine has it (AILERON_TEST_REBUILD_BASE=1 rebuilds it once for the session); building it takes about
a minute the first time (debootstrap), a quarter of that from the cached root filesystem.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from docker import DockerClient

DOCKER_SDK_MISSING = "the docker package is not installed (pip install -c constraints.txt -e '.[dev]')"
# Missing pieces of the machine, not failures of ours: the base image cannot be built here at all.
BUILD_PREREQUISITES = ("debootstrap is not installed", "debootstrap needs root", "this debootstrap does not know")


@cache
def docker_available() -> str | None:
    """None when the Docker engine answers, else a one-line reason to skip (the same for the whole session)."""
    try:
        from runtime.sandbox.image import ImageError, engine
    except ImportError:
        return DOCKER_SDK_MISSING
    try:
        engine(timeout=10).close()
    except ImageError as exc:
        return f"{exc} (apt-get install docker.io; dockerd --bridge=none --iptables=false)"
    return None


def _say(request: pytest.FixtureRequest, message: str) -> None:
    """Show a line while the session runs, past pytest's output capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(message)
        return
    with capture.global_and_fixture_disabled():
        print(message, flush=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    """A client of the local engine, or a skip that says why there is none."""
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    from runtime.sandbox.image import engine

    client = engine()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def base_image(request: pytest.FixtureRequest, docker_client: DockerClient) -> str:
    """The tag of aileron/sandbox-base:<this version>, built the first time a session needs it."""
    from runtime.sandbox.image import ImageError, build_base

    rebuild = os.environ.get("AILERON_TEST_REBUILD_BASE") == "1"
    started = time.monotonic()
    try:
        built = build_base(
            client=docker_client,
            rebuild=rebuild,
            progress=lambda line: _say(request, f"[base image {time.monotonic() - started:6.1f}s] {line}"),
        )
    except ImageError as exc:
        if str(exc).startswith(BUILD_PREREQUISITES):
            pytest.skip(f"the sandbox base image cannot be built here: {exc}")
        pytest.fail(f"building the sandbox base image failed: {exc}")
    verb = "reused" if built.cached else "built"
    _say(request, f"[base image] {verb} {built.tag} ({built.size / 1e6:.0f} MB) in {built.seconds:.1f}s")
    return built.tag


# The real agent CLIs the agents' tests run: built into the base image once per session (their npm packages and
# Node.js are cached on the host, keyed by the pinned versions, so only the first build ever downloads them).
TEST_AGENTS = ("claude-code", "codex", "gemini-cli")


@pytest.fixture(scope="session")
def agents_image(request: pytest.FixtureRequest, docker_client: DockerClient) -> str:
    """The base image with the real agents in it (`aileron sandbox build-base --with ...`)."""
    from runtime.sandbox.image import ImageError, build_base

    started = time.monotonic()
    try:
        built = build_base(
            client=docker_client,
            agents=TEST_AGENTS,
            progress=lambda line: _say(request, f"[agents image {time.monotonic() - started:6.1f}s] {line}"),
        )
    except ImageError as exc:
        if str(exc).startswith((*BUILD_PREREQUISITES, "npm is not installed")):
            pytest.skip(f"the sandbox image with the agents cannot be built here: {exc}")
        pytest.fail(f"building the sandbox image with the agents failed: {exc}")
    verb = "reused" if built.cached else "built"
    _say(request, f"[agents image] {verb} {built.tag} ({built.size / 1e6:.0f} MB) in {built.seconds:.1f}s")
    return built.tag

"""The sandbox base image and a project's devcontainer image, built and run by a real Docker engine.

The base image is built once per test session (tests/docker_engine.py), or reused when this version's exists.
Every container here runs with no network: what the image holds must work offline.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.sandbox import image
from runtime.sandbox.devcontainer import DevcontainerError, load_config, resolve_image
from runtime.sandbox.image import ImageError, aileron_version, build_base
from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_client as docker_client

pytestmark = [pytest.mark.timeout(900)]

AILERON = Path(sys.executable).parent / "aileron"
BYO_TAG = "aileron-test/byo:1"
TEAM_TAG = "aileron-test/team-image:1"


def run_in(client, ref: str, script: str, user: str | None = None) -> str:
    """bash -lc SCRIPT in a fresh container with no network; its output, or the failure with what it printed."""
    container = client.containers.run(
        ref, ["bash", "-lc", script], network_mode="none", detach=True, **({"user": user} if user else {})
    )
    try:
        code = container.wait(timeout=120)["StatusCode"]
        output: str = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert code == 0, output
    return output


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AILERON), *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


@pytest.fixture
def made_images(docker_client) -> Iterator[list[str]]:
    """Tags a test creates, removed afterwards (the image goes when its last tag does)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            docker_client.images.remove(tag, noprune=False)
        except Exception:  # noqa: S110 (already gone, or still used by an image another test built FROM it)
            pass


def project(tmp_path: Path, devcontainer: dict[str, Any] | str | None, dockerfile: str | None = None) -> Path:
    folder = tmp_path / "project"
    (folder / ".devcontainer").mkdir(parents=True)
    if devcontainer is not None:
        text = devcontainer if isinstance(devcontainer, str) else json.dumps(devcontainer)
        (folder / ".devcontainer/devcontainer.json").write_text(text)
    if dockerfile is not None:
        (folder / ".devcontainer/Dockerfile").write_text(dockerfile)
    return folder


# --- the base image -----------------------------------------------------------------------------------------


def test_the_base_image_runs_the_cli_and_the_shims_as_agent_with_no_network(docker_client, base_image):
    output = run_in(
        docker_client,
        base_image,
        "aileron --help && github --help && stripe --help && linear --help && slack --help"
        " && id agent && id -un && python3 --version && echo HOME=$HOME PWD=$PWD && gh --version && git --version"
        " && curl --version",
    )
    assert "Usage: aileron [OPTIONS] COMMAND [ARGS]..." in output
    for shim in ("github", "stripe", "linear", "slack"):
        assert f"usage: {shim} ACTION" in output
    assert "uid=1000(agent) gid=1000(agent) groups=1000(agent)\nagent\n" in output
    assert "Python 3.13." in output
    assert "HOME=/home/agent PWD=/workspace" in output
    assert "gh version" in output and "git version" in output and "curl 8." in output


def test_the_base_image_holds_no_django_and_no_pip_in_the_aileron_venv(docker_client, base_image):
    output = run_in(
        docker_client,
        base_image,
        "readlink -f $(command -v aileron); /opt/aileron/bin/python -c 'import django' 2>&1 | tail -1;"
        " ls /opt/aileron/bin | grep -c '^pip' || true; aileron --version",
    )
    assert "/opt/aileron/bin/aileron" in output
    assert "ModuleNotFoundError: No module named 'django'" in output
    assert "\n0\n" in output
    assert f"aileron, version {aileron_version()}" in output


def test_a_shim_builds_its_request_offline_and_fails_in_one_line_without_a_network(docker_client, base_image):
    container = docker_client.containers.run(
        base_image,
        ["github", "create-issue", "--repo", "o/r", "--title", "x"],
        network_mode="none",
        detach=True,
    )
    try:
        code = container.wait(timeout=60)["StatusCode"]
        output = container.logs().decode().strip()
    finally:
        container.remove(force=True)
    assert code != 0
    assert output.startswith("github: POST https://api.github.com/repos/o/r/issues failed:"), output
    assert len(output.splitlines()) == 1, output


def test_the_base_image_is_labelled_and_tagged_latest(docker_client, base_image):
    found = docker_client.images.get(base_image)
    assert found.labels[image.LABEL_VERSION] == aileron_version()
    assert found.labels[image.LABEL_KIND] == "sandbox-base"
    assert found.labels[image.LABEL_PYTHON] == "3.13"
    assert docker_client.images.get("aileron/sandbox-base:latest").id == found.id
    assert found.attrs["Config"]["User"] == "agent"


def test_build_base_reuses_this_versions_image_and_says_so(docker_client, base_image):
    started = time.monotonic()
    result = cli("sandbox", "build-base", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["cached"] is True
    assert data["tag"] == base_image
    assert data["image_id"] == docker_client.images.get(base_image).id
    assert data["size"] > 50_000_000
    assert "is already built" in result.stderr
    assert (Path(data["toolbox"]) / "bin" / "aileron").is_file()
    assert time.monotonic() - started < 10


def test_a_rebuild_replaces_the_image_offline_and_leaves_the_old_one_nowhere(docker_client, base_image):
    """From the cached root filesystem and wheels: no debootstrap and no download (the session built or found
    both), so this is also what a rebuild costs."""
    from docker.errors import ImageNotFound

    old_id = docker_client.images.get(base_image).id
    lines: list[str] = []
    rebuilt = build_base(client=docker_client, progress=lines.append, rebuild=True)
    assert (rebuilt.tag, rebuilt.cached) == (base_image, False)
    assert rebuilt.image_id != old_id
    assert not [line for line in lines if line.startswith(("debootstrap", "downloading"))], lines
    assert [name for name, _ in rebuilt.steps] == ["debian root filesystem", "wheels", "docker build"]
    assert docker_client.images.get("aileron/sandbox-base:latest").id == rebuilt.image_id
    try:
        leftover = docker_client.images.get(old_id)
    except ImageNotFound:
        leftover = None
    if leftover is not None:  # only while another test's image built FROM it, or its sandbox, still needs it
        assert leftover.tags == []
        children = [i for i in docker_client.images.list(all=True) if i.attrs.get("Parent") == old_id]
        users = [c for c in docker_client.containers.list(all=True) if c.attrs.get("Image") == old_id]
        assert children or users, "left behind"
    assert (
        run_in(docker_client, base_image, "id -un; aileron --version")
        == f"agent\naileron, version {aileron_version()}\n"
    )


def test_build_base_without_debootstrap_or_root_fails_in_one_line(docker_client, base_image, monkeypatch, tmp_path):
    monkeypatch.setenv("AILERON_CACHE_DIR", str(tmp_path))  # no cached root filesystem: debootstrap is needed
    monkeypatch.setattr("runtime.sandbox.image.shutil.which", lambda name: None)
    with pytest.raises(ImageError) as caught:
        build_base(client=docker_client, progress=lambda line: None, refresh_rootfs=True)
    assert str(caught.value) == "debootstrap is not installed: apt-get install debootstrap"
    monkeypatch.undo()
    monkeypatch.setenv("AILERON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("runtime.sandbox.image.os.geteuid", lambda: 1000)
    with pytest.raises(ImageError, match=r"^debootstrap needs root: run `sudo aileron sandbox build-base`"):
        build_base(client=docker_client, progress=lambda line: None, refresh_rootfs=True)
    assert docker_client.images.get(base_image)  # nothing was removed on the way


def test_the_toolbox_is_made_once_per_base_image_as_the_user_and_replaces_stale_ones(
    docker_client, base_image, tmp_path, monkeypatch
):
    """What gives BYO images the CLI and the shims (run in one in test_sandbox_e2e): made into the cache by a
    one-shot container, reused afterwards, and the toolbox of a base image that is gone is removed."""
    from runtime.sandbox.backends import SandboxError
    from runtime.sandbox.image import console_scripts
    from runtime.sandbox.toolbox import COMPLETE, ensure_toolbox

    monkeypatch.setenv("AILERON_CACHE_DIR", str(tmp_path))
    stale = tmp_path / "sandbox" / "toolbox" / "0123456789ab-r1"
    stale.mkdir(parents=True)
    (stale / COMPLETE).write_text(f"aileron/sandbox-base:0.1 sha256:{'0' * 64}\n")
    killed, making = stale.parent / ".making-killed", stale.parent / ".making-now"  # a crash's, and in progress
    killed.mkdir()
    making.mkdir()
    os.utime(killed, (time.time() - 3600, time.time() - 3600))
    lines: list[str] = []
    folder = ensure_toolbox(docker_client, base_image, progress=lines.append)
    assert lines[0].startswith(f"making the aileron toolbox for any image from {base_image}"), lines
    assert not stale.exists() and not killed.exists() and making.exists()
    making.rmdir()
    assert sorted(p.name for p in (folder / "bin").iterdir()) == console_scripts()
    assert (folder / "bin" / "github").stat().st_mode & 0o755 == 0o755
    assert folder.stat().st_uid == os.getuid() and (folder / "site-packages" / "aileron_cli").is_dir()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch folder left behind
    again: list[str] = []
    assert ensure_toolbox(docker_client, base_image, progress=again.append) == folder and again == []
    with pytest.raises(SandboxError, match=r"^the base image aileron-test/absent:1 is not built"):
        ensure_toolbox(docker_client, "aileron-test/absent:1")


def test_an_unreachable_engine_is_one_line(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    result = subprocess.run(
        [str(AILERON), "sandbox", "build-base"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"aileron: the Docker engine is not reachable: no socket at {tmp_path}/docker.sock "
        "(is dockerd running? start it or set DOCKER_HOST)\n"
    )


# --- devcontainer variants: none, build, image, BYO image, invalid ------------------------------------------


def test_without_a_devcontainer_the_base_image_runs(docker_client, base_image, tmp_path):
    config = load_config(project(tmp_path, None))
    resolved = resolve_image(config, docker_client, lambda line: None)
    assert (resolved.ref, resolved.built, resolved.aileron_version) == (base_image, False, aileron_version())
    assert resolved.image_id == docker_client.images.get(base_image).id


def test_a_dockerfile_from_the_base_is_built_offline_once_and_again_when_its_context_changes(
    docker_client, base_image, tmp_path, made_images
):
    folder = project(
        tmp_path,
        '{"build": {"dockerfile": "Dockerfile", "args": {"GREETING": "hello"}}, // a comment\n}',
        f"FROM {base_image}\nARG GREETING\nUSER root\nCOPY note.txt /etc/note.txt\n"
        'RUN echo "$GREETING from the build" > /etc/greeting\nUSER agent\n',
    )
    (folder / ".devcontainer/note.txt").write_text("first\n")
    config = load_config(folder)
    made_images.append(config.image)
    lines: list[str] = []
    first = resolve_image(config, docker_client, lines.append)
    assert first.built is True and first.ref == config.image
    assert any(line.startswith("Step ") for line in lines)
    output = run_in(docker_client, config.image, "cat /etc/note.txt /etc/greeting; id -un; aileron --version")
    assert output.startswith("first\nhello from the build\nagent\n")

    again = resolve_image(config, docker_client, lines.append)
    assert (again.built, again.image_id) == (False, first.image_id)

    time.sleep(0.01)
    (folder / ".devcontainer/note.txt").write_text("second\n")
    changed = resolve_image(config, docker_client, lines.append)
    assert changed.built is True and changed.image_id != first.image_id
    assert run_in(docker_client, config.image, "cat /etc/note.txt") == "second\n"
    assert first.image_id not in {i.id for i in docker_client.images.list(all=True)}, "the old build was left behind"


def test_a_build_step_that_needs_the_network_fails_naming_the_step_and_showing_its_output(
    docker_client, base_image, tmp_path, made_images
):
    folder = project(
        tmp_path, {"build": {"dockerfile": "Dockerfile"}}, f"FROM {base_image}\nRUN curl -sS https://pypi.org/\n"
    )
    config = load_config(folder)
    made_images.append(config.image)
    with pytest.raises(ImageError) as caught:
        resolve_image(config, docker_client, lambda line: None)
    first, *rest = str(caught.value).split("\n")
    assert first.startswith(f"building {config.image} failed at Step 2/3 : RUN curl -sS https://pypi.org/:")
    assert rest == ["  its last line of output:", "  | curl: (6) Could not resolve host: pypi.org"]


SLOW_FAILING_STEP = (
    "RUN for i in $(seq 1 40); do echo \"counting $i\"; sleep 0.1; done; echo 'giving up now' >&2; exit 3"
)


def test_sandbox_build_streams_a_slow_step_live_and_shows_the_failing_steps_last_30_lines(
    docker_client, base_image, tmp_path, made_images
):
    folder = project(tmp_path, {"build": {"dockerfile": "Dockerfile"}}, f"FROM {base_image}\n{SLOW_FAILING_STEP}\n")
    made_images.append(load_config(folder).image)
    process = subprocess.Popen(  # noqa: S603
        [str(AILERON), "sandbox", "build", "--dir", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    arrivals: list[tuple[float, str]] = []
    for line in process.stderr:  # read as the CLI writes: each line with the moment it arrived
        arrivals.append((time.monotonic(), line.rstrip("\n")))
    process.wait(timeout=300)
    ended = time.monotonic()
    text = "\n".join(line for _, line in arrivals)

    assert process.returncode == 1, text
    first_count = next(at for at, line in arrivals if line.endswith("  | counting 1"))
    last_count = next(at for at, line in arrivals if line.endswith("  | counting 40"))
    assert last_count - first_count > 2.5, "the step's lines arrived together, not while it ran"
    assert ended - first_count > 2.5

    error_at = next(i for i, (_, line) in enumerate(arrivals) if line.startswith("aileron: building "))
    error = [line for _, line in arrivals[error_at:]]
    assert error[0].startswith(
        f"aileron: building {load_config(folder).image} failed at Step 2/3 : {SLOW_FAILING_STEP}: "
    ), error[0]
    assert error[0].endswith("returned a non-zero code: 3")
    assert error[1:] == [
        "  its last 30 lines of output:",
        *[f"  | counting {i}" for i in range(12, 41)],
        "  | giving up now",
    ]


def test_a_dockerfile_from_an_image_that_is_not_here_is_refused_before_building(docker_client, tmp_path):
    folder = project(tmp_path, {"build": {"dockerfile": "Dockerfile"}}, "FROM debian:never-pulled-here\n")
    with pytest.raises(ImageError) as caught:
        resolve_image(load_config(folder), docker_client, lambda line: None)
    assert str(caught.value) == (
        "Dockerfile is FROM debian:never-pulled-here: image debian:never-pulled-here is not available locally "
        "(aileron never pulls images): pull, build or load it first"
    )


def test_image_runs_a_local_image_built_from_the_base(docker_client, base_image, tmp_path, made_images):
    docker_client.images.get(base_image).tag(TEAM_TAG)
    made_images.append(TEAM_TAG)
    config = load_config(project(tmp_path, {"image": TEAM_TAG}))
    resolved = resolve_image(config, docker_client, lambda line: None)
    assert (config.tier, config.byo, resolved.ref, resolved.built) == ("image", False, TEAM_TAG, False)
    assert resolved.aileron_version == aileron_version()
    assert run_in(docker_client, TEAM_TAG, "id -un") == "agent\n"


def test_image_that_is_not_here_is_one_line(docker_client, tmp_path):
    config = load_config(project(tmp_path, {"image": "aileron-test/absent:1"}))
    with pytest.raises(ImageError) as caught:
        resolve_image(config, docker_client, lambda line: None)
    assert str(caught.value) == (
        "image aileron-test/absent:1 is not available locally (aileron never pulls images): pull, build or load "
        "it first"
    )


@pytest.fixture
def foreign_image(docker_client, made_images) -> str:
    """An image that has nothing of aileron: `docker import` of a root filesystem holding one file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"not an aileron image\n"
        member = tarfile.TarInfo("etc/motd")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    docker_client.api.import_image_from_data(buffer.getvalue(), repository=BYO_TAG.split(":")[0], tag="1")
    made_images.append(BYO_TAG)
    return BYO_TAG


def test_a_byo_image_is_used_as_supplied_and_flagged(docker_client, foreign_image, tmp_path):
    config = load_config(project(tmp_path, {"customizations": {"aileron": {"image": foreign_image}}}))
    assert (config.tier, config.byo, config.image) == ("byo", True, foreign_image)
    resolved = resolve_image(config, docker_client, lambda line: None)
    assert (resolved.ref, resolved.built, resolved.aileron_version) == (foreign_image, False, None)
    assert resolved.image_id == docker_client.images.get(foreign_image).id


def test_an_image_not_from_the_base_must_be_declared_byo(docker_client, foreign_image, tmp_path):
    config = load_config(project(tmp_path, {"image": foreign_image}))
    with pytest.raises(ImageError) as caught:
        resolve_image(config, docker_client, lambda line: None)
    assert str(caught.value) == (
        f"image {foreign_image} is not built FROM aileron/sandbox-base (it has no org.aileron.version label): "
        "name it in customizations.aileron.image to use it as a bring-your-own image"
    )


def test_an_invalid_devcontainer_is_one_line_from_the_cli_and_builds_nothing(docker_client, tmp_path):
    folder = project(tmp_path, {"customizations": {"aileron": {"approval_surface": "phone"}}})
    with pytest.raises(DevcontainerError):
        load_config(folder)
    images_before = {i.id for i in docker_client.images.list()}
    result = cli("sandbox", "build", "--dir", str(folder))
    assert result.returncode == 1
    assert result.stderr == (
        f"aileron: {folder}/.devcontainer/devcontainer.json: customizations.aileron.approval_surface: must be one "
        'of terminal, web, both (got "phone")\n'
    )
    assert result.stdout == ""
    assert {i.id for i in docker_client.images.list()} == images_before


# --- the CLI end to end: init, show, build ------------------------------------------------------------------


def test_init_then_build_gives_an_image_from_the_base_that_runs_the_agent(
    docker_client, base_image, tmp_path, made_images
):
    folder = tmp_path / "fresh"
    folder.mkdir()
    result = cli("sandbox", "init", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"wrote {folder}/.devcontainer/devcontainer.json\nwrote {folder}/.devcontainer/Dockerfile\n"
    )
    refused = cli("sandbox", "init", "--dir", str(folder))
    assert (refused.returncode, refused.stderr) == (
        1,
        f"aileron: {folder}/.devcontainer/devcontainer.json already exists: --force overwrites it\n",
    )
    shown = json.loads(cli("sandbox", "show", "--json", "--dir", str(folder)).stdout)
    assert (shown["tier"], shown["mediation"], shown["approval_surface"]) == ("build", "default", "both")
    made_images.append(shown["image"])

    built = cli("sandbox", "build", "--json", "--dir", str(folder))
    assert built.returncode == 0, built.stderr
    data = json.loads(built.stdout)
    assert (data["image"], data["built"], data["tier"], data["aileron_version"]) == (
        shown["image"],
        True,
        "build",
        aileron_version(),
    )
    assert "Step 2/" in built.stderr
    assert run_in(docker_client, data["image"], "id -un; github --help | head -1") == (
        "agent\nusage: github ACTION [--ARG VALUE ...]\n"
    )
    again = json.loads(cli("sandbox", "build", "--json", "--dir", str(folder)).stdout)
    assert (again["built"], again["image_id"]) == (False, data["image_id"])

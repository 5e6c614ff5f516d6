"""The base image's pure parts: its name, the Debian mirror, the wheel of the installed aileron, the Dockerfile."""

from __future__ import annotations

import base64
import hashlib
import zipfile

import pytest

from runtime.sandbox import image
from runtime.sandbox.image import aileron_version, aileron_wheel, base_image_tag, console_scripts, debian_mirror


def test_the_base_image_is_named_after_the_aileron_version():
    assert base_image_tag() == f"aileron/sandbox-base:{aileron_version()}"
    assert base_image_tag("4.1.0+local.2") == "aileron/sandbox-base:4.1.0-local.2"


def test_the_cache_follows_aileron_cache_dir_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("AILERON_CACHE_DIR", str(tmp_path / "a"))
    assert image.cache_dir() == tmp_path / "a" / "sandbox"
    monkeypatch.delenv("AILERON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert image.cache_dir() == tmp_path / "x" / "aileron" / "sandbox"


def write_sources(tmp_path, sources_list: str = "", parts: dict[str, str] | None = None):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (apt / "sources.list.d" / name).write_text(text)
    return apt


def test_the_mirror_comes_from_a_deb822_source_skipping_security_and_third_parties(tmp_path, monkeypatch):
    monkeypatch.delenv("AILERON_DEBIAN_MIRROR", raising=False)
    apt = write_sources(
        tmp_path,
        parts={
            "aaa-nodesource.sources": "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n",
            "debian.sources": (
                "Types: deb\nURIs: http://debian-security.example/debian-security\nSuites: bookworm-security\n\n"
                "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
            ),
        },
    )
    assert debian_mirror(apt) == "http://mirror.example/debian"


def test_the_mirror_comes_from_a_one_line_source_with_options(tmp_path, monkeypatch):
    monkeypatch.delenv("AILERON_DEBIAN_MIRROR", raising=False)
    apt = write_sources(tmp_path, "# old\ndeb [arch=amd64] http://ftp.example.org/debian bookworm main\n")
    assert debian_mirror(apt) == "http://ftp.example.org/debian"


def test_without_a_debian_source_the_mirror_is_deb_debian_org_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("AILERON_DEBIAN_MIRROR", raising=False)
    apt = write_sources(tmp_path, "deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert debian_mirror(apt) == "http://deb.debian.org/debian"
    monkeypatch.setenv("AILERON_DEBIAN_MIRROR", "http://apt-cache.local:3142/debian/")
    assert debian_mirror(apt) == "http://apt-cache.local:3142/debian"


def test_the_wheel_holds_the_installed_packages_and_commands_but_no_tests(tmp_path):
    wheel = aileron_wheel(tmp_path)
    assert wheel.name == f"aileron-{aileron_version()}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"aileron-{aileron_version()}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        record = archive.read(f"{info}/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("/RECORD"):
                continue
            data = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(data)), name
    assert {"aileron_cli/main.py", "connectors/shim.py", "vaults/crypto.py", "aileron_site/__init__.py"} <= names
    assert "connectors/builtin/github/connector.toml" in names
    assert "runtime/sandbox/templates/Dockerfile" in names
    assert not [n for n in names if "/tests/" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert "[console_scripts]\naileron = aileron_cli.main:main\n" in entry_points
    for shim in ("github", "linear", "slack", "stripe"):
        assert f"{shim} = connectors.shim:{shim}" in entry_points
    assert len(record) == len(names)


def test_the_image_links_every_installed_command_and_runs_the_agent_as_uid_1000():
    assert {"aileron", "github", "linear", "slack", "stripe"} <= set(console_scripts())
    text = image._base_dockerfile("aileron/sandbox-rootfs:trixie-x")
    assert "useradd --uid 1000 --user-group --create-home --home-dir /home/agent --shell /bin/bash agent" in text
    assert "--no-index" in text and "pip uninstall" in text
    assert text.rstrip().endswith('USER agent\nWORKDIR /workspace\nCMD ["bash", "-l"]')


def test_wheels_may_come_from_any_manylinux_trixie_can_run():
    options = image._platform_options("x86_64")
    platforms = options[1::2]
    assert set(options[0::2]) == {"--platform"}
    assert {"manylinux_2_41_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"} <= set(
        platforms
    )
    assert "manylinux_2_42_x86_64" not in platforms
    assert all(p.endswith("aarch64") for p in image._platform_options("aarch64")[1::2])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("WARNING: x\nERROR: No matching distribution found for cffi==9\nERROR: see docs\n", "ERROR: No matching"),
        ("something odd\n", "something odd"),
        ("", "pip failed"),
    ],
)
def test_a_pip_failure_is_told_by_its_first_error_line(text, line):
    assert image._last_line(text).startswith(line)

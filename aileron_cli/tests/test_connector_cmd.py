"""`aileron connector import` and `install`: a connector for another's host is one line, and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from aileron_cli.main import cli
from connectors.registry import BUILTIN

GITHUB_SPEC = BUILTIN / "github" / "openapi.json"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AILERON_HOME", str(tmp_path))
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["connector", *args])
    return result.exit_code, result.output


def installed_names() -> list[str]:
    code, output = run("list", "--json")
    assert code == 0, output
    return [c["name"] for c in json.loads(output)]


def test_importing_a_second_github_is_refused_in_one_line_with_the_way_out(home: Path) -> None:
    before = installed_names()
    code, output = run("import", str(GITHUB_SPEC), "--name", "ghfull", "--host", "API.GitHub.com.", "--auth", "bearer")
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("aileron: ghfull would serve api.github.com, which the github connector (built in)")
    assert "`--name github`" in lines[0] and "give it a host no other connector serves" in lines[0]
    assert installed_names() == before


def test_the_ways_out_work(home: Path) -> None:
    code, output = run("import", str(GITHUB_SPEC), "--name", "ghfull", "--host", "ghe.example.com", "--auth", "bearer")
    assert (code, output.strip()) == (0, "Imported ghfull: 12 actions (6 need approval).")
    code, output = run("import", str(GITHUB_SPEC), "--name", "github", "--host", "api.github.com", "--auth", "bearer")
    assert code == 0, output
    assert installed_names().count("github") == 1


def test_installing_a_package_for_another_connectors_host_is_refused_too(home: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(BUILTIN / "stripe", package)
    toml = package / "connector.toml"
    toml.write_text(toml.read_text().replace('name = "stripe"', 'name = "payments"'))
    code, output = run("install", str(package))
    assert code == 2
    assert output.strip().startswith("aileron: payments would serve api.stripe.com, which the stripe connector")
    assert "payments" not in installed_names()

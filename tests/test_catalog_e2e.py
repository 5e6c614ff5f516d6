"""Names checked against the installed catalog, through a real service: a second connector for api.github.com is
refused at import and the built-in github keeps working; typos in policies and secrets are refused with the
closest names."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.registry import BUILTIN
from tests.proxy_world import World, proxy_world
from tests.service import BIN

GITHUB_SPEC = BUILTIN / "github" / "openapi.json"


def aileron(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "aileron"), *args],
        env=env,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=90,
    )


def import_ghfull(home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AILERON_HOME": str(home)}
    return aileron(
        env, "connector", "import", str(GITHUB_SPEC), "--name", "ghfull", "--host", "api.github.com", "--auth", "bearer"
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, subprocess.CompletedProcess[str]]]:
    """The user first tries to import the whole GitHub description as `ghfull` on api.github.com, then runs."""
    folder = tmp_path_factory.mktemp("catalog")
    refused = import_ghfull(folder / "home")
    with proxy_world(folder) as w:
        yield w, refused


def test_a_second_github_connector_is_refused_at_import_and_github_still_works(
    world: tuple[World, subprocess.CompletedProcess[str]],
) -> None:
    w, refused = world
    assert refused.returncode == 2, refused.stdout
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("aileron: ghfull would serve api.github.com, which the github connector (built in)")
    assert "GET /repos/{owner}/{repo} is github.get-repo and ghfull.repos-get" in line
    assert "`--name github`" in line
    assert not (w.service.home / "connectors" / "ghfull").exists()
    again = import_ghfull(w.service.home)  # while the service runs: the same answer
    assert again.returncode == 2 and again.stderr == refused.stderr
    with w.api() as api:
        listed = {c["name"]: c for c in api.get(f"/api/v1/orgs/{w.org_id}/connectors/").json()}
    assert "ghfull" not in listed and listed["github"]["hosts"] == ["api.github.com"]

    mark = len(w.upstream.received)
    with httpx.Client(proxy=w.proxy_url, verify=w.tls()) as client:
        reply = client.get("https://api.github.com/repos/acme/app", headers={"Authorization": "Bearer agent-made-up"})
    assert reply.status_code == 200, reply.text
    [got] = w.received_since(mark)
    assert (got.method, got.path) == ("GET", "/repos/acme/app")
    assert got.headers["authorization"] == f"Bearer {w.canaries['github'].decode()}"
    records = w.audit_wait(
        lambda rs: any(r["upstream_status"] == 200 and r["args"].get("repo") == "app" for r in rs),
        action="github.get-repo",
    )
    record = next(r for r in records if r["upstream_status"] == 200 and r["args"].get("repo") == "app")
    assert (record["decision"], record["connector"], record["session_id"]) == ("allow", "github", w.session_id)


def test_a_policy_and_a_secret_naming_what_is_not_installed_are_refused_with_the_closest(
    world: tuple[World, subprocess.CompletedProcess[str]],
) -> None:
    w, _ = world
    cedar = 'forbid(principal, action == Aileron::Action::"github.create-isue", resource);'
    with w.api() as api:
        policy = api.post(f"/api/v1/orgs/{w.org_id}/policies/", json={"name": "no issues", "cedar": cedar})
        rule = api.post(f"/api/v1/orgs/{w.org_id}/approval-rules/", json={"action": "github.create-isue"})
        assert api.get(f"/api/v1/orgs/{w.org_id}/policies/").json()["results"] == []
    assert policy.status_code == 400 and policy.headers["content-type"] == "application/problem+json"
    assert policy.json()["suggestions"] == ["github.create-issue"]
    assert rule.status_code == 400 and rule.json()["suggestions"] == ["github.create-issue"]

    typo = aileron(w.service.env, "secret", "add", "gh2", "--connector", "githb", stdin=b"ghp_typo_value\n")
    assert typo.returncode == 1
    assert typo.stderr.strip() == "aileron: No connector named 'githb' is installed. Did you mean github? (400)"
    listed = aileron(w.service.env, "secret", "list", "--json")
    assert "gh2" not in {s["name"] for s in json.loads(listed.stdout)}

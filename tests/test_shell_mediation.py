"""The mediated shell end to end: an organization's shell policy, set through the API, refuses a command in a
real bash started as `aileron launch` starts it, and the refusal lands in the audit log through the real proxy."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.sandbox.shell import shell_argv, shell_files
from tests.proxy_world import World, cli, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("shell")) as w:
        yield w


def test_a_denied_command_is_refused_and_audited_with_the_allowed_ones(world: World, tmp_path: Path) -> None:
    with world.api() as api:
        saved = api.put(
            f"/api/v1/orgs/{world.org_id}/shell-policy/",
            json={"mode": "enforce", "deny": ["rm -rf *", "curl *"], "record_allowed": True},
        )
    assert saved.status_code == 200, saved.text
    folder = tmp_path / "shell"
    folder.mkdir()
    for path, content in shell_files(saved.json(), session_id=world.session_id, folder=str(folder)).items():
        if path.startswith(str(folder)):
            Path(path).write_bytes(content)
    work = tmp_path / "workspace"
    (work / "precious").mkdir(parents=True)
    time.sleep(1.2)  # the proxy caches a session's context for a second (AILERON_SESSION_CACHE_SECONDS=1)

    result = subprocess.run(
        shell_argv(["bash", "-c", "touch made-by-agent; rm -rf precious; touch never"], folder=str(folder)),
        cwd=work,
        env=world.agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    world.outputs["mediated bash stderr"] = result.stderr.encode()

    assert result.returncode == 126
    assert "aileron: blocked by your organization's shell policy: rm -rf *" in result.stderr
    assert "could not be reported" not in result.stderr
    assert (work / "precious").is_dir() and (work / "made-by-agent").exists() and not (work / "never").exists()
    records = world.audit_wait(
        lambda rs: {r["decision"] for r in rs if r["kind"] == "shell"} >= {"allow", "deny"},
        action="shell.command",
    )
    denied = next(r for r in records if r["decision"] == "deny")
    assert denied["args"] == {"command": "rm -rf precious", "cwd": str(work)}
    assert denied["reason"] == "blocked by the shell policy: deny pattern 'rm -rf *'"
    assert denied["session_id"] == world.session_id
    assert denied["user"]["email"] == "alice@example.com"
    allowed = next(r for r in records if r["decision"] == "allow")
    assert allowed["args"]["command"] == "touch made-by-agent"
    assert allowed["reason"] == "allowed by the shell policy"

    # The same records through `aileron audit query`, as a person reads them.
    queried = json.loads(cli(world.service.env, "audit", "query", "--action", "shell.command", "--json").stdout)
    assert {"rm -rf precious", "touch made-by-agent"} <= {r["args"]["command"] for r in queried}

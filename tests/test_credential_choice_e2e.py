"""Which credential a request gets when several could serve it, through a real service: the most specific
binding wins (a pinned one, then one bound to the action, then project, team, shared and personal vaults), and
`aileron secret list` says which one each action would use."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy_world import World, cli, proxy_world, session_ca
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
TEAM = b"ghp_team_vault_value_000000000000000000"
ISSUES = b"ghp_issue_bot_value_0000000000000000000"
PROJECT = b"ghp_project_value_000000000000000000000"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("choice")) as w:
        env = w.service.env
        cli(env, "vault", "create", "Everyone keys", "--team", "everyone")
        cli(env, "secret", "add", "gh-team", "--connector", "github", "--vault", "Everyone keys", stdin=TEAM)
        cli(env, "secret", "add", "gh-issues", "--connector", "github", "--action", "github.create-issue", stdin=ISSUES)
        with w.api() as api:
            made = api.post(f"/api/v1/orgs/{w.org_id}/projects/", json={"name": "App", "slug": "app"})
            assert made.status_code == 201, made.text
        cli(env, "vault", "create", "App keys", "--project", "app")
        cli(env, "secret", "add", "gh-app", "--connector", "github", "--vault", "App keys", stdin=PROJECT)
        yield w


def sent_with(world: World, token: str, method: str, url: str, **kwargs: object) -> str:
    """The Authorization the fake GitHub received for one request of the session TOKEN."""
    ca = world.service.home.parent / f"ca-{token[-8:]}.pem"
    ca.write_bytes(session_ca(world.service.proxy_port, token))
    mark = len(world.upstream.received)
    proxy = f"http://aileron:{token}@127.0.0.1:{world.service.proxy_port}"
    with httpx.Client(proxy=proxy, verify=str(ca), timeout=30) as agent:
        reply = agent.request(method, url, **kwargs)  # type: ignore[arg-type]
    assert reply.status_code < 300, reply.text
    [got] = world.received_since(mark)
    return str(got.headers["authorization"])


def session(world: World, *options: str) -> str:
    return str(json.loads(cli(world.service.env, "session", "start", *options, "--json").stdout)["token"])


def test_the_most_specific_credential_wins_and_secret_list_says_which(world: World) -> None:
    repo, issues = "https://api.github.com/repos/acme/app", "https://api.github.com/repos/acme/app/issues"
    plain = session(world)
    assert sent_with(world, plain, "GET", repo) == f"Bearer {TEAM.decode()}"  # team vault over personal
    assert sent_with(world, plain, "POST", issues, json={"title": "x"}) == f"Bearer {ISSUES.decode()}"  # action
    for_app = session(world, "--project", "app")
    assert sent_with(world, for_app, "GET", repo) == f"Bearer {PROJECT.decode()}"  # project over team
    pinned = session(world, "--project", "app", "--credential", "github-key")
    personal = f"Bearer {world.canaries['github'].decode()}"
    assert sent_with(world, pinned, "GET", repo) == personal  # a pin over everything
    assert sent_with(world, pinned, "POST", issues, json={"title": "y"}) == personal

    listed = {r["name"]: r["used_for"] for r in json.loads(cli(world.service.env, "secret", "list", "--json").stdout)}
    assert listed["gh-team"] == ["github (default)"]
    assert listed["gh-issues"] == ["github.create-issue"]
    assert listed["github-key"] == [] and listed["gh-app"] == []
    for_project = json.loads(cli(world.service.env, "secret", "list", "--project", "app", "--json").stdout)
    assert {r["name"]: r["used_for"] for r in for_project}["gh-app"] == ["github (default)"]
    unknown = subprocess.run(
        [str(BIN / "aileron"), "session", "start", "--credential", "nope"],
        env=world.service.env,
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert unknown.returncode == 2 and b"no credential 'nope'" in unknown.stderr, unknown.stderr

"""Usage through the real proxy: two teams and two projects make LLM calls with the official SDKs (streaming
included); the usage API and `aileron usage` agree with the audit records to the token and the micro-dollar."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_world import World, cli, proxy_world, session_ca

pytestmark = pytest.mark.e2e

ANTHROPIC = """
import anthropic
client = anthropic.Anthropic()
hi = [{"role": "user", "content": "hi"}]
client.messages.create(model="claude-opus-5-5", max_tokens=64, messages=hi)
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=hi) as s:
    "".join(s.text_stream)
print("done")
"""
OPENAI = """
import openai
client = openai.OpenAI()
client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
stream = client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
)
"".join(c.choices[0].delta.content or "" for c in stream if c.choices)
print("done")
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("usage")) as w:
        yield w


def api(world: World, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    with world.api() as client:
        answer = client.request(method, f"/api/v1/orgs/{world.org_id}/{path}", json=body)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


def session_for(world: World, project: str, folder: Path) -> dict[str, str]:
    """A session of alice's for PROJECT, and the environment an agent of it gets."""
    started = cli(world.service.env, "session", "start", "--project", project, "--name", f"agent-{project}", "--json")
    assert started.returncode == 0, started.stderr.decode()
    token = json.loads(started.stdout)["token"]
    ca = folder / f"{project}-ca.pem"
    ca.write_bytes(session_ca(world.service.proxy_port, token))
    proxy = f"http://aileron:{token}@{world.service.host}:{world.service.proxy_port}"
    return world.agent_env(HTTPS_PROXY=proxy, https_proxy=proxy, AILERON_TOKEN=token, SSL_CERT_FILE=str(ca),
                           REQUESTS_CA_BUNDLE=str(ca), OPENAI_API_KEY="sk-aileron-placeholder",
                           ANTHROPIC_API_KEY="sk-ant-aileron-placeholder")  # fmt: skip


def run(env: dict[str, str], code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0 and b"done" in result.stdout, result.stderr.decode()[-2000:]


def test_usage_by_team_and_project_agrees_with_the_audit_records(world: World, tmp_path: Path) -> None:
    with world.api() as client:
        me = client.get("/api/v1/whoami/").json()["user"]["id"]
    made: dict[str, dict[str, Any]] = {}
    for team, project, connector in (("Red", "web", "anthropic"), ("Blue", "api", "openai")):
        created = api(world, "POST", "teams/", {"name": team})
        api(world, "POST", f"teams/{created['id']}/members/", {"user_id": me})
        api(world, "POST", "projects/", {"name": project, "slug": project, "team": created["id"]})
        enabled = cli(world.service.env, "connector", "enable", connector, "--team", created["slug"])
        assert enabled.returncode == 0, enabled.stderr.decode()
        made[project] = created
    run(session_for(world, "web", tmp_path), ANTHROPIC)
    run(session_for(world, "api", tmp_path), OPENAI)

    def llm(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["usage"] and r["agent"] in ("agent-web", "agent-api")]

    records = llm(world.audit_wait(lambda rs: len(llm(rs)) == 4))
    assert {r["agent"] for r in records} == {"agent-web", "agent-api"}
    expected: dict[str, dict[str, Any]] = {}
    for r in records:
        project = r["agent"].removeprefix("agent-")
        figures = expected.setdefault(project, {"input": 0, "output": 0, "cost": Decimal(0), "requests": 0})
        figures["input"] += r["usage"]["input_tokens"]
        figures["output"] += r["usage"]["output_tokens"]
        figures["cost"] += Decimal(repr(r["usage"]["cost_usd"]))
        figures["requests"] += 1
    assert all(f["cost"] > 0 for f in expected.values())

    for group_by, names in (("project", {"web": "web", "api": "api"}), ("team", {"web": "Red", "api": "Blue"})):
        with world.api() as client:
            answer = client.get(
                f"/api/v1/orgs/{world.org_id}/usage/", params={"group_by": group_by, "since": "2020-01-01T00:00:00Z"}
            )
        assert answer.status_code == 200, answer.text
        groups = {g["name"]: g for g in answer.json()["groups"]}
        listed = cli(world.service.env, "usage", "--by", group_by, "--since", "2020-01-01T00:00:00Z", "--json")
        assert listed.returncode == 0, listed.stderr.decode()
        from_cli = {g["name"]: g for g in json.loads(listed.stdout)["groups"]}
        for project, name in names.items():
            got, want = groups[name], expected[project]
            assert (got["requests"], got["input_tokens"], got["output_tokens"]) == (
                want["requests"], want["input"], want["output"],
            )  # fmt: skip
            assert Decimal(got["cost_usd"]) == want["cost"].quantize(Decimal("0.000001"))
            assert from_cli[name]["cost_usd"] == got["cost_usd"] and from_cli[name]["requests"] == got["requests"]

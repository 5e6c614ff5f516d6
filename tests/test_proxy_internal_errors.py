"""Any exception inside the proxy's addon is an RFC 9457 problem to the agent and an audited error: never
mitmproxy's HTML page, never a silent drop, never forwarded (with or without a credential)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxy_world import World, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FAULTS = Path(__file__).parent / "fault_injection"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("internal-errors"), extra_env={"PYTHONPATH": str(FAULTS)}) as w:
        yield w


def agent(world: World) -> httpx.Client:
    return httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30)


def assert_internal_error(world: World, response: httpx.Response, mark: int, cause: str) -> dict[str, Any]:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:aileron:problem:internal-error"
    assert world.received_since(mark) == [], "the upstream received a request the proxy failed on"
    records = world.audit_wait(lambda rs: any(r["id"] == problem["request_id"] for r in rs))
    [record] = [r for r in records if r["id"] == problem["request_id"]]
    assert record["decision"] == "error" and record["problem_type"] == "internal-error"
    assert cause in record["reason"]
    return record


def test_an_exception_while_stripping_the_agents_auth_is_a_problem_and_an_audited_error(world: World) -> None:
    mark = len(world.upstream.received)
    with agent(world) as client:
        response = client.get(
            "https://api.github.com/repos/acme/app",
            headers={"Authorization": "Bearer agents-own", "X-Aileron-Test-Fault": "1"},
        )
        record = assert_internal_error(world, response, mark, "KeyError")
        assert record["connector"] == "github" and record["host"] == "api.github.com"
        # The tunnel and the proxy still serve the next request.
        after = client.get("https://api.github.com/repos/acme/app", headers={"Authorization": "Bearer agents-own"})
    assert after.status_code == 200, after.text
    [got] = world.received_since(mark)
    assert got.headers.get("authorization") == f"Bearer {world.canaries['github'].decode()}"
    log = world.service.log.read_text(errors="replace")
    assert "Addon error" not in log and world.canaries["github"].decode() not in log


def test_a_body_nested_too_deep_to_parse_is_refused_as_ambiguous_and_audited(world: World) -> None:
    """Once an internal error (a RecursionError in the matcher), now a refusal of its own: the depth is bounded."""
    mark = len(world.upstream.received)
    body = b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with agent(world) as client:
        response = client.post(
            "https://api.github.com/repos/acme/app/issues",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "urn:aileron:problem:ambiguous-request"
    assert world.received_since(mark) == [], "the upstream received a request the proxy refused"
    records = world.audit_wait(lambda rs: any(r["id"] == problem["request_id"] for r in rs))
    [record] = [r for r in records if r["id"] == problem["request_id"]]
    assert record["decision"] == "deny" and record["problem_type"] == "ambiguous-request"
    assert "Addon error" not in world.service.log.read_text(errors="replace")

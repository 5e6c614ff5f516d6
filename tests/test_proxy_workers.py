"""Several proxy processes share the proxy port; each serves any session, and credentials come from the primary."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy_world import World, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("workers"), service_args=("--proxy-workers", "3")) as w:
        yield w


def spooled(world: World) -> dict[str, list[dict[str, object]]]:
    """Audit lines each proxy process wrote, by spool folder (primary: audit-spool; workers: -worker-N)."""
    out = {}
    for folder in sorted((world.service.home / "dataplane").glob("audit-spool*")):
        lines = b"".join(p.read_bytes() for p in folder.glob("*.jsonl")).splitlines()
        out[folder.name] = [json.loads(line) for line in lines if line.strip()]
    return out


def test_connections_spread_over_the_workers_and_every_one_injects_the_credential(world: World) -> None:
    mark = len(world.upstream.received)
    for i in range(40):  # a new connection each time: the kernel picks a process per connection
        with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
            assert client.get(f"https://api.github.com/repos/acme/spread-{i}").status_code == 200
    got = world.received_since(mark)
    assert len(got) == 40
    assert {r.headers["authorization"] for r in got} == {f"Bearer {world.canaries['github'].decode()}"}
    by_process = {
        name: {r["path"] for r in records if str(r.get("path", "")).startswith("/repos/acme/spread-")}
        for name, records in spooled(world).items()
    }
    assert set(by_process) == {"audit-spool", "audit-spool-worker-1", "audit-spool-worker-2"}
    assert sum(1 for paths in by_process.values() if paths) >= 2, by_process  # more than one process served
    world.audit_wait(lambda rs: sum(1 for r in rs if r["path"].startswith("/repos/acme/spread-")) == 40)


def test_every_worker_mints_certificates_from_the_same_session_ca(world: World) -> None:
    # One CA file for the session, whichever process a connection lands on.
    for _ in range(12):
        with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
            assert client.get("https://docs.example.com/any").status_code == 200

"""`aileron secret update` under load, through a real service: a client hammering a credentialed action while
the credential is replaced sees no failure, the upstream gets the old value and then only the new one, and the
audit names the version each request carried."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy_world import World, cli, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NEW_VALUE = b"ghp_rotated_value_after_update_0123456789"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("secret-update")) as w:
        yield w


def test_a_client_under_load_sees_old_then_new_and_never_a_failure(world: World) -> None:
    old = f"Bearer {world.canaries['github'].decode()}"
    new = f"Bearer {NEW_VALUE.decode()}"
    mark = len(world.upstream.received)
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as agent:
            while not stop.is_set():
                statuses.append(agent.get("https://api.github.com/repos/acme/app").status_code)
                time.sleep(0.02)  # steady load, within one page of the audit

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(1.0)
        updated = cli(world.service.env, "secret", "update", "github-key", "--json", stdin=NEW_VALUE + b"\n")
        assert b'"version": 2' in updated.stdout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(r.headers.get("authorization") == new for r in world.received_since(mark)):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # and a while longer under the new value
    finally:
        stop.set()
        thread.join(timeout=60)
    sent = [r.headers.get("authorization") for r in world.received_since(mark) if r.path == "/repos/acme/app"]
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert sent[0] == old and sent[-1] == new, (sent[0], sent[-1])
    switch = sent.index(new)
    assert set(sent[:switch]) == {old} and set(sent[switch:]) == {new}, "a request after the switch had the old value"

    records = world.audit_wait(
        lambda rs: sum(1 for r in rs if r["action"] == "github.get-repo" and r.get("completed_at")) >= len(sent),
        session=world.session_id,
    )
    versions = [
        r["credential_version"]
        for r in sorted(records, key=lambda r: r["at"])
        if r["action"] == "github.get-repo" and r.get("completed_at")
    ]
    assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions), versions
    assert versions.count(2) == len(sent) - switch

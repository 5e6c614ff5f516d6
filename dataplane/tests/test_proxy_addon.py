"""The proxy addon's hooks on mitmproxy test flows: fail closed when audit or credentials cannot answer."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from connectors.registry import installed
from dataplane.control import ControlPlaneError, CredentialRef, SessionContext
from dataplane.credentials import Plaintext
from dataplane.flowstate import Tunnel
from dataplane.guard import Resolver
from dataplane.proxy import AileronProxy
from dataplane.spool import SpoolError

TOKEN = "ail_ses_" + "a" * 44
SECRET = b"ghp_real_secret_value_0123456789"
CONTEXT = SessionContext(
    session_id="11111111-1111-1111-1111-111111111111",
    user_id="22222222-2222-2222-2222-222222222222",
    user_email="alice@example.com",
    organization_id="33333333-3333-3333-3333-333333333333",
    agent="claude",
    project_id=None,
    team_ids=("44444444-4444-4444-4444-444444444444",),
    expires_at="2099-01-01T00:00:00+00:00",
    connectors=frozenset({"github"}),
    credentials={"github": (CredentialRef("github", "v1", "c1", "github-token"),)},
    credential_refs=(("v1", "c1"),),
    policies=(),
    egress_mode="open",
    egress_allow=(),
)


class Events(list[str]):
    pass


class StubControl:
    def session_context(self, token: str) -> SessionContext:
        assert token == TOKEN
        return CONTEXT


class StubCredentials:
    def __init__(self, events: Events, *, fail: bool = False) -> None:
        self.events = events
        self.fail = fail

    def decrypt_cached(self, **_: Any) -> Plaintext | None:
        return None

    def decrypt(self, **_: Any) -> Plaintext:
        self.events.append("decrypt")
        if self.fail:
            raise ControlPlaneError("control plane unreachable")
        return Plaintext(SECRET, version=1)


class StubSpool:
    def __init__(self, events: Events, *, fail: bool = False) -> None:
        self.events = events
        self.fail = fail
        self.records: list[dict[str, Any]] = []

    async def record_durable(self, record: dict[str, Any]) -> None:
        self.events.append("attempt")
        if self.fail:
            raise SpoolError("cannot write the audit spool: No space left on device")
        self.records.append(record)

    def record(self, record: dict[str, Any]) -> None:
        self.records.append(record)


def make_proxy(tmp_path: Path, *, spool_fails: bool = False, credentials_fail: bool = False) -> tuple[Any, ...]:
    events = Events()
    spool = StubSpool(events, fail=spool_fails)
    proxy = AileronProxy(
        control=StubControl(),  # type: ignore[arg-type]
        credentials=StubCredentials(events, fail=credentials_fail),
        spool=spool,  # type: ignore[arg-type]
        connectors=installed(tmp_path),
        resolver=Resolver({("api.github.com", 443): ("127.0.0.1", 9)}),
        seed=b"s" * 32,
    )
    return proxy, spool, events


def github_flow(proxy: AileronProxy) -> http.HTTPFlow:
    request = tutils.treq(
        host="api.github.com",
        port=443,
        scheme=b"https",
        path=b"/repos/acme/app",
        headers=http.Headers(((b"host", b"api.github.com"), (b"authorization", b"token agents-own"))),
        content=b"",
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.sni = "api.github.com"
    proxy.tunnels[flow.client_conn.id] = Tunnel(TOKEN, "api.github.com", 443)
    return flow


def test_an_allowed_request_is_recorded_before_the_credential_is_decrypted_and_injected(tmp_path: Path) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is None
    # the first read is the outbound scan's (what the session can reach, never injected); then attempt, inject
    assert events == ["decrypt", "attempt", "decrypt"]
    assert flow.request.headers["authorization"] == f"Bearer {SECRET.decode()}"
    assert spool.records[0]["action"] == "github.get-repo" and spool.records[0]["phase"] == "attempt"
    assert SECRET.decode() not in repr(spool.records)


def test_when_the_attempt_cannot_be_recorded_the_request_is_refused_and_nothing_is_injected(tmp_path: Path) -> None:
    proxy, _, events = make_proxy(tmp_path, spool_fails=True)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.json()["type"] == "urn:aileron:problem:audit-unavailable"
    assert events == ["decrypt", "attempt"]  # read for the outbound scan only, never decrypted for injection
    assert "authorization" not in flow.request.headers  # the agent's own was stripped, nothing injected


def test_when_the_credential_service_cannot_answer_the_request_is_refused(tmp_path: Path) -> None:
    proxy, _, _ = make_proxy(tmp_path, credentials_fail=True)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.json()["type"] == "urn:aileron:problem:credentials-unavailable"
    assert flow.request.headers.get("authorization") != f"Bearer {SECRET.decode()}"  # nothing injected (or sent)


@pytest.mark.parametrize("disabled", [True, False])
def test_a_connector_not_enabled_for_the_user_is_refused(tmp_path: Path, disabled: bool) -> None:
    proxy, _, events = make_proxy(tmp_path)
    flow = github_flow(proxy)
    if disabled:
        live = asyncio.run(proxy.sessions.get(TOKEN))
        live.context = dataclasses.replace(CONTEXT, connectors=frozenset())
    asyncio.run(proxy.requestheaders(flow))
    if disabled:
        assert flow.response is not None
        assert flow.response.json()["type"] == "urn:aileron:problem:connector-disabled"
        assert events == ["decrypt"]  # the outbound scan's read only
    else:
        assert flow.response is None

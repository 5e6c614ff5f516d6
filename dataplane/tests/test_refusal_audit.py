"""Nothing goes out unrecorded: egress waits for its attempt, and refusals outside a live session are audited."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow, tutils

from dataplane.control import ControlPlaneError
from dataplane.flowstate import Tunnel
from dataplane.guard import Resolver
from dataplane.limits import BodyBudget
from dataplane.proxy import AileronProxy
from dataplane.refusals import token_lookup
from dataplane.tests.test_proxy_addon import CONTEXT, SECRET, TOKEN, make_proxy


def egress_flow(proxy: AileronProxy, *, body: bytes = b"") -> http.HTTPFlow:
    proxy.resolver = Resolver({("docs.example.com", 443): ("127.0.0.1", 9)})
    fields = [(b"host", b"docs.example.com")]
    if body:
        fields.append((b"content-length", str(len(body)).encode()))
    request = tutils.treq(
        host="docs.example.com",
        port=443,
        scheme=b"https",
        method=b"POST" if body else b"GET",
        path=b"/guide",
        headers=http.Headers(fields),
        content=body,
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.sni = "docs.example.com"
    proxy.tunnels[flow.client_conn.id] = Tunnel(TOKEN, "docs.example.com", 443)
    return flow


def plain_flow(*, token: str | None, method: bytes = b"GET", host: str = "example.com") -> http.HTTPFlow:
    fields = [(b"host", host.encode())]
    if token is not None:
        fields.append((b"proxy-authorization", f"Bearer {token}".encode()))
    request = tutils.treq(
        host=host,
        port=80 if method != b"CONNECT" else 443,
        scheme=b"http" if method != b"CONNECT" else b"",
        method=method,
        path=b"/index.html?secret=1" if method != b"CONNECT" else b"",
        authority=b"" if method != b"CONNECT" else f"{host}:443".encode(),
        headers=http.Headers(fields),
        content=b"",
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.peername = ("127.0.0.7", 50123)
    return flow


class DownControl:
    def session_context(self, token: str) -> Any:
        raise ControlPlaneError("connection refused")


def test_egress_is_forwarded_only_after_its_attempt_is_durable(tmp_path: Path) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    flow = egress_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is None
    # the session's credential read for the outbound scan, then the attempt awaited through record_durable
    assert events == ["decrypt", "attempt"]
    assert [(r["kind"], r["decision"], r["host"]) for r in spool.records] == [("egress", "allow", "docs.example.com")]


def test_an_egress_body_is_scanned_then_recorded_durably_then_forwarded(tmp_path: Path) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    flow = egress_flow(proxy, body=b'{"q": "how to bake bread"}')
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is None and not flow.request.stream  # held: the body is read before anything is sent
    assert events == ["decrypt"] and spool.records == []
    asyncio.run(proxy.request(flow))
    assert flow.response is None
    assert events == ["decrypt", "attempt"]
    assert [(r["kind"], r["decision"]) for r in spool.records] == [("egress", "allow")]


def test_an_egress_body_carrying_a_credential_is_refused_as_critical_and_never_recorded_as_allowed(
    tmp_path: Path,
) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    flow = egress_flow(proxy, body=b"token=" + base64.b64encode(SECRET))
    asyncio.run(proxy.requestheaders(flow))
    asyncio.run(proxy.request(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.json()["type"] == "urn:aileron:problem:credential-in-request"
    assert "_credential_id" not in flow.response.json()
    assert events == ["decrypt"]  # no durable allow attempt
    [record] = spool.records
    assert (record["decision"], record["problem_type"], record["severity"]) == (
        "deny",
        "credential-in-request",
        "critical",
    )
    assert record["credential_id"] == "c1"
    assert SECRET.decode() not in repr(spool.records)


def test_an_egress_body_whose_attempt_cannot_be_recorded_is_refused_after_the_scan(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path, spool_fails=True)
    flow = egress_flow(proxy, body=b"hello")
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is None
    asyncio.run(proxy.request(flow))
    assert flow.response is not None and flow.response.status_code == 503
    assert [(r["decision"], r["problem_type"]) for r in spool.records] == [("deny", "audit-unavailable")]


def test_egress_whose_attempt_cannot_be_recorded_is_refused(tmp_path: Path) -> None:
    proxy, spool, events = make_proxy(tmp_path, spool_fails=True)
    flow = egress_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.json()["type"] == "urn:aileron:problem:audit-unavailable"
    assert flow.request.stream is False
    # the refusal itself is queued (the spool keeps it until the disk takes it)
    assert [(r["decision"], r["problem_type"]) for r in spool.records] == [("deny", "audit-unavailable")]


def test_a_plain_http_request_without_a_token_is_refused_and_audited_with_the_clients_address(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    flow = plain_flow(token=None)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 403
    [record] = spool.records
    assert record["id"] == flow.response.json()["request_id"]
    assert (record["session_id"], record["token_lookup"], record["client_address"]) == (None, "", "127.0.0.7")
    assert (record["kind"], record["decision"], record["problem_type"]) == ("refused", "deny", "https-only")
    assert (record["method"], record["host"], record["path"]) == ("GET", "example.com", "/index.html")


def test_a_plain_http_request_of_a_known_session_is_attributed_to_it(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    asyncio.run(proxy.sessions.get(TOKEN))
    flow = plain_flow(token=TOKEN)
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "plain-HTTP egress hosts" in flow.response.json()["detail"]  # not listed: what an admin can do
    [record] = spool.records
    assert (record["session_id"], record["kind"], record["problem_type"]) == (
        CONTEXT.session_id,
        "refused",
        "https-only",
    )


def test_a_connect_without_a_token_is_refused_and_audited(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    flow = plain_flow(token=None, method=b"CONNECT", host="api.github.com")
    asyncio.run(proxy.http_connect(flow))
    assert flow.response is not None and flow.response.status_code == 407
    [record] = spool.records
    assert (record["method"], record["host"], record["path"], record["problem_type"]) == (
        "CONNECT",
        "api.github.com",
        "",
        "proxy-auth-required",
    )
    assert flow.client_conn.id not in proxy.tunnels


def test_a_connect_while_the_control_plane_is_down_is_audited_by_the_tokens_lookup(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    proxy.sessions.control = DownControl()
    flow = plain_flow(token=TOKEN, method=b"CONNECT", host="api.github.com")
    asyncio.run(proxy.http_connect(flow))
    assert flow.response is not None and flow.response.status_code == 503
    [record] = spool.records
    assert (record["session_id"], record["token_lookup"]) == (None, "a" * 12)
    assert record["problem_type"] == "control-plane-unavailable"
    assert TOKEN not in repr(record)


def test_a_connect_while_the_control_plane_is_down_names_a_session_seen_live_before(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    asyncio.run(proxy.sessions.get(TOKEN))
    proxy.sessions.ttl = 0.0  # the cached state is stale: it must be checked again, and cannot be
    proxy.sessions.control = DownControl()
    flow = plain_flow(token=TOKEN, method=b"CONNECT", host="api.github.com")
    asyncio.run(proxy.http_connect(flow))
    assert flow.response is not None and flow.response.status_code == 503
    [record] = spool.records
    assert (record["session_id"], record["token_lookup"]) == (CONTEXT.session_id, "")


def test_the_health_endpoint_reports_the_spool_and_answers_503_when_it_stalls(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    state = {"status": "ok"}
    spool.health = lambda: dict(state)
    flow = plain_flow(token=None, host="aileron.proxy")
    flow.request.path = "/healthz"
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 200
    assert flow.response.json()["audit"] == {"status": "ok"}
    state["status"] = "degraded"
    flow = plain_flow(token=None, host="aileron.proxy")
    flow.request.path = "/healthz"
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 503
    assert spool.records == []  # a health probe is not a refusal


def test_the_health_report_behind_the_status_needs_the_service_token(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    proxy.operator_token = "svc-token-123"
    spool.health = lambda: {"status": "degraded", "writer": {"last_error": "No space left on device"}}
    answers = []
    for given in ("", "Bearer wrong", "Bearer svc-token-123"):
        flow = plain_flow(token=None, host="aileron.proxy")
        flow.request.path = "/healthz"
        if given:
            flow.request.headers["authorization"] = given
        asyncio.run(proxy.requestheaders(flow))
        assert flow.response is not None and flow.response.status_code == 503
        answers.append(flow.response.json())
    assert answers[0] == answers[1] == {"status": "degraded", "audit": {"status": "degraded"}}
    assert answers[2]["audit"]["writer"]["last_error"] == "No space left on device" and "pid" in answers[2]


def test_only_a_well_formed_lookup_part_is_kept() -> None:
    assert token_lookup("ail_ses_AbC123def456" + "x" * 32) == "AbC123def456"
    assert token_lookup("ail_pat_AbC123def456" + "x" * 32) == ""
    assert token_lookup("ail_ses_short") == ""
    assert token_lookup(None) == ""


def test_an_egress_body_held_for_the_scan_counts_against_the_budget_of_bodies_in_flight(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    proxy.budget = BodyBudget(8)
    flow = egress_flow(proxy, body=b"more than eight bytes")
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.json()["type"] == "urn:aileron:problem:body-budget-exhausted"
    assert [r["problem_type"] for r in spool.records] == ["body-budget-exhausted"]


class CountingControl(DownControl):
    def __init__(self) -> None:
        self.calls = 0

    def session_context(self, token: str) -> Any:
        self.calls += 1
        from dataplane.control import NotFoundError

        raise NotFoundError("unknown")


def _connect_with(proxy: AileronProxy, token: str) -> http.HTTPFlow:
    flow = plain_flow(token=token, method=b"CONNECT", host="api.github.com")
    asyncio.run(proxy.http_connect(flow))
    assert flow.response is not None
    return flow


def test_a_token_that_is_not_a_session_token_is_refused_without_asking_the_control_plane(tmp_path: Path) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    control = CountingControl()
    proxy.sessions.control = control
    for token in ("x" * 48, "ail_pat_" + "a" * 44, "ail_ses_short", "ail_ses_" + "!" * 44):
        assert _connect_with(proxy, token).response.status_code == 407  # type: ignore[union-attr]
    assert control.calls == 0
    assert len(spool.records) == 4 and all(r["problem_type"] == "proxy-auth-required" for r in spool.records)


def test_a_flood_of_made_up_session_tokens_costs_a_bounded_number_of_lookups_and_audit_rows(tmp_path: Path) -> None:
    import secrets
    import string

    from dataplane.refusals import Bucket

    proxy, spool, _ = make_proxy(tmp_path)
    control = CountingControl()
    proxy.sessions.control = control
    proxy.sessions.lookups = Bucket(rate=0.001, burst=30)
    proxy.unverified.bucket = Bucket(rate=0.001, burst=10)
    alphabet = string.ascii_letters + string.digits
    statuses = []
    for _ in range(100):
        token = "ail_ses_" + "".join(secrets.choice(alphabet) for _ in range(44))
        statuses.append(_connect_with(proxy, token).response.status_code)  # type: ignore[union-attr]
    assert control.calls == 30  # the burst, then no more lookups
    assert statuses.count(407) == 30 and statuses.count(503) == 70
    assert len(spool.records) == 10  # the audit rows are bounded too
    proxy.unverified.bucket = Bucket(rate=0.001, burst=1)  # room again: the next one says what was not recorded
    _connect_with(proxy, "ail_ses_" + "b" * 44)
    assert "90 similar refusals before it were counted" in spool.records[-1]["reason"]

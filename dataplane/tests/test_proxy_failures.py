"""An exception inside the addon is a problem to the agent and an audited error: never forwarded, never a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow, tutils

import dataplane.credscan
import dataplane.exfil
import dataplane.proxy
import dataplane.usage
from dataplane.flowstate import Tunnel
from dataplane.proxy import AileronProxy
from dataplane.tests.test_proxy_addon import SECRET, TOKEN, github_flow, make_proxy


def boom(message: str = "b'x-api-key'", kind: type[Exception] = KeyError) -> Any:
    def raiser(*_: Any, **__: Any) -> Any:
        raise kind(message)

    return raiser


def joined(stream: Callable[[bytes], Iterable[bytes] | bytes], *chunks: bytes) -> bytes:
    """What a response stream callable sends the agent for these chunks."""
    out = [stream(chunk) for chunk in chunks]
    return b"".join(part if isinstance(part, bytes) else b"".join(part) for part in out)


def assert_problem(flow: http.HTTPFlow, status: int, slug: str) -> dict[str, Any]:
    assert flow.response is not None
    assert flow.response.status_code == status
    assert flow.response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = flow.response.json()
    assert body["type"] == f"urn:aileron:problem:{slug}"
    assert body["request_id"]
    text = flow.response.get_text() or ""
    assert "Traceback" not in text and SECRET.decode() not in text
    return body


def create_issue_flow(proxy: AileronProxy, body: bytes) -> http.HTTPFlow:
    request = tutils.treq(
        host="api.github.com",
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/repos/acme/app/issues",
        headers=http.Headers(
            (
                (b"host", b"api.github.com"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            )
        ),
        content=body,
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.sni = "api.github.com"
    proxy.tunnels[flow.client_conn.id] = Tunnel(TOKEN, "api.github.com", 443)
    return flow


def test_an_exception_while_stripping_auth_is_a_problem_an_audited_error_and_nothing_is_injected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    monkeypatch.setattr(dataplane.proxy, "strip_auth", boom())
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    body = assert_problem(flow, 500, "internal-error")
    assert events == ["decrypt"]  # read for the outbound scan only: neither recorded as allowed nor injected
    assert flow.request.headers.get("authorization") != f"Bearer {SECRET.decode()}"
    [record] = spool.records
    assert record["phase"] == "attempt" and record["decision"] == "error" and record["id"] == body["request_id"]
    assert record["problem_type"] == "internal-error" and "KeyError" in record["reason"]
    assert proxy.pending == {}


def test_an_exception_after_the_credential_was_injected_keeps_the_request_and_the_error_away_from_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    # The error's own text carries the secret: it must not reach the agent, the log or the audit record.
    monkeypatch.setattr(dataplane.proxy, "provider_for", boom(f"bad {SECRET.decode()}", ValueError))
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    assert_problem(flow, 500, "internal-error")  # answered by the proxy: mitmproxy sends nothing upstream
    assert events == ["decrypt", "attempt", "decrypt"]  # the outbound scan's read, then attempt and injection
    attempt, outcome = spool.records
    assert attempt["decision"] == "allow" and outcome["phase"] == "outcome" and outcome["id"] == attempt["id"]
    assert "ValueError" in outcome["error"]
    assert SECRET.decode() not in json.dumps(spool.records)
    assert proxy.pending == {}


def test_a_body_nested_too_deep_to_parse_is_refused_and_audited(tmp_path: Path) -> None:
    proxy, spool, events = make_proxy(tmp_path)
    flow = create_issue_flow(proxy, b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    asyncio.run(proxy.requestheaders(flow))
    assert flow.response is None  # a bounded body: decided in `request`
    asyncio.run(proxy.request(flow))
    assert_problem(flow, 400, "ambiguous-request")
    assert events == ["decrypt"]  # the outbound scan's read only
    [record] = spool.records
    assert record["decision"] == "deny" and "nested more than 128 levels" in record["reason"], record


def test_an_exception_on_the_response_headers_never_passes_the_upstreams_answer_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    monkeypatch.setattr(dataplane.exfil, "redact_value", boom("header", RuntimeError))
    flow.response = tutils.tresp(headers=http.Headers(((b"x-echo", SECRET),)), content=b'{"token": "' + SECRET + b'"}')
    proxy.responseheaders(flow)
    assert not flow.response.stream  # buffered, so it can still be replaced before the agent sees any of it
    proxy.response(flow)
    assert_problem(flow, 502, "response-error")
    attempt, outcome = spool.records
    assert outcome["phase"] == "outcome" and outcome["upstream_status"] == 200 and "RuntimeError" in outcome["error"]


def test_an_exception_while_counting_usage_still_streams_the_redacted_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    pending = proxy.pending[flow.id]
    pending.provider = "openai"
    monkeypatch.setattr(dataplane.usage.UsageParser, "feed", boom("usage", ValueError))
    flow.response = tutils.tresp(content=b"")
    proxy.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    assert joined(stream, b"echo " + SECRET, b"") == b"echo [redacted by aileron]"
    proxy.response(flow)
    assert spool.records[-1]["phase"] == "outcome" and spool.records[-1]["usage"] is None


def test_an_exception_while_recording_the_outcome_is_logged_and_the_outcome_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    flow.response = tutils.tresp(content=b"{}")
    proxy.responseheaders(flow)
    monkeypatch.setattr(dataplane.proxy, "outcome_record", boom("outcome", TypeError))
    proxy.response(flow)
    outcome = spool.records[-1]
    assert outcome["phase"] == "outcome" and "TypeError" in outcome["error"]
    assert proxy.pending == {}


def test_an_exception_at_connect_is_a_problem_and_no_tunnel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, _, _ = make_proxy(tmp_path)
    monkeypatch.setattr(proxy.sessions, "get", boom("connect", RuntimeError))
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.github.com", port=443, path=b""))
    flow.request.headers["proxy-authorization"] = f"Bearer {TOKEN}"
    asyncio.run(proxy.http_connect(flow))
    assert_problem(flow, 500, "internal-error")
    assert proxy.tunnels == {}


def test_an_exception_while_checking_the_upstream_address_refuses_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, _, _ = make_proxy(tmp_path)
    monkeypatch.setattr(dataplane.proxy, "pin_server", boom("pin", RuntimeError))
    data = server_hooks.ServerConnectionHookData(server=tflow.tserver_conn(), client=tflow.tclient_conn())
    asyncio.run(proxy.server_connect(data))
    assert data.server.error


def test_an_exception_while_redacting_a_streamed_answer_breaks_it_off_and_audits_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, spool, _ = make_proxy(tmp_path)
    flow = github_flow(proxy)
    asyncio.run(proxy.requestheaders(flow))
    flow.response = tutils.tresp(content=b"")
    proxy.responseheaders(flow)
    monkeypatch.setattr(dataplane.credscan.Matcher, "spans", boom("redact", MemoryError))
    stream = flow.response.stream
    assert callable(stream)
    assert joined(stream, b"echo " + SECRET) == b""  # nothing unredacted; the connection is killed, not ended
    assert flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE
    proxy.error(flow)
    assert spool.records[-1]["phase"] == "outcome" and "MemoryError" in spool.records[-1]["error"]

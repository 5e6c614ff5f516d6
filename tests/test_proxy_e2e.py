"""The data plane end to end: real clients through the real proxy to local fake HTTPS upstreams.

Each test asserts what the upstream received (the injected credential, never the agent's), what the agent got
back, and what the audit log holds.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import requests

from tests.proxy_world import World, proxy_world
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("proxy")) as w:
        yield w


def curl(world: World, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        ["curl", "-sS", "--proxy", world.proxy_url, "--cacert", str(world.ca_file), "-w", "\n%{http_code}", *args],
        capture_output=True,
        timeout=30,
    )
    world.outputs[f"curl {' '.join(args)}"] = result.stdout + result.stderr
    return result


def status_and_body(result: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes]:
    body, _, code = result.stdout.rpartition(b"\n")
    return int(code or 0), body


def test_curl_create_issue_gets_the_real_credential_not_the_agents(world: World) -> None:
    mark = len(world.upstream.received)
    result = curl(
        world,
        "https://api.github.com/repos/acme/app/issues",
        "-H",
        "Authorization: token agent-made-this-up",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"title": "Flaky test", "body": "details"}),
    )
    status, body = status_and_body(result)
    assert status == 201, body
    [got] = world.received_since(mark)
    assert got.method == "POST" and got.path == "/repos/acme/app/issues"
    assert got.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    assert "agent-made-this-up" not in json.dumps(got.headers)
    assert json.loads(got.body) == {"title": "Flaky test", "body": "details"}
    records = world.audit_wait(
        lambda rs: any(r["action"] == "github.create-issue" and r["upstream_status"] == 201 for r in rs),
        action="github.create-issue",
    )
    record = next(r for r in records if r["upstream_status"] == 201)
    assert record["decision"] == "allow"
    assert record["args"]["owner"] == "acme" and record["args"]["title"] == "Flaky test"
    assert record["session_id"] == world.session_id


def test_python_requests_and_httpx_reach_stripe_with_the_injected_key(world: World) -> None:
    mark = len(world.upstream.received)
    with requests.Session() as session:
        session.proxies = {"https": world.proxy_url}
        # verify per request: requests lets REQUESTS_CA_BUNDLE from the environment override session.verify
        reply = session.get(
            "https://api.stripe.com/v1/customers/cus_123",
            headers={"Authorization": "Bearer sk_fake"},
            verify=str(world.ca_file),
        )
    assert reply.status_code == 200, reply.text
    with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
        second = client.get("https://api.stripe.com/v1/customers", params={"limit": "3"})
    assert second.status_code == 200, second.text
    got = world.received_since(mark)
    assert [r.path for r in got] == ["/v1/customers/cus_123", "/v1/customers?limit=3"]
    for r in got:
        assert r.headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"


def test_an_action_that_needs_approval_is_held_and_never_sent_while_undecided(world: World) -> None:
    with world.api() as api:
        rule = api.post(
            f"/api/v1/orgs/{world.org_id}/approval-rules/", json={"action": "stripe.create-refund", "window_seconds": 1}
        )
        assert rule.status_code == 201, rule.text
    mark = len(world.upstream.received)
    with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
        reply = client.post("https://api.stripe.com/v1/refunds", data={"charge": "ch_1", "amount": "5000"})
    assert reply.status_code == 403
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["retry-after"] == "30"
    problem = reply.json()
    assert problem["type"] == "urn:aileron:problem:approval-pending"
    assert problem["action"] == "stripe.create-refund"
    assert problem["approval_id"]
    assert world.received_since(mark) == []
    records = world.audit_wait(
        lambda rs: any(r["decision"] == "approval_required" for r in rs), action="stripe.create-refund"
    )
    assert any(r["approval_id"] == problem["approval_id"] for r in records)


@pytest.mark.parametrize("host", ["api.github.com", "docs.example.com"])
def test_one_keep_alive_connection_carries_many_requests_over_one_upstream_connection(world: World, host: str) -> None:
    mark = len(world.upstream.received)
    with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
        statuses = [client.get(f"https://{host}/repos/acme/keepalive-{i}").status_code for i in range(12)]
    assert statuses == [200] * 12
    got = world.received_since(mark)
    assert len(got) == 12
    assert len({r.peer for r in got}) == 1  # the data plane reused its upstream connection


@pytest.mark.parametrize("repo", ["chunked", "sized"])
def test_a_credential_echoed_by_the_upstream_is_redacted_in_body_and_headers(world: World, repo: str) -> None:
    with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
        reply = client.get(f"https://api.github.com/repos/echo/{repo}")
    assert reply.status_code == 200
    canary = world.canaries["github"].decode()
    assert canary not in reply.text and canary not in json.dumps(dict(reply.headers))
    assert "[redacted by aileron]" in reply.json()["you_sent"]
    assert "[redacted by aileron]" in reply.headers["x-echo"]
    warning = None
    deadline = time.monotonic() + 10
    while warning is None and time.monotonic() < deadline:  # the operator is told, without the value
        for line in world.service.log.read_text(errors="replace").splitlines():
            if "echoed the credential" in line and "github.get-repo" in line:
                warning = line
        time.sleep(0.1)
    assert warning is not None and canary not in warning


def test_uncredentialed_egress_is_forwarded_as_is_and_audited(world: World) -> None:
    mark = len(world.upstream.received)
    result = curl(world, "https://docs.example.com/guide?page=2", "-H", "Authorization: Bearer agents-own")
    status, _ = status_and_body(result)
    assert status == 200
    [got] = world.received_since(mark)
    assert got.headers["authorization"] == "Bearer agents-own"  # nothing injected, nothing stripped
    world.audit_wait(lambda rs: any(r["host"] == "docs.example.com" and r["kind"] == "egress" for r in rs))


def test_without_a_session_token_the_proxy_answers_407(world: World) -> None:
    bad = f"http://aileron:ail_ses_notarealtoken000000000000000000000000000@127.0.0.1:{world.service.proxy_port}"
    with httpx.Client(proxy=bad, verify=world.tls()) as client, pytest.raises(httpx.ProxyError) as caught:
        client.get("https://api.github.com/repos/acme/app")
    assert "407" in str(caught.value)


def test_plain_http_is_refused(world: World) -> None:
    with httpx.Client(proxy=world.proxy_url) as client:
        reply = client.get("http://docs.example.com/")
    assert reply.status_code == 403
    assert reply.json()["type"] == "urn:aileron:problem:https-only"


def test_plain_http_inside_a_connect_tunnel_is_refused_and_gets_no_credential(world: World) -> None:
    mark = len(world.upstream.received)
    sock = _tunnel(world, "api.github.com")
    sock.sendall(b"GET /repos/acme/app HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert b"urn:aileron:problem:https-only" in answer
    assert world.received_since(mark) == []


def test_gh_cli_creates_an_issue_through_the_proxy(world: World, tmp_path: Path) -> None:
    gh = shutil.which("gh")
    if gh is None:
        pytest.skip("the gh CLI is not installed (Debian package gh)")
    mark = len(world.upstream.received)
    env = world.agent_env(GH_TOKEN="gho_placeholder_for_aileron", GH_CONFIG_DIR=str(tmp_path), GH_PROMPT_DISABLED="1")
    result = subprocess.run(
        [gh, "api", "repos/acme/app/issues", "--method", "POST", "-f", "title=From gh"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    world.outputs["gh"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    [got] = world.received_since(mark)
    assert got.path == "/repos/acme/app/issues"
    assert got.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    assert json.loads(got.body)["title"] == "From gh"


def _tunnel(world: World, host: str) -> socket.socket:
    """An authenticated CONNECT tunnel to host:443, as a raw socket."""
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    auth = base64.b64encode(f"aileron:{world.token}".encode()).decode()
    connect = f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    sock.sendall(connect.encode())
    head = sock.recv(4096)
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    return sock


def _raw_tls(world: World, host: str, raw: bytes, *, sni: str | None = None) -> bytes:
    """Send bytes through a CONNECT tunnel over TLS (for requests no well-behaved client would send)."""
    sock = _tunnel(world, host)
    context = ssl.create_default_context(cafile=str(world.ca_file))
    if sni is not None:
        context.check_hostname = False  # the certificate is for the SNI we claim, not the tunnel's host
    tls = context.wrap_socket(sock, server_hostname=sni or host)
    tls.sendall(raw)
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = tls.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and (b"}" in data or b"Content-Length: 0" in data):
            break
    tls.close()
    return data


def run_agent_python(world: World, code: str) -> str:
    """Run code as an agent would: another process with only the runtime contract in its environment."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=world.agent_env(OPENAI_API_KEY="sk-aileron-placeholder", ANTHROPIC_API_KEY="sk-ant-aileron-placeholder"),
        capture_output=True,
        timeout=60,
    )
    world.outputs[f"agent python {code[:40]}"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


OPENAI_AGENT = """
import openai
client = openai.OpenAI()
reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
print("plain", reply.choices[0].message.content, reply.usage.prompt_tokens)
stream = client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True},
)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
print("stream", text)
"""

ANTHROPIC_AGENT = """
import anthropic
client = anthropic.Anthropic()
reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
print("plain", reply.content[0].text, reply.usage.input_tokens)
question = [{"role": "user", "content": "hi"}]
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=question) as s:
    text = "".join(s.text_stream)
print("stream", text)
"""


def test_openai_sdk_plain_and_streaming_gets_the_key_and_usage_is_audited(world: World) -> None:
    mark = len(world.upstream.received)
    out = run_agent_python(world, OPENAI_AGENT)
    assert "plain hi 11" in out and "stream hello" in out
    got = world.received_since(mark)
    assert [r.path for r in got] == ["/v1/chat/completions", "/v1/chat/completions"]
    for r in got:
        assert r.headers["authorization"] == f"Bearer {world.canaries['openai'].decode()}"
    records = world.audit_wait(lambda rs: sum(1 for r in rs if r["usage"]) >= 2, action="openai.create-chat-completion")
    usages = sorted((r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in records if r["usage"])
    assert usages == [(11, 7), (13, 5)]
    assert all(r["usage"]["cost_usd"] and r["usage"]["cost_usd"] > 0 for r in records if r["usage"])
    assert all(r["args"]["messages"] == "[redacted]" for r in records)


def test_gemini_rest_calls_get_the_header_key_lose_the_agents_query_key_and_are_costed(world: World) -> None:
    mark = len(world.upstream.received)
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with httpx.Client(proxy=world.proxy_url, verify=world.tls()) as client:
        plain = client.post(f"{base}:generateContent", params={"key": "AIza-agents-own"}, json=body)
        with client.stream(
            "POST", f"{base}:streamGenerateContent", params={"alt": "sse", "key": "AIza-agents-own"}, json=body
        ) as streamed:
            text = b"".join(streamed.iter_bytes())
    assert plain.status_code == 200 and streamed.status_code == 200 and b"usageMetadata" in text
    got = world.received_since(mark)
    assert [r.path for r in got] == [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    ]
    for r in got:
        assert r.headers["x-goog-api-key"] == world.canaries["gemini"].decode()
    records = world.audit_wait(lambda rs: sum(1 for r in rs if r["usage"]) >= 2, connector="gemini")
    usages = sorted((r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in records if r["usage"])
    assert usages == [(41, 6), (41, 12)]
    assert all(r["args"]["contents"] == "[redacted]" for r in records)


def test_anthropic_sdk_plain_and_streaming_gets_the_key_and_usage_is_audited(world: World) -> None:
    mark = len(world.upstream.received)
    out = run_agent_python(world, ANTHROPIC_AGENT)
    assert "plain hi 21" in out and "stream hello" in out
    got = world.received_since(mark)
    assert [r.path for r in got] == ["/v1/messages", "/v1/messages"]
    for r in got:
        assert r.headers["x-api-key"] == world.canaries["anthropic"].decode()
        assert "sk-ant-aileron-placeholder" not in json.dumps(r.headers)
    records = world.audit_wait(lambda rs: sum(1 for r in rs if r["usage"]) >= 2, action="anthropic.create-message")
    usages = sorted((r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in records if r["usage"])
    assert usages == [(21, 9), (31, 17)]


def test_a_model_only_the_price_catalog_knows_is_costed_by_the_running_data_plane(world: World) -> None:
    """Claude Code's default model is not in the built-in table: the genai-prices catalog prices it, in the real
    data plane process ($4 input, $20 output per million tokens in the pinned catalog)."""
    code = """
import anthropic
reply = anthropic.Anthropic().messages.create(
    model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
)
print("plain", reply.usage.input_tokens, reply.model)
"""
    assert "plain 21 claude-opus-5-5" in run_agent_python(world, code)
    records = world.audit_wait(
        lambda rs: any(r["usage"] and r["usage"]["model"] == "claude-opus-5-5" for r in rs),
        action="anthropic.create-message",
    )
    [usage] = [r["usage"] for r in records if r["usage"] and r["usage"]["model"] == "claude-opus-5-5"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (21, 9)
    assert usage["cost_usd"] == pytest.approx((21 * 4 + 9 * 20) / 1_000_000)


def refused(world: World, result: subprocess.CompletedProcess[bytes]) -> tuple[int, dict[str, object]]:
    status, body = status_and_body(result)
    assert body, result.stderr.decode()
    return status, json.loads(body)


def assert_refused_and_audited(world: World, mark: int, problem_type: str) -> None:
    assert world.received_since(mark) == [], "a refused request reached the upstream"
    world.audit_wait(lambda rs: any(r["problem_type"] == problem_type for r in rs))


def test_a_host_header_that_disagrees_with_the_tunnel_is_refused(world: World) -> None:
    mark = len(world.upstream.received)
    status, problem = refused(
        world, curl(world, "--http1.1", "https://api.github.com/repos/acme/app", "-H", "Host: evil.example.net")
    )
    assert status == 421 and problem["type"] == "urn:aileron:problem:destination-mismatch"
    assert_refused_and_audited(world, mark, "destination-mismatch")


def test_an_sni_that_disagrees_with_the_tunnel_is_refused(world: World) -> None:
    mark = len(world.upstream.received)
    raw = b"GET /repos/acme/app HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n"
    answer = _raw_tls(world, "api.github.com", raw, sni="docs.example.com")
    assert answer.startswith(b"HTTP/1.1 421"), answer[:200]
    assert world.received_since(mark) == []


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost", "169.254.169.254", "10.1.2.3"])
def test_private_loopback_and_metadata_addresses_are_refused(world: World, target: str) -> None:
    mark = len(world.upstream.received)
    status, problem = refused(world, curl(world, f"https://{target}:{world.upstream.port}/latest/meta-data/"))
    assert status == 403 and problem["type"] == "urn:aileron:problem:private-address"
    assert_refused_and_audited(world, mark, "private-address")


@contextmanager
def counting_listener() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A TCP port on 127.0.0.1 that records who connected to it: the proof that nothing did."""
    accepted: list[tuple[str, int]] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("64:ff9b::7f00:1", "443"),  # NAT64 for 127.0.0.1: through a translator it reaches the proxy's host
        ("64:ff9b::7f00:1", "listener"),
        ("::ffff:127.0.0.1", "listener"),  # the host's own IPv4 stack takes it to 127.0.0.1
    ],
)
def test_a_connect_to_an_ipv6_form_of_loopback_is_refused_and_nothing_connects(
    world: World, host: str, port: str
) -> None:
    mark = len(world.upstream.received)
    with counting_listener() as (listener_port, accepted):
        target = f"[{host}]:{listener_port if port == 'listener' else port}"
        status, problem = refused(world, curl(world, f"https://{target}/latest/meta-data/"))
        time.sleep(0.5)
    assert status == 403 and problem["type"] == "urn:aileron:problem:private-address", problem
    assert host in str(problem["detail"])
    assert accepted == [] and world.received_since(mark) == []
    records = world.audit_wait(lambda rs: any(r["id"] == problem["request_id"] for r in rs))
    [record] = [r for r in records if r["id"] == problem["request_id"]]
    assert record["host"] == host and record["decision"] == "deny" and record["problem_type"] == "private-address"
    assert record["upstream_status"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/repos/acme/app/issues/../../../../admin",
        "/repos/acme/app/%2e%2e/%2e%2e/user",
        "/repos/acme%2Fapp/issues",
        "/repos//acme/app/issues",
        "/REPOS/acme/app/issues",
        "/repos/acme/app/issues;admin=1",
    ],
)
def test_path_normalization_tricks_are_refused(world: World, path: str) -> None:
    mark = len(world.upstream.received)
    status, problem = refused(world, curl(world, "--path-as-is", "-X", "DELETE", f"https://api.github.com{path}"))
    assert status in (400, 403), problem
    assert str(problem["type"]).rsplit(":", 1)[1] in ("ambiguous-request", "unmatched-action")
    assert world.received_since(mark) == []


def test_content_length_with_transfer_encoding_is_refused(world: World) -> None:
    mark = len(world.upstream.received)
    raw = (
        b"POST /repos/acme/app/issues HTTP/1.1\r\nHost: api.github.com\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"0\r\n\r\nGET /user HTTP/1.1\r\nHost: api.github.com\r\n\r\n"
    )
    answer = _raw_tls(world, "api.github.com", raw)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer[:300]
    # mitmproxy's own smuggling check answers (text/html); the data plane still audits the attempt.
    assert_refused_and_audited(world, mark, "malformed-request")


def test_an_oversized_body_is_refused_before_it_is_read(world: World, tmp_path: Path) -> None:
    mark = len(world.upstream.received)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"title": "x", "body": "y" * (300 * 1024)}))
    status, problem = refused(
        world,
        curl(
            world,
            "https://api.github.com/repos/acme/app/issues",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{big}",
        ),
    )
    assert status == 413 and problem["type"] == "urn:aileron:problem:body-too-large"
    assert_refused_and_audited(world, mark, "body-too-large")


def test_a_chunked_body_to_a_connector_is_refused(world: World) -> None:
    mark = len(world.upstream.received)
    status, problem = refused(
        world,
        curl(
            world,
            "--http1.1",
            "https://api.github.com/repos/acme/app/issues",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"title": "x"}',
        ),
    )
    assert status == 411 and problem["type"] == "urn:aileron:problem:length-required"
    assert world.received_since(mark) == []


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
def test_method_override_headers_are_refused(world: World, header: str) -> None:
    mark = len(world.upstream.received)
    status, problem = refused(world, curl(world, "https://api.github.com/repos/acme/app", "-H", f"{header}: DELETE"))
    assert status == 400 and problem["type"] == "urn:aileron:problem:method-override"
    assert_refused_and_audited(world, mark, "method-override")


def test_an_unknown_action_on_a_connector_host_is_denied_by_default(world: World) -> None:
    mark = len(world.upstream.received)
    status, problem = refused(world, curl(world, "-X", "DELETE", "https://api.github.com/repos/acme/app"))
    assert status == 403 and problem["type"] == "urn:aileron:problem:unmatched-action"
    assert "aileron actions" in str(problem["next"])
    assert_refused_and_audited(world, mark, "unmatched-action")


LAUNCHED_AGENT = """
import json, os, httpx
reply = httpx.get("https://api.github.com/repos/acme/launched")
print(json.dumps({"status": reply.status_code, "env": dict(os.environ)}))
"""


def test_launch_without_sandbox_runs_the_command_with_the_runtime_contract_and_ends_the_session(
    world: World,
) -> None:
    from dataplane import keychannel

    mark = len(world.upstream.received)
    result = subprocess.run(
        [
            str(BIN / "aileron"),
            "launch",
            "--sandbox",
            "none",
            "--proxy",
            f"127.0.0.1:{world.service.proxy_port}",
            "--name",
            "dev-agent",
            "--",
            sys.executable,
            "-c",
            LAUNCHED_AGENT,
        ],
        env={**world.service.env, "OPENAI_API_KEY": "sk-users-own-real-key"},
        capture_output=True,
        timeout=120,
    )
    world.outputs["launch"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    assert b"UNSANDBOXED" in result.stderr
    seen = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert seen["status"] == 200
    env = seen["env"]
    assert env["HTTPS_PROXY"].startswith("http://aileron:ail_ses_")
    assert env["AILERON_TOKEN"] in env["HTTPS_PROXY"]
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["NODE_EXTRA_CA_CERTS"]
    assert env["OPENAI_API_KEY"] == "sk-aileron-placeholder"  # the user's own key is not inherited
    assert "AILERON_PASSPHRASE" not in env
    assert not any(c.decode() in json.dumps(env) for c in world.canaries.values())
    [got] = world.received_since(mark)
    assert got.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    # the session ended with the command: keys wiped, token refused, CA file gone
    socket_path = world.service.home / "run" / "credentials.sock"
    status = keychannel.request(socket_path, {"op": "status", "session_id": env["AILERON_SESSION_ID"]})
    assert status["open"] is False
    assert not Path(env["SSL_CERT_FILE"]).exists()
    time.sleep(1.2)  # the proxy's session cache (AILERON_SESSION_CACHE_SECONDS=1)
    gone = f"http://aileron:{env['AILERON_TOKEN']}@127.0.0.1:{world.service.proxy_port}"
    with httpx.Client(proxy=gone, verify=world.tls()) as client, pytest.raises(httpx.ProxyError) as caught:
        client.get("https://api.github.com/repos/acme/after")
    assert "407" in str(caught.value)
    records = world.audit_wait(lambda rs: any(r["agent"] == "dev-agent" for r in rs), action="github.get-repo")
    assert any(r["path"] == "/repos/acme/launched" for r in records if r["agent"] == "dev-agent")


def test_launch_refuses_a_bad_devcontainer_with_one_line_before_opening_a_session(world: World, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".devcontainer").mkdir(parents=True)
    (project / ".devcontainer" / "devcontainer.json").write_text(
        '{"customizations": {"aileron": {"approval_surface": "phone"}}}', encoding="utf-8"
    )
    with world.api() as api:
        before = api.get(f"/api/v1/orgs/{world.org_id}/session-tokens/").json()["count"]
    for sandbox in ("docker", "netns"):
        result = subprocess.run(
            [str(BIN / "aileron"), "launch", "--sandbox", sandbox, "--dir", str(project), "--", "true"],
            env={**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}"},
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr.decode()
        err = result.stderr.decode()
        assert err.count("\n") == 1 and "customizations.aileron.approval_surface" in err, err
    with world.api() as api:
        assert api.get(f"/api/v1/orgs/{world.org_id}/session-tokens/").json()["count"] == before


def test_an_egress_allowlist_refuses_other_hosts_but_not_connector_actions(world: World) -> None:
    def set_egress(body: dict[str, object]) -> None:
        with world.api() as api:
            reply = api.put(f"/api/v1/orgs/{world.org_id}/egress/", json=body)
        assert reply.status_code == 200, reply.text
        time.sleep(1.2)  # the proxy re-reads the session's context after AILERON_SESSION_CACHE_SECONDS

    mark = len(world.upstream.received)
    set_egress({"mode": "allowlist", "allow": ["*.pypi.org"]})
    try:
        status, problem = refused(world, curl(world, "https://docs.example.com/blocked"))
        assert status == 403 and problem["type"] == "urn:aileron:problem:egress-denied"
        assert world.received_since(mark) == []
        status, _ = status_and_body(curl(world, "https://api.github.com/repos/acme/app"))
        assert status == 200  # the credentialed tier does not depend on the allowlist
        set_egress({"mode": "allowlist", "allow": ["docs.example.com"]})
        status, _ = status_and_body(curl(world, "https://docs.example.com/allowed"))
        assert status == 200
    finally:
        set_egress({"mode": "open", "allow": []})
    assert [r.path for r in world.received_since(mark)] == ["/repos/acme/app", "/allowed"]
    world.audit_wait(lambda rs: any(r["problem_type"] == "egress-denied" for r in rs))


def test_aileron_audit_query_shows_what_the_agent_did(world: World) -> None:
    curl(world, "https://api.github.com/repos/acme/audited")
    world.audit_wait(lambda rs: any(r["path"] == "/repos/acme/audited" for r in rs))
    result = subprocess.run(
        [str(BIN / "aileron"), "audit", "query", "--action", "github.*", "--since", "1h", "--json"],
        env=world.service.env,
        capture_output=True,
        timeout=60,
    )
    world.outputs["audit query"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    rows = json.loads(result.stdout)
    assert any(r["path"] == "/repos/acme/audited" and r["action"] == "github.get-repo" for r in rows)
    assert all(r["action"].startswith("github.") for r in rows)
    table = subprocess.run(
        [str(BIN / "aileron"), "audit", "query", "--action", "github.get-repo"],
        env={**world.service.env, "COLUMNS": "250"},
        capture_output=True,
        timeout=60,
    )
    assert table.returncode == 0 and b"github.get-repo" in table.stdout


def test_zz_the_canary_credentials_appear_nowhere_the_agent_or_an_operator_can_read(world: World) -> None:
    """Runs last in this module: every response, log, audit record, file and database dump of the whole run."""
    blobs: dict[str, bytes] = {f"output {k}": v for k, v in world.outputs.items()}
    blobs["service log"] = world.service.log.read_bytes()
    blobs["audit api"] = json.dumps(world.audit()).encode()
    for path in world.service.home.rglob("*"):
        if path.is_file():
            blobs[str(path)] = path.read_bytes()
    database_url = world.service.env.get("DATABASE_URL")
    if database_url:
        dump = subprocess.run(["pg_dump", database_url], capture_output=True, timeout=120, check=True)
        blobs["pg_dump"] = dump.stdout
    from tests.test_vault_canary import find_canary

    assert len(blobs) > 10
    for name, canary in world.canaries.items():
        assert find_canary(canary, blobs) == [], name

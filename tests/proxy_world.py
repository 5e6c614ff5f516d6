"""A running Aileron with the data plane in front of local fake HTTPS upstreams, for the proxy's end-to-end tests.

The upstreams answer as every built-in connector's host (api.github.com, api.stripe.com, api.openai.com,
api.anthropic.com, generativelanguage.googleapis.com, api.linear.app, slack.com) and an uncredentialed
docs.example.com, all on one local port: the data plane maps those names there (AILERON_UPSTREAM_RESOLVE) and
trusts the fake CA in addition to the public roots (AILERON_UPSTREAM_CA). Clients reach them only through the
proxy, trusting the session's CA.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fake_upstream import Received, Reply, Upstream, fake_upstream
from tests.service import BIN, Service, running_service

HOSTS = (
    "api.github.com",
    "api.stripe.com",
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "api.linear.app",
    "slack.com",
    "docs.example.com",
)
CONNECTORS = ("github", "stripe", "openai", "anthropic", "gemini", "linear", "slack")


@dataclass
class World:
    service: Service
    upstream: Upstream
    token: str
    session_id: str
    ca_file: Path
    canaries: dict[str, bytes]
    org_id: str
    pat: str
    outputs: dict[str, bytes] = field(default_factory=dict)

    @property
    def proxy_url(self) -> str:
        return f"http://aileron:{self.token}@{self.service.host}:{self.service.proxy_port}"

    def agent_env(self, **extra: str) -> dict[str, str]:
        """The runtime contract an agent gets: proxy, token, session CA; no credential."""
        env = {k: v for k, v in self.service.env.items() if k not in ("AILERON_PASSPHRASE",)}
        env.update(
            HTTPS_PROXY=self.proxy_url,
            https_proxy=self.proxy_url,
            AILERON_TOKEN=self.token,
            SSL_CERT_FILE=str(self.ca_file),
            REQUESTS_CA_BUNDLE=str(self.ca_file),
            NODE_EXTRA_CA_CERTS=str(self.ca_file),
            NO_PROXY="",
            no_proxy="",
        )
        env.update(extra)
        return env

    def tls(self) -> ssl.SSLContext:
        """What an agent's client trusts: the session CA, and nothing else."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.service.url, headers={"Authorization": f"Bearer {self.pat}"}, timeout=30)

    def audit(self, **params: str) -> list[dict[str, Any]]:
        with self.api() as api:
            response = api.get(f"/api/v1/orgs/{self.org_id}/audit/", params={"limit": "500", **params})
        assert response.status_code == 200, response.text
        body = response.json()
        return list(body["results"] if isinstance(body, dict) else body)

    def audit_wait(self, predicate: Any, timeout: float = 20.0, **params: str) -> list[dict[str, Any]]:
        """Audit records (as the API shows them) once `predicate(records)` holds; the spool ships asynchronously."""
        deadline = time.monotonic() + timeout
        records: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            records = self.audit(**params)
            if predicate(records):
                return records
            time.sleep(0.2)
        raise AssertionError(f"audit never matched; last records: {json.dumps(records, indent=1)[:4000]}")

    def received_since(self, mark: int) -> list[Received]:
        return self.upstream.received[mark:]


def _llm_responder(received: Received) -> Reply | None:
    try:
        body = json.loads(received.body or b"{}")
    except ValueError:
        body = {}
    stream = bool(body.get("stream"))
    if received.path.startswith("/v1/chat/completions"):
        if not stream:
            reply = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            }
            return Reply(200, {"Content-Type": "application/json"}, [json.dumps(reply).encode()])
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06"}
        events = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "he"}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": {"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18}},
        ]
        chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        return Reply(200, {"Content-Type": "text/event-stream"}, chunks)
    if received.path.startswith("/v1beta/models/"):
        usage = {"promptTokenCount": 41, "candidatesTokenCount": 12, "totalTokenCount": 53}
        part: dict[str, Any] = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "index": 0}]}
        if ":streamGenerateContent" in received.path:
            gemini_events: list[dict[str, Any]] = [
                part,
                {**part, "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"},
            ]
            chunks = [f"data: {json.dumps(e)}\r\n\r\n".encode() for e in gemini_events]
            return Reply(200, {"Content-Type": "text/event-stream"}, chunks)
        reply = {**part, "usageMetadata": {**usage, "candidatesTokenCount": 6}, "modelVersion": "gemini-2.5-flash"}
        return Reply(200, {"Content-Type": "application/json"}, [json.dumps(reply).encode()])
    if received.path.startswith("/v1/messages"):
        model = body.get("model", "claude-sonnet-4-5")
        if not stream:
            reply = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "hi"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 21, "output_tokens": 9},
            }
            return Reply(200, {"Content-Type": "application/json"}, [json.dumps(reply).encode()])
        sse_events: list[tuple[str, dict[str, Any]]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_2",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 31, "output_tokens": 1},
                    },
                },
            ),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 17},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        chunks = [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in sse_events]
        return Reply(200, {"Content-Type": "text/event-stream"}, chunks)
    return None


def _echo_auth(received: Received) -> Reply | None:
    """A misbehaving upstream that echoes the credential back (the proxy must redact it)."""
    if received.path.startswith("/repos/echo/"):
        auth = received.headers.get("authorization", "")
        body = json.dumps({"full_name": "echo/echo", "you_sent": auth}).encode()
        # /repos/echo/chunked answers in chunks; any other repo with one Content-Length body
        chunks = [body[:20], body[20:]] if received.path.startswith("/repos/echo/chunked") else [body]
        return Reply(200, {"Content-Type": "application/json", "X-Echo": auth}, chunks)
    return None


def cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([str(BIN / "aileron"), *args], env=env, input=stdin, capture_output=True, timeout=90)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result


def session_ca(proxy_port: int, token: str, host: str = "127.0.0.1") -> bytes:
    with httpx.Client(proxy=f"http://aileron:{token}@{host}:{proxy_port}", timeout=10) as client:
        response = client.get("http://aileron.proxy/ca.pem")
    assert response.status_code == 200, response.text
    return response.content


@contextmanager
def proxy_world(
    folder: Path,
    *,
    extra_env: dict[str, str] | None = None,
    service_args: tuple[str, ...] = (),
    imported: dict[str, tuple[Path, str]] | None = None,
    elsewhere: dict[str, int] | None = None,
    plain_http: dict[str, int] | None = None,
    tcp: dict[str, int] | None = None,
    credentials: bool = True,
    host: str = "127.0.0.1",
) -> Iterator[World]:
    """`imported`: connector name -> (OpenAPI description, host), imported (bearer auth) before the service
    starts, enabled for the team and given a canary credential like the built-in ones.
    `elsewhere`: host name -> a local port it resolves to instead of the fake upstream's.
    `credentials=False`: no canary is added, so the session reaches no credential (its egress is not scanned).
    `plain_http`: host name -> a local port its plain HTTP (port 80) resolves to.
    `tcp`: "host:port" -> a local port it resolves to (raw TCP under the organization's rules).
    `host`: the address the service's API and proxy listen on.
    """
    imported = imported or {}
    elsewhere = elsewhere or {}
    hosts = (*HOSTS, *(api_host for _, api_host in imported.values()))
    with ExitStack() as stack:
        for name, (spec, api_host) in imported.items():
            home_env = {**os.environ, "AILERON_HOME": str(folder / "home")}
            cli(home_env, "connector", "import", str(spec), "--name", name, "--host", api_host, "--auth", "bearer")
        upstream = stack.enter_context(fake_upstream(folder / "upstream", hosts=hosts))
        upstream.responders += [_llm_responder, _echo_auth]
        env = {
            "AILERON_UPSTREAM_RESOLVE": ",".join(
                [
                    *(
                        f"{h}:443=127.0.0.1:{elsewhere.get(h, upstream.port)}"
                        for h in (*hosts, *elsewhere.keys() - set(hosts))
                    ),
                    *(f"{h}:80=127.0.0.1:{port}" for h, port in (plain_http or {}).items()),
                    *(f"{dest}=127.0.0.1:{port}" for dest, port in (tcp or {}).items()),
                ]
            ),
            "AILERON_UPSTREAM_CA": str(upstream.ca_file),
            "AILERON_SESSION_CACHE_SECONDS": "1",
            "AILERON_MAX_BODY_BYTES": str(256 * 1024),
            **(extra_env or {}),
        }
        service = stack.enter_context(running_service(folder, extra_env=env, service_args=service_args, host=host))
        outputs: dict[str, bytes] = {}

        def keep(label: str, result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
            outputs[f"{label} stdout"] = result.stdout
            outputs[f"{label} stderr"] = result.stderr
            return result

        keep("init", cli(service.env, "init", "--org", "Acme", "--email", "alice@example.com", "--server", service.url))
        login = json.loads((service.home / "cli.json").read_text())
        pat, org_id = login["token"], login["organization_id"]
        # As the README says: `init` put the owner in the team "everyone"; the connectors are enabled for it.
        for name in (*CONNECTORS, *imported):
            keep(f"enable {name}", cli(service.env, "connector", "enable", name, "--team", "everyone"))
        names = (*CONNECTORS, *imported) if credentials else ()
        canaries = {name: f"canary-{name}-{secrets.token_hex(12)}".encode() for name in names}
        for name, value in canaries.items():
            keep(
                f"secret add {name}",
                cli(service.env, "secret", "add", f"{name}-key", "--connector", name, stdin=value + b"\n"),
            )
        started = json.loads(keep("session start", cli(service.env, "session", "start", "--json")).stdout)
        ca_file = folder / "session-ca.pem"
        ca_file.write_bytes(session_ca(service.proxy_port, started["token"], host))
        yield World(
            service=service,
            upstream=upstream,
            token=started["token"],
            session_id=started["session_id"],
            ca_file=ca_file,
            canaries=canaries,
            org_id=org_id,
            pat=pat,
            outputs=outputs,
        )


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer framed by Content-Length (or none), read to its end or until the socket closes."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _content_length(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def _content_length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0

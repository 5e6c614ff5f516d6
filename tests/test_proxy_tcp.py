"""Raw TCP (SSH to a git host, a database port) under the organization's "host:port" rules, through a real
`aileron service`: refused by default, relayed and audited when a rule allows it, never to a connector's host or
a private address, and reached from inside a sandbox by the relay's `--connect` (ssh's ProxyCommand)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy_world import World, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GIT = "git.example.com"
GIT_PORT = 2222
DB = "db.example.com"
DB_PORT = 5432
BANNER = b"SSH-2.0-FakeGit_1.0\r\n"  # the server speaks first, as SSH and MySQL servers do
RELAY = Path(__file__).resolve().parents[1] / "runtime" / "sandbox" / "relay.py"


class BannerServer:
    """Sends a banner on connect, then answers every line upper-cased; keeps what it received."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self.received = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(BANNER)
            while data := conn.recv(65536):
                self.received += data
                conn.sendall(data.upper())


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, BannerServer]]:
    made = {"git": BannerServer(), "db": BannerServer()}
    yield made
    for server in made.values():
        server.listener.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, BannerServer]) -> Iterator[World]:
    tcp = {f"{GIT}:{GIT_PORT}": servers["git"].port, f"{DB}:{DB_PORT}": servers["db"].port}
    tcp[f"api.github.com:{GIT_PORT}"] = servers["git"].port  # a connector's host, on another port
    with proxy_world(tmp_path_factory.mktemp("tcp"), tcp=tcp) as w:
        yield w


def _set_rules(world: World, rules: list[str]) -> httpx.Response:
    with world.api() as api:
        reply = api.put(f"/api/v1/orgs/{world.org_id}/egress/", json={"mode": "open", "allow": [], "tcp": rules})
    time.sleep(1.2)  # the data plane re-reads a session's context after AILERON_SESSION_CACHE_SECONDS (1 here)
    return reply


def _connect(world: World, destination: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    auth = base64.b64encode(f"aileron:{world.token}".encode()).decode()
    sock.sendall(
        f"CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def _read(sock: socket.socket, until: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while until not in data:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break  # what arrived so far
        if not chunk:
            break
        data += chunk
    return data


def test_raw_tcp_is_refused_without_a_rule_and_nothing_reaches_the_destination(
    world: World, servers: dict[str, BannerServer]
) -> None:
    assert _set_rules(world, []).status_code == 200
    before = servers["git"].connections
    sock, head = _connect(world, f"{GIT}:{GIT_PORT}")
    assert head.startswith(b"HTTP/1.1 200")  # a tunnel: the proxy expects TLS inside it
    sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    answer = _read(sock, b"\r\n\r\n", timeout=5)
    sock.close()
    assert BANNER not in answer and b"SSH-2.0-FakeGit" not in answer
    assert servers["git"].connections == before


def test_a_rule_relays_raw_bytes_both_ways_and_the_tunnel_is_audited(
    world: World, servers: dict[str, BannerServer]
) -> None:
    assert _set_rules(world, [f"{GIT}:{GIT_PORT}"]).status_code == 200
    sock, head = _connect(world, f"{GIT}:{GIT_PORT}")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert _read(sock, b"\r\n") == BANNER  # sent before the client said anything: the relay starts at once
    sock.sendall(b"hello git\n")
    assert _read(sock, b"\n") == b"HELLO GIT\n"
    sock.close()
    assert b"hello git\n" in bytes(servers["git"].received)
    records = world.audit_wait(
        lambda rs: any(r["kind"] == "tcp" and r["host"] == GIT and r.get("completed_at") for r in rs)
    )
    [record] = [r for r in records if r["kind"] == "tcp" and r["host"] == GIT]
    assert record["decision"] == "allow" and record["method"] == "CONNECT" and record["args"] == {"port": GIT_PORT}
    assert f"{GIT}:{GIT_PORT}" in record["reason"] and record["credential_id"] is None
    assert record["request_bytes"] == len(b"hello git\n")
    assert record["response_bytes"] == len(BANNER) + len(b"HELLO GIT\n")


def test_a_rule_never_opens_a_connectors_host_or_another_port(world: World, servers: dict[str, BannerServer]) -> None:
    assert _set_rules(world, [f"{GIT}:{GIT_PORT}", f"api.github.com:{GIT_PORT}"]).status_code == 200
    before = servers["git"].connections
    for destination in (f"api.github.com:{GIT_PORT}", f"{GIT}:2223"):
        sock, head = _connect(world, destination)
        sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        answer = _read(sock, b"\r\n\r\n", timeout=5)
        sock.close()
        assert BANNER not in answer, destination
    assert servers["git"].connections == before


def test_a_rule_never_reaches_a_private_address(world: World) -> None:
    assert _set_rules(world, ["localhost:2222"]).status_code == 200  # resolves to loopback: guarded
    sock, head = _connect(world, "localhost:2222")
    body = _read(sock, b"}", timeout=5)
    sock.close()
    assert head.startswith(b"HTTP/1.1 403") and b"private-address" in head + body, head + body


def test_rules_are_checked_when_written(world: World) -> None:
    with world.api() as api:
        for bad in ("github.com", "github.com:443", "github.com:80", "github.com:0", "github.com:99999", "*:22"):
            reply = api.put(f"/api/v1/orgs/{world.org_id}/egress/", json={"mode": "open", "allow": [], "tcp": [bad]})
            assert reply.status_code == 400, (bad, reply.text)
            assert reply.headers["content-type"].startswith("application/problem+json")
        ok = api.put(
            f"/api/v1/orgs/{world.org_id}/egress/",
            json={"mode": "open", "allow": [], "tcp": ["GitHub.com:22", "github.com:22", "*.db.example.com:5432"]},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["tcp"] == ["github.com:22", "*.db.example.com:5432"]


def test_the_sandbox_relay_connects_ssh_style_through_the_proxy(world: World, servers: dict[str, BannerServer]) -> None:
    """`relay.py --connect HOST:PORT` as ssh's ProxyCommand: standard input and output through the tunnel; a
    destination without a rule is one line naming the proxy's reason, exit 1."""
    assert _set_rules(world, [f"{DB}:{DB_PORT}"]).status_code == 200
    env = {"HTTPS_PROXY": world.proxy_url, "PATH": "/usr/bin:/bin"}
    relayed = subprocess.Popen(
        [sys.executable, str(RELAY), "--connect", f"{DB}:{DB_PORT}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert relayed.stdin is not None and relayed.stdout is not None
    relayed.stdin.write(b"select 1;\n")
    relayed.stdin.flush()
    got = b""
    deadline = time.monotonic() + 20
    while got != BANNER + b"SELECT 1;\n" and time.monotonic() < deadline:
        got += os.read(relayed.stdout.fileno(), 65536)  # what the server sent first, then its answer
    relayed.stdin.close()  # as ssh does when its session ends: the relay finishes
    assert relayed.wait(timeout=20) == 0, relayed.stderr.read() if relayed.stderr else b""
    assert got == BANNER + b"SELECT 1;\n"
    refused = subprocess.run(
        [sys.executable, str(RELAY), "--connect", f"{GIT}:{GIT_PORT}"],
        input=b"",
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 1 and refused.stdout == b""
    line = refused.stderr.decode().strip()
    assert line.startswith("aileron: the proxy refused git.example.com:2222") and "\n" not in line, line
    records = world.audit(session=world.session_id)
    assert any(r["kind"] == "tcp" and r["host"] == DB for r in records), json.dumps(records)[:2000]

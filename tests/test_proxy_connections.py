"""Connections as a resource, attacked through a real `aileron service`: a flood of idle connections, and one
session opening more tunnels than it may. Each case asserts what other agents still get, and the audit."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy_world import World, proxy_world, read_answer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MAX_CONNECTIONS = 40
SESSION_CONNECTIONS = 6
IDLE = 3.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {
        "AILERON_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "AILERON_SESSION_MAX_CONNECTIONS": str(SESSION_CONNECTIONS),
        "AILERON_HEADER_TIMEOUT_SECONDS": "30",  # idle ones are not closed by their deadline during a test
        "AILERON_IDLE_TIMEOUT_SECONDS": str(IDLE),
        "AILERON_UPSTREAM_RESPONSE_TIMEOUT_SECONDS": "8",
    }
    with proxy_world(tmp_path_factory.mktemp("connections"), extra_env=env) as w:
        yield w


def _connect(world: World) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    auth = base64.b64encode(f"aileron:{world.token}".encode()).decode()
    sock.sendall(f"CONNECT api.github.com:443 HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    return sock, read_answer(sock)


def _is_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def test_a_flood_of_idle_connections_never_locks_out_an_agent(world: World) -> None:
    idle = [socket.create_connection(("127.0.0.1", world.service.proxy_port)) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        time.sleep(1)
        started = time.monotonic()
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=10) as client:
            for _ in range(3):
                assert client.get("https://api.github.com/repos/acme/app").status_code == 200
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        still_open = sum(not _is_closed(s) for s in idle)
    finally:
        for sock in idle:
            sock.close()
    print(f"{len(idle)} idle connections: {still_open} still open; an agent's 3 requests took {elapsed:.2f} s")
    assert still_open <= MAX_CONNECTIONS  # the table stays bounded: the oldest idle ones were closed for room
    log = world.service.log.read_text(errors="replace")
    assert "Traceback" not in log


def test_a_session_opens_no_more_tunnels_than_its_limit(world: World) -> None:
    context = ssl.create_default_context(cafile=str(world.ca_file))
    held = []
    try:
        for _ in range(SESSION_CONNECTIONS):
            sock, answer = _connect(world)
            assert b" 200 " in answer.split(b"\r\n", 1)[0], answer
            tls = context.wrap_socket(sock, server_hostname="api.github.com")
            tls.sendall(b"GET /repos/acme/app HTTP/1.1\r\nHost: api.github.com\r\n\r\n")  # keep-alive, in use
            assert tls.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(tls)
        extra, answer = _connect(world)
        extra.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429"), answer[:300]
        problem = json.loads(body)
        assert problem["type"] == "urn:aileron:problem:too-many-connections"
        assert f"the limit is {SESSION_CONNECTIONS}" in problem["detail"]
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the closed tunnel is given back as soon as the proxy sees it close
            sock, answer = _connect(world)
            sock.close()
            if b" 200 " in answer.split(b"\r\n", 1)[0] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:300]
    finally:
        for tls in held:
            tls.close()
    records = world.audit_wait(lambda rs: any(r["problem_type"] == "too-many-connections" for r in rs))
    record = next(r for r in records if r["problem_type"] == "too-many-connections")
    assert record["session_id"] == world.session_id and record["decision"] == "deny"


def _healthz(world: World) -> socket.socket:
    """A connection that sent one request (no token needed) and got its answer: kept alive, idle."""
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    sock.sendall(b"GET http://aileron.proxy/healthz HTTP/1.1\r\nHost: aileron.proxy\r\n\r\n")
    answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return sock


def test_a_table_full_of_kept_alive_idle_connections_never_locks_out_an_agent(world: World) -> None:
    idle = [_healthz(world) for _ in range(MAX_CONNECTIONS)]
    try:
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=10) as client:
            for _ in range(3):
                assert client.get("https://api.github.com/repos/acme/app").status_code == 200
        time.sleep(0.5)
        closed = sum(_is_closed(s) for s in idle)
    finally:
        for sock in idle:
            sock.close()
    assert closed >= 1  # the idle ones made room, the agent was served


def test_a_connection_idle_between_requests_is_closed_and_one_waiting_for_its_answer_is_not(world: World) -> None:
    idle = _healthz(world)
    context = ssl.create_default_context(cafile=str(world.ca_file))
    sock, answer = _connect(world)
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer
    waiting = context.wrap_socket(sock, server_hostname="api.github.com")
    waiting.sendall(b"GET /repos/hang/app HTTP/1.1\r\nHost: api.github.com\r\n\r\n")  # never answered upstream
    started = time.monotonic()
    waiting.settimeout(20)
    reply = waiting.recv(65536)  # the proxy's 504 at the response timeout (8 s), long after IDLE
    waited = time.monotonic() - started
    waiting.close()
    assert reply.startswith(b"HTTP/1.1 504"), reply[:200]
    assert waited > 2 * IDLE
    assert _is_closed(idle), "a connection idle for longer than the idle timeout is still open"
    idle.close()

"""Plain-HTTP egress for package mirrors, through a real `aileron service`: refused by default, forwarded and
audited for the hosts an organization lists, never to a connector's host, never with a credential; driven with
curl and with apt itself, whose default Debian sources are http://."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_world import World, cli, proxy_world, read_answer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MIRROR = "mirror.example.org"
SESSION_CONNECTIONS = 4
PACKAGES = b"Package: hello-aileron\nVersion: 1.0\nArchitecture: all\nFilename: pool/h/hello.deb\nSize: 1\n\n"


@dataclass
class Mirror:
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)
    echo: bytes = b""  # sent back in every answer (a reflecting mirror)


@pytest.fixture(scope="module")
def mirror() -> Iterator[Mirror]:
    state = Mirror(port=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
            path = self.path.split("?", 1)[0]
            if path.endswith("/Release"):
                body = b"Origin: aileron-test\nSuite: stable\nCodename: stable\nComponents: main\nArchitectures: all\n"
            elif path.endswith("/binary-all/Packages"):
                body = PACKAGES
            elif path.startswith("/hang"):
                time.sleep(6)  # an answer that takes its time: the connection stays busy meanwhile
                body = b"late"
            elif path.startswith("/files/"):
                body = b"mirror file " + path.encode() + state.echo
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror) -> Iterator[World]:
    with proxy_world(
        tmp_path_factory.mktemp("plain"),
        plain_http={MIRROR: mirror.port, "api.github.com": mirror.port},
        extra_env={"AILERON_SESSION_MAX_CONNECTIONS": str(SESSION_CONNECTIONS)},
    ) as w:
        yield w


def _set_plain_http(world: World, hosts: list[str]) -> None:
    with world.api() as api:
        reply = api.put(f"/api/v1/orgs/{world.org_id}/egress/", json={"mode": "open", "allow": [], "plain_http": hosts})
    assert reply.status_code == 200, reply.text
    assert reply.json()["plain_http"] == hosts
    time.sleep(1.5)  # the data plane re-reads the session's context after AILERON_SESSION_CACHE_SECONDS


def _curl(world: World, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603
        ["curl", "-sS", "-i", "--max-time", "20", "-x", world.proxy_url, url],  # noqa: S607
        capture_output=True,
        timeout=30,
    )


def test_plain_http_is_refused_by_default_and_nothing_reaches_the_mirror(world: World, mirror: Mirror) -> None:
    _set_plain_http(world, [])
    before = len(mirror.seen)
    done = _curl(world, f"http://{MIRROR}/files/default-{uuid.uuid4().hex[:6]}")
    head = done.stdout.split(b"\r\n", 1)[0]
    assert b" 403 " in head, done.stdout[:300]
    assert b"urn:aileron:problem:https-only" in done.stdout
    assert b"plain-HTTP egress hosts" in done.stdout  # says what an admin can do
    assert len(mirror.seen) == before
    world.audit_wait(lambda rs: any(r["host"] == MIRROR and r["problem_type"] == "https-only" for r in rs))


def test_a_listed_mirror_is_reached_over_plain_http_audited_and_without_the_session_token(
    world: World, mirror: Mirror
) -> None:
    _set_plain_http(world, [MIRROR])
    path = f"/files/listed-{uuid.uuid4().hex[:6]}"
    done = _curl(world, f"http://{MIRROR}{path}")
    assert done.stdout.startswith(b"HTTP/1.1 200"), done.stdout[:300] + done.stderr
    assert done.stdout.endswith(b"mirror file " + path.encode())
    [seen] = [s for s in mirror.seen if s["path"] == path]
    assert "proxy-authorization" not in seen["headers"] and "authorization" not in seen["headers"]
    assert world.token not in repr(seen)
    assert not any(canary.decode() in repr(seen) for canary in world.canaries.values())
    records = world.audit_wait(lambda rs: any(r["path"] == path and r["completed_at"] for r in rs))
    record = next(r for r in records if r["path"] == path)
    assert (record["kind"], record["decision"], record["host"]) == ("egress", "allow", MIRROR)
    assert record["session_id"] == world.session_id and record["upstream_status"] == 200


def test_a_connectors_host_is_never_reached_over_plain_http_even_when_listed(world: World, mirror: Mirror) -> None:
    _set_plain_http(world, [MIRROR, "api.github.com"])
    before = len(mirror.seen)
    done = _curl(world, "http://api.github.com/repos/acme/app")
    assert b" 403 " in done.stdout.split(b"\r\n", 1)[0], done.stdout[:300]
    assert b"reached over HTTPS only" in done.stdout
    assert len(mirror.seen) == before


def test_a_credential_never_leaves_over_plain_http_and_an_echo_never_comes_back(world: World, mirror: Mirror) -> None:
    _set_plain_http(world, [MIRROR])
    canary = world.canaries["github"]
    before = len(mirror.seen)
    done = _curl(world, f"http://{MIRROR}/files/leak?token={canary.decode()}")
    assert b" 403 " in done.stdout.split(b"\r\n", 1)[0] and b"credential-in-request" in done.stdout
    assert len(mirror.seen) == before
    mirror.echo = b" echo " + canary
    try:
        done = _curl(world, f"http://{MIRROR}/files/echo")
    finally:
        mirror.echo = b""
    assert done.stdout.startswith(b"HTTP/1.1 200") and b"mirror file /files/echo" in done.stdout
    assert canary not in done.stdout


def test_a_port_other_than_80_is_refused(world: World) -> None:
    _set_plain_http(world, [MIRROR])
    done = _curl(world, f"http://{MIRROR}:8080/files/x")
    assert b" 403 " in done.stdout.split(b"\r\n", 1)[0] and b"port 80 only" in done.stdout


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is not installed (not a Debian machine)")
def test_apt_updates_from_a_listed_mirror_through_the_proxy(world: World, mirror: Mirror, tmp_path: Path) -> None:
    _set_plain_http(world, [MIRROR])
    root = tmp_path / "apt"
    for folder in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial", "cache/archives/partial"):
        (root / folder).mkdir(parents=True)
    (root / "etc/sources.list").write_text(f"deb [trusted=yes] http://{MIRROR}/debian stable main\n")
    options = {
        "Dir::Etc": str(root / "etc"),
        "Dir::Etc::sourcelist": str(root / "etc/sources.list"),
        "Dir::Etc::sourceparts": str(root / "etc/sources.list.d"),
        "Dir::Etc::preferencesparts": str(root / "etc/preferences.d"),
        "Dir::State": str(root / "state"),
        "Dir::Cache": str(root / "cache"),
        "APT::Architectures": "all",
        "APT::Architecture": "amd64",
        "Acquire::Languages": "none",
        "Acquire::http::Proxy": world.proxy_url,
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "root",
    }
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    done = subprocess.run(  # noqa: S603
        ["apt-get", *args, "update"],  # noqa: S607
        capture_output=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    lists = list((root / "state/lists").glob("*Packages*"))
    assert lists and b"hello-aileron" in lists[0].read_bytes(), list((root / "state/lists").iterdir())
    records = world.audit_wait(lambda rs: any(r["path"].endswith("/binary-all/Packages") for r in rs))
    assert all(r["kind"] == "egress" for r in records if r["host"] == MIRROR and r["decision"] == "allow")


def test_the_plain_http_hosts_are_validated_like_the_allow_list(world: World) -> None:
    with world.api() as api:
        reply = api.put(
            f"/api/v1/orgs/{world.org_id}/egress/", json={"mode": "open", "allow": [], "plain_http": ["http://x/"]}
        )
        assert reply.status_code == 400, reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        kept = api.get(f"/api/v1/orgs/{world.org_id}/egress/").json()
    assert "http://x/" not in kept["plain_http"]


def _busy_plain(world: World, token: str) -> tuple[socket.socket, bytes]:
    """A connection sending a plain-HTTP request whose answer takes seconds; what came back within 0.5 s."""
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    auth = base64.b64encode(f"aileron:{token}".encode()).decode()
    sock.sendall(
        f"GET http://{MIRROR}/hang HTTP/1.1\r\nHost: {MIRROR}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    sock.settimeout(0.5)
    try:
        return sock, read_answer(sock)
    except TimeoutError:
        return sock, b""  # nothing yet: the answer is in flight


def test_plain_http_connections_count_against_the_session_and_user_limits(world: World) -> None:
    _set_plain_http(world, [MIRROR])
    tokens = [json.loads(cli(world.service.env, "session", "start", "--json").stdout)["token"] for _ in range(3)]
    held: list[socket.socket] = []
    try:
        for token in tokens[:2]:  # two sessions of one user, each at its limit with answers in flight
            for _ in range(SESSION_CONNECTIONS):
                sock, early = _busy_plain(world, token)
                assert early == b"", early[:200]
                held.append(sock)
        sock, refused = _busy_plain(world, tokens[0])  # one more for a full session
        sock.close()
        assert b" 429 " in refused.split(b"\r\n", 1)[0] and b"too-many-connections" in refused, refused[:300]
        assert b"this session has" in refused
        sock, refused = _busy_plain(world, tokens[2])  # a third session of the same user: the user's limit
        sock.close()
        assert b" 429 " in refused.split(b"\r\n", 1)[0], refused[:300]
        assert f"your sessions have {2 * SESSION_CONNECTIONS}".encode() in refused
    finally:
        for sock in held:
            sock.close()

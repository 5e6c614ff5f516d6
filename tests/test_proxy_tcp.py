"""Raw TCP (SSH to a git host, a database port) under the organization's "host:port" rules, through a real
`aileron service`: refused by default, relayed and audited when a rule allows it, never to a connector's host or
a private address, and reached from inside a sandbox by the relay's `--connect` (ssh's ProxyCommand)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy_world import World, cli, proxy_world
from tests.service import BIN

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
    refused = _set_rules(world, [f"{GIT}:{GIT_PORT}", f"api.github.com:{GIT_PORT}"])  # refused when written
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/problem+json")
    assert "api.github.com is the github connector's host" in refused.text, refused.text
    assert _set_rules(world, [f"{GIT}:{GIT_PORT}"]).status_code == 200
    before = servers["git"].connections
    for destination in (f"api.github.com:{GIT_PORT}", f"{GIT}:2223"):
        sock, head = _connect(world, destination)
        sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        answer = _read(sock, b"\r\n\r\n", timeout=5)
        sock.close()
        assert BANNER not in answer, destination
    assert servers["git"].connections == before


def test_a_rule_never_reaches_a_private_address(world: World) -> None:
    for rule in ("localhost:2222", "127.0.0.1:22", "10.0.0.1:5432", "169.254.169.254:22", "db.localhost:5432"):
        refused = _set_rules(world, [rule])  # refused when written: the proxy would never connect there
        assert refused.status_code == 400 and "never reached" in refused.json()["detail"], (rule, refused.text)


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


def test_an_open_tunnel_is_closed_once_its_session_ends_or_its_rule_is_removed(
    world: World, servers: dict[str, BannerServer]
) -> None:
    """A tunnel carries no requests to re-check: the proxy re-checks its session and rule itself, and an SSH
    session kept alive by keep-alives does not outlive either. The outcome says why it was closed."""
    assert _set_rules(world, [f"{GIT}:{GIT_PORT}", f"{DB}:{DB_PORT}"]).status_code == 200
    started = json.loads(cli(world.service.env, "session", "start", "--json").stdout)
    token = started["token"]

    def tunnel(destination: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
        auth = base64.b64encode(f"aileron:{token}".encode()).decode()
        sock.sendall(
            f"CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\nProxy-Authorization: Basic {auth}\r\n"
            "X-Aileron-Tunnel: tcp\r\n\r\n".encode()
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: the banner follows at once
            head += sock.recv(1) or b"\r\n\r\n"
        assert head.startswith(b"HTTP/1.1 200"), head
        assert _read(sock, b"\r\n") == BANNER
        return sock

    def closed_within(sock: socket.socket, seconds: float) -> bool:
        sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                sock.sendall(b"keep-alive\n")  # traffic, as SSH keep-alives would send
                if not sock.recv(65536):
                    return True
                time.sleep(0.2)
        return time.monotonic() < deadline

    db = tunnel(f"{DB}:{DB_PORT}")
    assert _set_rules(world, [f"{GIT}:{GIT_PORT}"]).status_code == 200  # the DB rule is gone
    assert closed_within(db, 15), "the tunnel outlived the rule that allowed it"
    git = tunnel(f"{GIT}:{GIT_PORT}")
    cli(world.service.env, "session", "end", started["session_id"])
    assert closed_within(git, 15), "the tunnel outlived its session"
    records = world.audit_wait(
        lambda rs: sum(1 for r in rs if r["kind"] == "tcp" and (r.get("error") or "").startswith("closed by")) >= 2,
        session=started["session_id"],
    )
    errors = sorted(r["error"] for r in records if r["kind"] == "tcp" and r.get("error"))
    assert errors == [
        f"closed by the proxy: no TCP rule allows {DB}:{DB_PORT} any more",
        "closed by the proxy: the session ended",
    ], errors


def test_a_database_client_reaches_its_port_through_aileron_tcp_listen(
    world: World, servers: dict[str, BannerServer]
) -> None:
    """A client with no ProxyCommand (psql, a driver) connects to `aileron tcp HOST:PORT --listen PORT` on the
    sandbox's loopback; each connection is a tunnel the real proxy allows under the rule and audits."""
    assert _set_rules(world, [f"{DB}:{DB_PORT}"]).status_code == 200
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = int(free.getsockname()[1])
    env = {"HTTPS_PROXY": world.proxy_url, "PATH": "/usr/bin:/bin"}
    listening = subprocess.Popen(
        [str(BIN / "aileron"), "tcp", f"{DB}:{DB_PORT}", "--listen", str(port)], env=env, stderr=subprocess.PIPE
    )
    try:
        assert listening.stderr is not None and b"leads to" in listening.stderr.readline()
        before = bytes(servers["db"].received)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert _read(conn, b"\r\n") == BANNER
            conn.sendall(b"select 2;\n")
            assert _read(conn, b"\n") == b"SELECT 2;\n"
        assert bytes(servers["db"].received)[len(before) :] == b"select 2;\n"
    finally:
        listening.kill()
        listening.wait()
    records = world.audit_wait(
        lambda rs: any(r["kind"] == "tcp" and r["host"] == DB and r.get("request_bytes") == 10 for r in rs)
    )
    assert any(r["kind"] == "tcp" and r["host"] == DB and r["decision"] == "allow" for r in records)


class Sshd:
    """A real OpenSSH server on a loopback port, for one key; every session runs one fixed command."""

    def __init__(self, folder: Path, client_key_pub: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        host_key = folder / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.port = _free_port()
        config = folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\nUsePAM no\n"
            f"StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nAuthorizedKeysFile {client_key_pub}\n"
            # what the client asks to run is in SSH_ORIGINAL_COMMAND: proof that the session really ran here
            'ForceCommand echo "aileron-sshd-ok: $SSH_ORIGINAL_COMMAND"\n'
        )
        self.process = subprocess.Popen(
            [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(folder / "sshd.log").open("wb"),
        )
        self.log = folder / "sshd.log"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise AssertionError(f"sshd did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_real_ssh_in_a_sandbox_reaches_a_git_host_only_under_a_rule(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The real OpenSSH client, run by `aileron launch` in the netns sandbox with no extra option: the sandbox's
    ssh configuration sends it through `aileron tcp` and the proxy to a real sshd when a rule allows the host;
    without the rule ssh fails with the proxy's reason and sshd never sees a connection."""
    missing = [n for n in ("ssh", "sshd", "ssh-keygen", "bwrap") if not shutil.which(n, path=f"{os.defpath}:/usr/sbin")]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (apt-get install openssh-client openssh-server bubblewrap): "
            "the real SSH test runs them"
        )
    folder = tmp_path_factory.mktemp("ssh")
    project = folder / "project"
    project.mkdir(mode=0o755)
    key = project / "id_ed25519"  # in the project, which the sandbox mounts: the agent's own deploy key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o600)
    sshd = Sshd(folder / "sshd", key.with_suffix(".pub"))
    try:
        with proxy_world(folder / "world", tcp={f"{GIT}:22": sshd.port}) as world:
            env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}"}
            ssh = (
                "ssh -i /workspace/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=no "
                f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@{GIT} hello-from-the-sandbox"
            )

            def launch(*options: str) -> subprocess.CompletedProcess[bytes]:
                return subprocess.run(
                    [
                        str(BIN / "aileron"),
                        "launch",
                        "--sandbox",
                        "netns",
                        "--dir",
                        str(project),
                        *options,
                        "--",
                        "sh",
                        "-c",
                        ssh,
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=120,
                )

            assert _set_rules(world, []).status_code == 200
            refused = launch()
            assert refused.returncode == 255, refused.stderr.decode()  # ssh's own exit code for a failed connection
            assert f"aileron: the proxy refused {GIT}:22: 403" in refused.stdout.decode(), refused.stdout.decode()
            assert "Accepted publickey" not in sshd.log.read_text()

            assert _set_rules(world, [f"{GIT}:22"]).status_code == 200
            allowed = launch()
            assert allowed.returncode == 0, allowed.stderr.decode() + sshd.log.read_text()
            assert allowed.stdout.decode().strip() == "aileron-sshd-ok: hello-from-the-sandbox"
            assert "Accepted publickey for root" in sshd.log.read_text()
            records = world.audit_wait(
                lambda rs: any(r["kind"] == "tcp" and r["decision"] == "allow" and r.get("completed_at") for r in rs)
            )
            tunnels = [r for r in records if r["host"] == GIT]
            assert {r["decision"] for r in tunnels} == {"allow", "deny"}, json.dumps(tunnels)[:2000]
            [done] = [r for r in tunnels if r["decision"] == "allow" and r["kind"] == "tcp"]
            assert done["args"] == {"port": 22} and done["request_bytes"] > 0 and done["response_bytes"] > 0

            # The same rule as the project's own: the devcontainer names the project, `--project ""` none.
            assert _set_rules(world, []).status_code == 200
            with world.api() as api:
                made = api.post(f"/api/v1/orgs/{world.org_id}/projects/", json={"name": "Infra", "slug": "infra"})
                rules = api.put(
                    f"/api/v1/orgs/{world.org_id}/projects/{made.json()['id']}/egress/", json={"tcp": [f"{GIT}:22"]}
                )
                assert rules.status_code == 200, rules.text
            (project / ".devcontainer").mkdir()
            (project / ".devcontainer" / "devcontainer.json").write_text(
                json.dumps({"customizations": {"aileron": {"project": "infra"}}})
            )
            for_project = launch()
            assert for_project.returncode == 0, for_project.stderr.decode()
            assert for_project.stdout.decode().strip() == "aileron-sshd-ok: hello-from-the-sandbox"
            without = launch("--project", "")
            assert without.returncode == 255, without.stderr.decode()
            assert f"aileron: the proxy refused {GIT}:22: 403" in without.stdout.decode()
            records = world.audit_wait(
                lambda rs: any("the project's rule" in r["reason"] and r.get("completed_at") for r in rs)
            )
            [by_project] = [r for r in records if "the project's rule" in r["reason"]]
            assert by_project["project"] == made.json()["id"] and by_project["response_bytes"] > 0
    finally:
        sshd.stop()


def test_a_projects_own_rule_opens_only_that_projects_sessions(world: World, servers: dict[str, BannerServer]) -> None:
    """A project's TCP rules (PUT .../projects/<id>/egress/) reach only sessions started for the project
    (`aileron session start --project SLUG`); the organization's other sessions stay refused. The audit names the
    project's rule, and removing it closes the open tunnel."""
    assert _set_rules(world, []).status_code == 200
    with world.api() as api:
        project = api.post(f"/api/v1/orgs/{world.org_id}/projects/", json={"name": "Payments", "slug": "payments"})
        assert project.status_code == 201, project.text
        where = f"/api/v1/orgs/{world.org_id}/projects/{project.json()['id']}/egress/"
        refused = api.put(where, json={"tcp": [f"{DB}:443"]})
        assert refused.status_code == 400 and refused.json()["errors"][0]["pointer"] == "/tcp/0", refused.text
        set_ = api.put(where, json={"tcp": [f"{DB}:{DB_PORT}"]})
        assert set_.status_code == 200 and set_.json()["tcp"] == [f"{DB}:{DB_PORT}"], set_.text
    unknown = subprocess.run(
        [str(BIN / "aileron"), "session", "start", "--project", "nope"],
        env=world.service.env,
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert unknown.returncode == 2 and b"no project 'nope'" in unknown.stderr, unknown.stderr
    started = json.loads(cli(world.service.env, "session", "start", "--project", "payments", "--json").stdout)
    time.sleep(1.2)
    before = servers["db"].connections

    def connect(token: str) -> tuple[socket.socket, bytes]:
        sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
        auth = base64.b64encode(f"aileron:{token}".encode()).decode()
        sock.sendall(
            f"CONNECT {DB}:{DB_PORT} HTTP/1.1\r\nHost: {DB}\r\nProxy-Authorization: Basic {auth}\r\n"
            "X-Aileron-Tunnel: tcp\r\n\r\n".encode()
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1) or b"\r\n\r\n"
        return sock, head

    other, head = connect(world.token)  # the same user's session without the project
    body = _read(other, b"}", timeout=5)
    other.close()
    assert head.startswith(b"HTTP/1.1 403") and b"tcp-not-allowed" in head + body, head + body
    assert servers["db"].connections == before
    mine, head = connect(started["token"])
    assert head.startswith(b"HTTP/1.1 200"), head
    assert _read(mine, b"\r\n") == BANNER
    mine.sendall(b"select 3;\n")
    assert _read(mine, b"\n") == b"SELECT 3;\n"
    with world.api() as api:
        assert api.put(where, json={"tcp": []}).status_code == 200
    mine.settimeout(15)
    deadline = time.monotonic() + 15
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            mine.sendall(b"keep-alive\n")
            if not mine.recv(65536):
                break
            time.sleep(0.2)
    assert time.monotonic() < deadline, "the tunnel outlived the project's rule"
    mine.close()
    records = world.audit_wait(
        lambda rs: any(r["kind"] == "tcp" and r.get("error") for r in rs), session=started["session_id"]
    )
    [record] = [r for r in records if r["kind"] == "tcp"]
    assert record["reason"] == f"raw TCP under the project's rule {DB}:{DB_PORT}", record
    assert record["error"] == f"closed by the proxy: no TCP rule allows {DB}:{DB_PORT} any more"
    assert record["project"] == project.json()["id"]
    cli(world.service.env, "session", "end", started["session_id"])

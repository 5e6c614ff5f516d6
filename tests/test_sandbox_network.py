"""A sandbox's only way out is the proxy: from inside, every direct connection fails, and HTTPS via the proxy works.

Probed from inside real sandboxes (docker, netns) with bash's /dev/tcp: the internet, this host's addresses, the
control plane's port, the proxy's own port, private ranges and the metadata address are all unreachable, for
lack of any route ("Network is unreachable") or of anything listening on the sandbox's own loopback; names do
not resolve; and curl reaches api.github.com through HTTPS_PROXY with no DNS inside, getting the real answer
with the credential injected upstream. The relays themselves are tested on this host, with real sockets.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.sandbox import relay
from runtime.sandbox.relay import HostRelay
from runtime.sandbox.spec import Backend
from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_client as docker_client
from tests.proxy_world import World
from tests.service import free_port
from tests.test_sandbox_e2e import PROXY_PORT_INSIDE, run_agent
from tests.test_sandbox_e2e import proxy_socket as proxy_socket
from tests.test_sandbox_e2e import sandbox as sandbox
from tests.test_sandbox_e2e import world as world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PUBLIC = [("1.1.1.1", 443), ("8.8.8.8", 53), ("140.82.112.6", 443)]  # a public resolver's and github.com's
PRIVATE = [("10.0.0.1", 443), ("172.17.0.1", 443), ("192.168.1.1", 80), ("100.64.0.1", 443)]
METADATA = [("169.254.169.254", 80)]

PROBE = r"""
probe() {
  if timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/tmp/probe.err; then
    echo "PROBE $1:$2 OPEN"
  else
    echo "PROBE $1:$2 CLOSED $(tr '\n' ' ' < /tmp/probe.err)"
  fi
}
"""


def host_addresses() -> list[str]:
    """This host's own addresses (loopback aside), where its services may listen."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return [a for a in found if ":" not in a] or ["192.0.2.2"]


def probes(ran_output: str) -> dict[str, str]:
    result = {}
    for line in ran_output.splitlines():
        if line.startswith("PROBE "):
            _, target, verdict = line.split(" ", 2)
            result[target] = verdict
    return result


def test_direct_connections_fail_and_https_through_the_proxy_works(
    world: World, proxy_socket: Path, sandbox: tuple[Backend, str], tmp_path: Path
) -> None:
    backend, image = sandbox
    service, proxy = world.service.port, world.service.proxy_port
    # On this host both ports answer: what fails inside fails because of the sandbox.
    for port in (service, proxy):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    loopback = [("127.0.0.1", service), ("127.0.0.1", proxy), ("127.0.0.1", 22), ("127.0.0.1", 6379)]
    hosts = [(address, port) for address in host_addresses() for port in (service, proxy, 22)]
    targets = PUBLIC + PRIVATE + METADATA + hosts + loopback
    mark = len(world.upstream.received)
    script = (
        PROBE
        + "\n".join(f"probe {host} {port}" for host, port in targets)
        + f"""
        probe 127.0.0.1 {PROXY_PORT_INSIDE}
        if getent hosts api.github.com; then echo "DNS resolved"; else echo "DNS none"; fi
        if (echo > /dev/udp/1.1.1.1/53) 2>/dev/null; then echo "UDP sent"; else echo "UDP none"; fi
        curl -sS -w '\\nSTATUS %{{http_code}}\\n' https://api.github.com/repos/octo/hello
        curl -sS -o /dev/null -w 'SSRF %{{http_code}}\\n' https://127.0.0.1:{service}/api/v1/health/
        curl -sS -o /dev/null -w 'SSRF %{{http_code}}\\n' http://127.0.0.1:{service}/api/v1/health/
        echo "STEP end"
        """
    )
    ran = run_agent(world, backend, image, script, proxy_socket=proxy_socket, workdir=None)
    assert ran.code == 0, ran.output[-3000:]
    verdicts = probes(ran.output)
    for host, port in PUBLIC + PRIVATE + METADATA + hosts:  # no route: Linux says the first, gVisor the second
        verdict = verdicts[f"{host}:{port}"]
        assert "Network is unreachable" in verdict or "No route to host" in verdict, (host, port, verdicts)
    for host, port in loopback:  # the sandbox's loopback is its own: nothing of the host's listens there
        assert "Connection refused" in verdicts[f"{host}:{port}"], (host, port, verdicts)
    assert verdicts[f"127.0.0.1:{PROXY_PORT_INSIDE}"] == "OPEN"  # the inside relay, the one way out
    assert ran.lines("DNS ") == ["none"] and ran.lines("UDP ") == ["none"]
    # HTTPS through the proxy, with no DNS inside: the proxy resolved and connected, and injected the credential.
    assert ran.lines("STATUS ") == ["200"], ran.output[-3000:]
    [got] = [r for r in world.received_since(mark) if r.path == "/repos/octo/hello"]
    assert got.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    # Through the proxy, the control plane is out of reach too: the proxy refuses loopback destinations.
    assert all(code != "200" for code in ran.lines("SSRF ")), ran.output[-3000:]


def test_without_a_proxy_socket_the_sandbox_has_no_way_out(
    world: World, sandbox: tuple[Backend, str], tmp_path: Path
) -> None:
    backend, image = sandbox
    script = PROBE + f"probe 127.0.0.1 {PROXY_PORT_INSIDE}\nprobe 1.1.1.1 443\n"
    ran = run_agent(world, backend, image, script, proxy_socket=None)
    verdicts = probes(ran.output)
    assert "Connection refused" in verdicts[f"127.0.0.1:{PROXY_PORT_INSIDE}"]
    assert "Network is unreachable" in verdicts["1.1.1.1:443"] or "No route to host" in verdicts["1.1.1.1:443"]


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP server on this host that answers each line upper-cased, then closes when the client does."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def answer(c: socket.socket = conn) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data.upper())

            threading.Thread(target=answer, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def test_the_relays_carry_bytes_both_ways_and_half_closes(tmp_path: Path, echo_server: int) -> None:
    """loopback port -> inside relay -> unix socket -> host relay -> the server, as in a sandbox, on this host."""
    folder = tmp_path / "relay"
    folder.mkdir(mode=0o700)
    port = free_port()
    with HostRelay(folder / "proxy.sock", "127.0.0.1", echo_server):
        inside = subprocess.Popen(
            [sys.executable, "-I", "-S", relay.__file__, "--listen", f"127.0.0.1:{port}"]
            + ["--socket", str(folder / "proxy.sock")],
            stdout=subprocess.PIPE,
        )
        try:
            assert inside.stdout is not None and inside.stdout.readline() == b"ready\n"
            payload = b"x" * 300_000
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                    client.sendall(payload)
                    client.shutdown(socket.SHUT_WR)  # the half-close reaches the server, which then closes
                    received = bytearray()
                    while chunk := client.recv(65536):
                        received += chunk
                assert bytes(received) == payload.upper()
        finally:
            inside.kill()
            inside.wait()
    assert not (folder / "proxy.sock").exists()


def test_the_host_relay_refuses_a_folder_others_can_enter(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with pytest.raises(PermissionError, match="private"):
        HostRelay(folder / "proxy.sock", "127.0.0.1", 9).start()


def test_a_connection_to_an_unreachable_proxy_is_closed_not_hung(tmp_path: Path) -> None:
    folder = tmp_path / "relay"
    folder.mkdir(mode=0o700)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    with HostRelay(folder / "proxy.sock", "127.0.0.1", dead_port), socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(folder / "proxy.sock"))
        # The relay may close before the request is even sent (a broken pipe) or after it (EOF): both are
        # "closed"; only a hang (socket.timeout, an OSError too but not one of these) fails the test.
        try:
            client.sendall(b"CONNECT api.github.com:443 HTTP/1.1\r\n\r\n")
            answer = client.recv(100)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        assert answer == b""

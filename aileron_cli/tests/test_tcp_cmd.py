"""`aileron tcp HOST:PORT`, ssh's ProxyCommand inside a sandbox: run as ssh runs it, a real process against a real
(small) proxy on loopback. The proxy's own rules are tested with the real data plane in tests/test_proxy_tcp.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

AILERON = [sys.executable, "-m", "aileron_cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*AILERON, "tcp", *args],
        input=stdin,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


class TinyProxy:
    """Answers one CONNECT: 200 and an upper-casing echo for HOST:2222, a 403 problem for anything else."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(1)
                self.heads.append(head)
                if not head.startswith(b"CONNECT git.example.com:2222 "):
                    body = b'{"type":"tcp-not-allowed","title":"Forbidden","detail":"no TCP rule allows it"}'
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\nBANNER\n")
                while data := conn.recv(65536):
                    conn.sendall(data.upper())


def test_it_relays_standard_input_and_output_through_the_proxy_with_the_session_token() -> None:
    proxy = TinyProxy()
    result = _run(["git.example.com:2222"], {"HTTPS_PROXY": f"http://aileron:tok%40en@127.0.0.1:{proxy.port}"}, b"hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"BANNER\nHI\n"
    head = proxy.heads[0].decode()
    assert "Proxy-Authorization: Basic YWlsZXJvbjp0b2tAZW4=" in head  # aileron:tok@en
    assert "X-Aileron-Tunnel: tcp" in head  # raw TCP asked for: a refusal without a rule, never a TLS tunnel


def test_a_refusal_is_the_proxys_reason_in_one_line() -> None:
    proxy = TinyProxy()
    result = _run(["db.example.com:5432"], {"HTTPS_PROXY": f"http://aileron:t@127.0.0.1:{proxy.port}"})
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode() == (
        "aileron: the proxy refused db.example.com:5432: 403 Forbidden (no TCP rule allows it)\n"
    )


def test_bad_input_is_one_line_and_a_nonzero_exit() -> None:
    proxy_env = {"HTTPS_PROXY": "http://aileron:t@127.0.0.1:9"}
    for bad in ("github.com", "github.com:ssh", ":22", "github.com:0", "github.com:70000"):
        result = _run([bad], proxy_env)
        assert result.returncode == 2, bad
        assert result.stderr.decode().startswith(f"aileron: '{bad}' is not HOST:PORT"), result.stderr
        assert result.stderr.count(b"\n") == 1
    for bad in ("abc", "127.0.0.1:", "0"):
        result = _run(["github.com:22", "--listen", bad], proxy_env)
        assert result.returncode == 2 and result.stderr.decode().startswith(f"aileron: '{bad}' is not [ADDRESS:]PORT")
    unset = _run(["github.com:22"], {})
    assert unset.returncode == 2 and b"HTTPS_PROXY is not set" in unset.stderr and b"Traceback" not in unset.stderr
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    down = _run(["github.com:22"], {"HTTPS_PROXY": f"http://aileron:t@127.0.0.1:{port}"})
    assert down.returncode == 1 and down.stderr.decode().startswith("aileron: cannot reach the proxy at 127.0.0.1:")


def _listening(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    process = subprocess.Popen(
        [*AILERON, "tcp", *args, "--listen", str(port)],
        env={"PATH": "/usr/bin:/bin", **env},
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()  # said once listening
    assert line == f"aileron: 127.0.0.1:{port} leads to {args[0]} through the proxy\n", line
    return process, port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_listen_tunnels_each_local_connection_for_clients_without_a_proxycommand() -> None:
    proxy = TinyProxy()
    process, port = _listening(["git.example.com:2222"], {"HTTPS_PROXY": f"http://aileron:t@127.0.0.1:{proxy.port}"})
    try:
        for word in (b"one\n", b"two\n"):  # each connection its own tunnel
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(word)
                conn.shutdown(socket.SHUT_WR)
                got = b""
                while data := conn.recv(65536):
                    got += data
            assert got == b"BANNER\n" + word.upper()
        assert len(proxy.heads) == 2
    finally:
        process.kill()
        process.wait()


def test_listen_reports_a_refusal_and_closes_that_connection() -> None:
    proxy = TinyProxy()
    process, port = _listening(["db.example.com:5432"], {"HTTPS_PROXY": f"http://aileron:t@127.0.0.1:{proxy.port}"})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.recv(65536) == b""  # closed: nothing of the refusal reaches the client
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        assert line == "aileron: the proxy refused db.example.com:5432: 403 Forbidden (no TCP rule allows it)\n"
    finally:
        process.kill()
        process.wait()

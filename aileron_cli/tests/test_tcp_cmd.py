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


def test_an_error_never_shows_the_proxy_url_or_its_token() -> None:
    token = "ail_ses_secretsecretsecretsecret"
    for url in (
        f"https://aileron:{token}@127.0.0.1:9",
        f"socks5://aileron:{token}@127.0.0.1:9",
        token,
        f"http://aileron:{token}@127.0.0.1:99999",
        f"http://aileron:{token}@127.0.0.1:abc",
    ):
        result = _run(["git.example.com:22"], {"HTTPS_PROXY": url})
        assert result.returncode == 1, (url, result.stderr)
        assert token.encode() not in result.stderr and b"Traceback" not in result.stderr, result.stderr
        assert result.stderr.count(b"\n") == 1 and result.stderr.startswith(b"aileron: "), result.stderr


def test_a_destination_cannot_smuggle_lines_into_the_connect() -> None:
    proxy = TinyProxy()
    env = {"HTTPS_PROXY": f"http://aileron:t@127.0.0.1:{proxy.port}"}
    for bad in (
        "git.example.com:22 HTTP/1.1\r\nX-Injected: yes\r\n\r\nCONNECT db.example.com:5432",
        "git.example.com\r\nX: y:22",
        "a b:22",
        "git.example.com:22\n",
    ):
        result = _run([bad], env)
        assert result.returncode in (1, 2) and b"Traceback" not in result.stderr, (bad, result.stderr)
        assert result.stderr.count(b"\n") == 1, result.stderr
    assert proxy.heads == []  # nothing of them reached the proxy


def test_an_ipv6_host_from_ssh_is_bracketed() -> None:
    proxy = TinyProxy()
    result = _run(["::1:22"], {"HTTPS_PROXY": f"http://aileron:t@127.0.0.1:{proxy.port}"})
    assert result.returncode == 1  # the tiny proxy refuses it; what matters is the request line it got
    assert proxy.heads[0].startswith(b"CONNECT [::1]:22 HTTP/1.1\r\n"), proxy.heads


def test_listen_takes_only_a_loopback_address() -> None:
    result = _run(["git.example.com:22", "--listen", "0.0.0.0:5432"], {"HTTPS_PROXY": "http://aileron:t@127.0.0.1:9"})
    assert result.returncode == 2
    assert result.stderr.decode() == "aileron: --listen takes a loopback address (127.0.0.1, ::1), not 0.0.0.0\n"


def test_a_proxy_that_never_answers_the_connect_is_one_line_not_a_hang() -> None:
    from runtime.sandbox import relay

    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        try:
            relay.open_tunnel("git.example.com:22", f"http://aileron:t@127.0.0.1:{port}", timeout=0.5)
        except relay.TunnelRefused as exc:
            assert str(exc).startswith("the proxy did not answer the CONNECT to git.example.com:22")
        else:
            raise AssertionError("no refusal")
    finally:
        silent.close()


def test_the_forwarder_holds_a_bounded_number_of_connections() -> None:
    """Beyond its limit a new local connection is closed at once and said so: one forwarder cannot take all of
    the session's proxy connections (the proxy limits those per session)."""
    from runtime.sandbox import relay

    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers: each tunnel waits
    listener = relay.inside_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    said: list[str] = []
    proxy_url = f"http://aileron:t@127.0.0.1:{silent.getsockname()[1]}"
    threading.Thread(
        target=relay.forward,
        args=(listener, "git.example.com:22", proxy_url),
        kwargs={"report": said.append, "at_once": 2},
        daemon=True,
    ).start()
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        assert extra.recv(1) == b""  # closed at once
        assert said == [
            "aileron: 2 connections to git.example.com:22 are open through this forwarder; one more was closed"
        ]
    finally:
        for sock in (*held, extra):
            sock.close()
        silent.close()

"""The proxy attacked with the bytes attackers send: framing tricks and headers that must never leave.

A raw TLS client speaks through a session's CONNECT tunnel; a recording upstream keeps every byte it got. Each
case asserts what the upstream received (nothing, or the request without hop-by-hop fields), what the agent
got (a 400 problem and a closed connection, or the answer without hop-by-hop fields) and the audit record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import _certificates
from tests.proxy_world import HOSTS, World, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EGRESS = "docs.example.com"
GITHUB = "api.github.com"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Seen:
    """One request as the upstream read it: the head exactly as sent, and whether its body ever ended."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    body: bytes
    complete: bool

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


@dataclass
class Recording:
    port: int = 0
    ca_file: Path = Path()
    connections: list[bytearray] = field(default_factory=list)  # every byte each connection carried
    seen: list[Seen] = field(default_factory=list)

    def raw(self) -> bytes:
        return b"".join(bytes(c) for c in self.connections)

    def for_path(self, path: bytes) -> list[Seen]:
        return [s for s in self.seen if s.target.split(b"?", 1)[0] == path]


class _Closed(Exception):
    pass


def _serve_connection(conn: ssl.SSLSocket, record: Recording) -> None:
    raw = bytearray()
    record.connections.append(raw)
    buf = bytearray()

    def more() -> None:
        data = conn.recv(65536)
        if not data:
            raise _Closed
        raw.extend(data)
        buf.extend(data)

    def take_line() -> bytes:
        while b"\r\n" not in buf:
            more()
        line, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        return line

    while True:
        head_lines: list[bytes] = []
        partial: Seen | None = None
        try:
            while b"\r\n\r\n" not in buf:
                more()
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf[:] = rest
            head_lines = head.split(b"\r\n")
            method, target, _ = head_lines[0].split(b" ", 2)
            headers = [(n.strip().lower(), v.strip()) for n, _, v in (h.partition(b":") for h in head_lines[1:])]
            partial = Seen(method, target, headers, b"", complete=False)
            if [v for n, v in headers if n == b"transfer-encoding"] == [b"chunked"]:
                while True:
                    size = int(take_line(), 16)
                    while len(buf) < size + 2:
                        more()
                    partial.body += bytes(buf[:size])
                    assert buf[size : size + 2] == b"\r\n"
                    buf[:] = buf[size + 2 :]
                    if size == 0:
                        break
            else:
                length = int(next((v for n, v in headers if n == b"content-length"), b"0"))
                while len(buf) < length:
                    more()
                partial.body, buf[:] = bytes(buf[:length]), buf[length:]
            partial.complete = True
            record.seen.append(partial)
        except (_Closed, OSError, ValueError, AssertionError):
            if partial is not None:
                record.seen.append(partial)
            conn.close()
            return
        try:
            conn.sendall(_answer(partial))
            if partial.target.startswith((b"/ws", b"/switch")):
                while conn.recv(65536):
                    pass
                conn.close()
                return
        except OSError:
            return


def _answer(seen: Seen) -> bytes:
    if seen.target.startswith(b"/ws") and seen.values(b"upgrade") == [b"websocket"]:
        key = seen.values(b"sec-websocket-key")[0]
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324 (RFC 6455's handshake)
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"\x81\x05hello"
        )
    if seen.target.startswith(b"/switch"):
        # A misbehaving upstream switching protocols unasked: the proxy must not become a raw pipe.
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nRAW-AFTER-SWITCH"
    body = json.dumps({"ok": True, "path": seen.target.decode("latin-1")}).encode()
    hop = b""
    if seen.target.startswith(b"/hop"):
        hop = (
            b"Connection: X-Upstream-Secret\r\nX-Upstream-Secret: s3cret\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic realm=upstream\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n"
        )
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + hop + b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


@contextmanager
def recording_upstream(folder: Path) -> Iterator[Recording]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = _certificates(folder, HOSTS)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    record = Recording(port=listener.getsockname()[1], ca_file=ca_file)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            try:
                conn = context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                continue
            threading.Thread(target=_serve_connection, args=(conn, record), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        listener.close()


@dataclass
class Attack:
    world: World
    upstream: Recording


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    folder = tmp_path_factory.mktemp("adversarial")
    with recording_upstream(folder / "recording") as upstream:
        env = {
            "AILERON_UPSTREAM_RESOLVE": ",".join(f"{h}:443=127.0.0.1:{upstream.port}" for h in HOSTS),
            "AILERON_UPSTREAM_CA": str(upstream.ca_file),
        }
        with proxy_world(folder, extra_env=env) as world:
            yield Attack(world, upstream)


@pytest.fixture(scope="module")
def bare_attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    """A session that reaches no credential: its chunked egress bodies are streamed, never held for a scan."""
    folder = tmp_path_factory.mktemp("adversarial-bare")
    with recording_upstream(folder / "recording") as upstream:
        env = {
            "AILERON_UPSTREAM_RESOLVE": ",".join(f"{h}:443=127.0.0.1:{upstream.port}" for h in HOSTS),
            "AILERON_UPSTREAM_CA": str(upstream.ca_file),
        }
        with proxy_world(folder, extra_env=env, credentials=False) as world:
            yield Attack(world, upstream)


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    rest: bytes  # what came after the first response
    closed: bool

    def problem(self) -> dict[str, Any]:
        assert self.headers.get(b"content-type") == b"application/problem+json", (self.status, self.headers)
        return dict(json.loads(self.body))


def tunnel_tls(world: World, host: str) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    auth = base64.b64encode(f"aileron:{world.token}".encode()).decode()
    sock.sendall(
        f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return ssl.create_default_context(cafile=str(world.ca_file)).wrap_socket(sock, server_hostname=host)


def exchange(world: World, host: str, raw: bytes, *, timeout: float = 8.0) -> Answer:
    """Send raw bytes inside a tunnel; read until the proxy closes the connection (or `timeout`)."""
    tls = tunnel_tls(world, host)
    tls.sendall(raw)
    data, closed = b"", False
    deadline = time.monotonic() + timeout
    tls.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            chunk = tls.recv(65536)
        except TimeoutError:
            continue
        except (ssl.SSLError, OSError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    tls.close()
    return parse_answer(data, closed)


def parse_answer(data: bytes, closed: bool) -> Answer:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1]) if lines[0].startswith(b"HTTP/1.1 ") else 0
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines[1:])}
    length = int(headers.get(b"content-length", b"0"))
    return Answer(status, headers, rest[:length], rest[length:], closed)


def refused_and_closed(answer: Answer) -> dict[str, Any]:
    assert answer.status == 400, answer
    problem = answer.problem()
    assert problem["type"] == "urn:aileron:problem:malformed-request", problem
    assert answer.closed, "the proxy kept reading a connection whose framing is in doubt"
    assert answer.rest == b"", f"the proxy answered bytes that came after a malformed request: {answer}"
    return problem


def refusal_audited(world: World, path: str) -> dict[str, Any]:
    records = world.audit_wait(
        lambda rs: any(r["path"] == path and r["problem_type"] == "malformed-request" for r in rs)
    )
    record = next(r for r in records if r["path"] == path and r["problem_type"] == "malformed-request")
    assert record["decision"] == "deny", record
    return dict(record)


def unique(prefix: str) -> str:
    return f"/adv/{prefix}-{uuid.uuid4().hex[:8]}"


# --- header framing: refused before anything is forwarded --------------------------------------------------

HEAD_ATTACKS = {
    "duplicate-host": b"Host: {host}\r\nHost: evil.example.net\r\n",
    "obs-fold": b"Host: {host}\r\nX-Folded: one\r\n  two\r\n",
    "space-before-colon": b"Host: {host}\r\nX-Spaced : yes\r\n",
    "nul-in-value": b"Host: {host}\r\nX-Nul: a\x00b\r\n",
    "cr-in-value": b"Host: {host}\r\nX-Cr: a\rInjected: b\r\n",
    "cl-and-te": b"Host: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "te-gzip-chunked": b"Host: {host}\r\nTransfer-Encoding: gzip, chunked\r\n",
    "te-chunked-identity": b"Host: {host}\r\nTransfer-Encoding: chunked, identity\r\n",
    "te-twice": b"Host: {host}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "cl-twice": b"Host: {host}\r\nContent-Length: 0\r\nContent-Length: 0\r\n",
    "cl-leading-zero": b"Host: {host}\r\nContent-Length: 00\r\n",
    "cl-plus": b"Host: {host}\r\nContent-Length: +0\r\n",
    "connection-lists-content-length": b"Host: {host}\r\nContent-Length: 0\r\nConnection: content-length\r\n",
}


@pytest.mark.parametrize("host", [EGRESS, GITHUB])
@pytest.mark.parametrize("case", sorted(HEAD_ATTACKS))
def test_a_malformed_head_is_a_400_problem_never_forwarded_and_audited_as_refused(
    attack: Attack, host: str, case: str
) -> None:
    path = f"/repos/acme/{case}-{uuid.uuid4().hex[:8]}" if host == GITHUB else unique(case)
    query = f"?case={uuid.uuid4().hex[:8]}"
    head = HEAD_ATTACKS[case].replace(b"{host}", host.encode())
    raw = b"GET " + (path + query).encode() + b" HTTP/1.1\r\n" + head + b"\r\n0\r\n\r\n"
    answer = exchange(attack.world, host, raw)
    refused_and_closed(answer)
    assert query.encode() not in attack.upstream.raw(), "the upstream got a malformed request"
    refusal_audited(attack.world, path)


@pytest.mark.parametrize(
    "line",
    [
        b"GET https://docs.example.com/adv/absolute HTTP/1.1",
        b"GET https://evil.example.net/adv/absolute HTTP/1.1",
        b"GET /adv/version HTTP/2.0",
        b"GET /adv/version HTTP/1.2",
        b"GET /adv/fragment#x HTTP/1.1",
        b"GET /adv/two spaces HTTP/1.1",
        b"GET /adv/no-version",
        b"GET /adv/colonless HTTP/1.1\r\nX-No-Colon-Here",
        b"GET /adv/bad-name HTTP/1.1\r\nX Bad Name: v",
    ],
)
def test_request_lines_a_strict_server_refuses_are_refused(attack: Attack, line: bytes) -> None:
    marker = uuid.uuid4().hex.encode()
    line = line.replace(b"/adv/", b"/adv/" + marker[:8] + b"/")
    raw = line + b"\r\nHost: docs.example.com\r\nX-Marker: " + marker + b"\r\n\r\n"
    answer = exchange(attack.world, EGRESS, raw)
    refused_and_closed(answer)
    assert marker not in attack.upstream.raw()
    # refused by the HTTP/1 parser before any hook ran, and still in the session's audit trail
    records = attack.world.audit_wait(
        lambda rs: any(marker[:8].decode() in r["path"] and r["problem_type"] == "malformed-request" for r in rs)
    )
    record = next(r for r in records if marker[:8].decode() in r["path"])
    assert record["decision"] == "deny" and record["session_id"] == attack.world.session_id, record


def test_the_http2_preface_over_http1_is_refused(attack: Attack) -> None:
    answer = exchange(attack.world, EGRESS, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    refused_and_closed(answer)


def test_bytes_that_are_not_http_inside_the_tunnel_are_refused_never_piped_raw(attack: Attack) -> None:
    # mitmproxy would hand these to its raw TCP layer, where no check and no audit runs.
    marker = uuid.uuid4().hex.encode()
    answer = exchange(attack.world, EGRESS, b"\x00\x01\x02" + marker + b"\r\n\r\n")
    refused_and_closed(answer)
    assert marker not in attack.upstream.raw()


def test_the_tunnel_never_negotiates_http2(attack: Attack) -> None:
    sock = socket.create_connection(("127.0.0.1", attack.world.service.proxy_port), timeout=10)
    auth = base64.b64encode(f"aileron:{attack.world.token}".encode()).decode()
    sock.sendall(
        f"CONNECT {EGRESS}:443 HTTP/1.1\r\nHost: {EGRESS}:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(attack.world.ca_file))
    context.set_alpn_protocols(["h2", "http/1.1"])
    tls = context.wrap_socket(sock, server_hostname=EGRESS)
    assert tls.selected_alpn_protocol() in (None, "http/1.1")
    tls.close()


# --- chunked bodies: strict on every path ------------------------------------------------------------------

CHUNK_ATTACKS = {
    "bare-lf-after-data": b"5\r\nhello\n0\r\n\r\n",
    "bare-lf-in-size-line": b"5\nhello\r\n0\r\n\r\n",
    "bare-lf-at-the-end": b"5\r\nhello\r\n0\r\n\n",
    "oversized-size": b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "size-overflowing-64-bits": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "hex-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "space-after-size": b"5 \r\nhello\r\n0\r\n\r\n",
    "more-data-than-size": b"3\r\nhello\r\n0\r\n\r\n",
    "bad-extension": b'5;a="open\r\nhello\r\n0\r\n\r\n',
    "trailer-fields": b"5\r\nhello\r\n0\r\nX-Smuggled: 1\r\n\r\n",
    "data-after-last-chunk": b"5\r\nhello\r\n0\r\n\r\nGET /adv/smuggled HTTP/1.1\r\nHost: docs.example.com\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(CHUNK_ATTACKS))
def test_a_malformed_chunked_body_is_a_400_problem_and_never_completed_upstream(bare_attack: Attack, case: str) -> None:
    attack = bare_attack
    path = unique(case)
    raw = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: docs.example.com\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + CHUNK_ATTACKS[case]
    )
    answer = exchange(attack.world, EGRESS, raw)
    refused_and_closed(answer)
    time.sleep(0.3)  # let the upstream notice the closed connection
    seen = attack.upstream.for_path(path.encode())
    assert not any(s.complete for s in seen), f"the upstream got a complete request: {seen}"
    assert b"/adv/smuggled" not in attack.upstream.raw()
    assert b"X-Smuggled" not in attack.upstream.raw()
    refusal_audited(attack.world, path)


def test_a_well_formed_chunked_body_is_reframed_and_forwarded_whole(bare_attack: Attack) -> None:
    attack = bare_attack
    path = unique("chunked-ok")
    raw = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: docs.example.com\r\nTransfer-Encoding: Chunked\r\n"
        b"Connection: close\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    answer = exchange(attack.world, EGRESS, raw)
    assert answer.status == 200, answer
    [seen] = attack.upstream.for_path(path.encode())
    assert seen.complete and seen.body == b"hello world"
    assert seen.values(b"transfer-encoding") == [b"chunked"]


@pytest.mark.parametrize(
    ("case", "status", "slug"),
    [("chunked-ok", 411, "length-required"), ("bare-lf-after-data", 400, "malformed-request")],
)
def test_a_chunked_egress_body_of_a_session_holding_credentials_is_refused_and_never_reaches_the_upstream(
    attack: Attack, case: str, status: int, slug: str
) -> None:
    # Its body must be scanned for the session's credentials before anything is sent, so it needs a length;
    # the refused body is still drained strictly (a malformed one closes the connection), never read as a request.
    path = unique(case)
    body = b"5\r\nhello\r\n0\r\n\r\n" if case == "chunked-ok" else CHUNK_ATTACKS[case]
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: docs.example.com\r\nConnection: close\r\n"
    answer = exchange(attack.world, EGRESS, head + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert answer.status == status, answer
    assert answer.problem()["type"] == f"urn:aileron:problem:{slug}"
    assert answer.rest == b"", "the body must not be read as another request"
    time.sleep(0.3)
    assert attack.upstream.for_path(path.encode()) == []
    records = attack.world.audit_wait(lambda rs: any(r["path"] == path for r in rs))
    assert {r["decision"] for r in records if r["path"] == path} == {"deny"}


# --- hop-by-hop fields: never forwarded, in either direction -----------------------------------------------

HOP_FIELDS = (
    b"Connection: close, X-Secret\r\nX-Secret: s3cret\r\nKeep-Alive: timeout=300\r\nTE: trailers, deflate\r\n"
    b"Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)


@pytest.mark.parametrize("host", [EGRESS, GITHUB])
def test_hop_by_hop_fields_and_the_session_token_never_reach_the_upstream(attack: Attack, host: str) -> None:
    world = attack.world
    path = f"/repos/acme/hop-{uuid.uuid4().hex[:8]}" if host == GITHUB else unique("hop-request")
    marker = uuid.uuid4().hex
    raw = (
        f"GET {path}?m={marker} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Bearer {world.token}\r\n".encode()
        + HOP_FIELDS
        + b"X-Kept: yes\r\n\r\n"
    )
    answer = exchange(world, host, raw)
    assert answer.status == 200, answer
    [seen] = [s for s in attack.upstream.seen if marker.encode() in s.target]
    names = {n for n, _ in seen.headers}
    for name in (b"proxy-authorization", b"x-secret", b"keep-alive", b"te", b"proxy-connection", b"upgrade"):
        assert name not in names, (name, seen.headers)
    assert b"http2-settings" not in names
    assert seen.values(b"connection") == [b"close"]
    assert seen.values(b"x-kept") == [b"yes"]
    assert world.token.encode() not in attack.upstream.raw(), "the session token reached a third party"
    if host == GITHUB:
        assert seen.values(b"authorization") == [b"Bearer " + world.canaries["github"]]


def test_the_upstreams_hop_by_hop_fields_never_reach_the_agent(attack: Attack) -> None:
    raw = f"GET /hop/{uuid.uuid4().hex[:8]} HTTP/1.1\r\nHost: {EGRESS}\r\nConnection: close\r\n\r\n"
    answer = exchange(attack.world, EGRESS, raw.encode())
    assert answer.status == 200, answer
    assert answer.headers.get(b"x-kept") == b"yes"
    for name in (b"x-upstream-secret", b"keep-alive", b"proxy-authenticate", b"proxy-connection"):
        assert name not in answer.headers, (name, answer.headers)


def test_a_websocket_upgrade_still_goes_through(attack: Attack) -> None:
    key = base64.b64encode(uuid.uuid4().bytes).decode()
    raw = (
        f"GET /ws/{uuid.uuid4().hex[:8]} HTTP/1.1\r\nHost: {EGRESS}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    tls = tunnel_tls(attack.world, EGRESS)
    tls.sendall(raw)
    data = b""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not (b"\r\n\r\n" in data and data.endswith(b"hello")):
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    tls.close()
    assert data.startswith(b"HTTP/1.1 101"), data
    head, _, frames = data.partition(b"\r\n\r\n")
    assert b"upgrade: websocket" in head.lower()
    assert frames == b"\x81\x05hello"
    seen = [s for s in attack.upstream.seen if s.target.startswith(b"/ws/")][-1]
    assert seen.values(b"upgrade") == [b"websocket"] and seen.values(b"connection") == [b"Upgrade"]


def test_an_upstream_switching_protocols_unasked_gets_no_raw_pipe(attack: Attack) -> None:
    answer = exchange(
        attack.world, EGRESS, f"GET /switch/{uuid.uuid4().hex[:8]} HTTP/1.1\r\nHost: {EGRESS}\r\n\r\n".encode()
    )
    assert answer.status != 101, answer
    assert b"RAW-AFTER-SWITCH" not in answer.body + answer.rest

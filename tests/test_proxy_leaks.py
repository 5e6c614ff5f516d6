"""The credential never reaches the agent, nor an audit record, through a part of the exchange the body redactor
does not read: the status line, folded headers, WebSocket messages, nested compression, unparsable answers.

A raw HTTPS upstream reflects the credential it was given (or, for an egress host, the one the test stashes) in
the part named by the request path's last segment. Each case asserts what the agent got (no form of the
credential), what the upstream got, and the audit records (never a form of the credential).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import socket
import ssl
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dataplane.credscan import MARK, Matcher
from tests.fake_upstream import _certificates
from tests.proxy_world import HOSTS, World, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

GITHUB = "api.github.com"
EGRESS = "docs.example.com"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Reflector:
    port: int = 0
    ca_file: Path = Path()
    stash: bytes = b""  # what an egress answer reflects (an egress request carries no credential)
    heads: list[bytes] = field(default_factory=list)  # every request head received
    messages: list[bytes] = field(default_factory=list)  # every WebSocket payload received from the proxy


def _credential(head: bytes, stash: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            return value.strip().removeprefix(b"Bearer ")
    return stash


def _ws_frame(payload: bytes, *, opcode: int = 0x1, mask: bool = False, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head = bytes([first, bit | size])
    elif size < 65536:
        head = bytes([first, bit | 126]) + struct.pack(">H", size)
    else:
        head = bytes([first, bit | 127]) + struct.pack(">Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _read_frame(read: Any) -> tuple[int, bool, bytes]:
    """(opcode, fin, payload) of one frame, unmasked; `read(n)` returns exactly n bytes."""
    first, second = read(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack(">H", read(2))[0]
    elif size == 127:
        size = struct.unpack(">Q", read(8))[0]
    key = read(4) if second & 0x80 else b"\0\0\0\0"
    payload = read(size)
    return first & 0x0F, bool(first & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _answer(mode: str, cred: bytes) -> bytes:
    def plain(body: bytes, extra: bytes = b"", reason: bytes = b"OK") -> bytes:
        return (
            b"HTTP/1.1 200 "
            + reason
            + b"\r\nContent-Type: text/plain\r\n"
            + extra
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )

    answers = {
        "reason": lambda: plain(b"ok", reason=cred),
        "fold": lambda: plain(b"ok", extra=b"X-Fold: " + cred[:10] + b"\r\n " + cred[10:] + b"\r\n"),
        "gzipnested": lambda: plain(gzip.compress(gzip.compress(b"echo " + cred)), extra=b"Content-Encoding: gzip\r\n"),
        "ctgzip": lambda: plain(gzip.compress(b"echo " + cred)).replace(b"text/plain", b"application/gzip"),
        "interim": lambda: (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            + plain(b"final")
        ),
        "badline": lambda: b"HTTP/1.1 2x0 " + cred + b"\r\n\r\n",
        "badhdr": lambda: b"HTTP/1.1 200 OK\r\n" + cred + b"\r\n\r\n",
        "garbage": lambda: cred + b"\r\n",
        "version": lambda: b"HTTP/1." + cred + b" 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "trailer": lambda: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n4\r\nbody\r\n0\r\nX-T: "
            + cred
            + b"\r\n\r\n"
        ),
    }
    return answers[mode]() if mode in answers else plain(b"ok")


def _serve(conn: ssl.SSLSocket, record: Reflector) -> None:
    buf = bytearray()

    def read(n: int) -> bytes:
        while len(buf) < n:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError
            buf.extend(data)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf.extend(data)
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf[:] = rest
            record.heads.append(head)
            target = head.split(b" ", 2)[1].decode()
            mode = target.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            cred = _credential(head, record.stash)
            if mode != "ws":
                conn.sendall(_answer(mode, cred))
                continue
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324 (RFC 6455's handshake)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: "
                + accept
                + b"\r\n\r\n"
                + _ws_frame(b"cred=" + cred)  # a whole message
                + _ws_frame(b"split=" + cred[:7], fin=False)
                + _ws_frame(cred[7:], opcode=0x0)  # one message, two frames
                + _ws_frame(b"bin=" + base64.b64encode(cred), opcode=0x2)
            )
            while True:
                opcode, _, payload = _read_frame(read)
                if opcode == 0x8:
                    conn.sendall(_ws_frame(payload, opcode=0x8))
                    return
                record.messages.append(payload)
                conn.sendall(_ws_frame(b"echo:" + payload, opcode=opcode))
    except (OSError, ConnectionError, ValueError):
        return
    finally:
        conn.close()


@contextmanager
def reflector(folder: Path) -> Iterator[Reflector]:
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = _certificates(folder, HOSTS)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    record = Reflector(port=listener.getsockname()[1], ca_file=ca_file)

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            try:
                conn = context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                continue
            threading.Thread(target=_serve, args=(conn, record), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield record
    finally:
        listener.close()


@dataclass
class Leaks:
    world: World
    upstream: Reflector


@pytest.fixture(scope="module")
def leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaks]:
    folder = tmp_path_factory.mktemp("leaks")
    with reflector(folder / "reflector") as upstream:
        env = {
            "AILERON_UPSTREAM_RESOLVE": ",".join(f"{h}:443=127.0.0.1:{upstream.port}" for h in HOSTS),
            "AILERON_UPSTREAM_CA": str(upstream.ca_file),
        }
        with proxy_world(folder, extra_env=env) as world:
            upstream.stash = world.canaries["openai"]
            yield Leaks(world, upstream)


def tunnel(world: World, host: str) -> ssl.SSLSocket:
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


def drain(tls: ssl.SSLSocket, *, timeout: float = 6.0, until: bytes | None = None) -> tuple[bytes, bool]:
    """Everything the proxy sent until it closed (True) or `timeout` passed (or `until` was seen)."""
    data = b""
    deadline = time.monotonic() + timeout
    tls.settimeout(0.3)
    while time.monotonic() < deadline and not (until and until in data):
        try:
            chunk = tls.recv(65536)
        except TimeoutError:
            continue
        except (ssl.SSLError, OSError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def fetch(world: World, host: str, path: str) -> bytes:
    tls = tunnel(world, host)
    tls.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer placeholder\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    data, _ = drain(tls)
    tls.close()
    return data


def unchunked(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2 :]
    return out


def no_form_of(secret: bytes, data: bytes) -> bool:
    return Matcher([secret]).first(data) is None and secret not in data


def completed(world: World, path: str) -> list[dict[str, Any]]:
    """The audit records of requests to `path` (as the API shows them), once one has its outcome."""
    found = world.audit_wait(lambda rs: any(r["path"] == path and r["completed_at"] for r in rs))
    return [r for r in found if r["path"] == path]


# --- 1. the status line ---------------------------------------------------------------------------------------


def test_a_credential_in_the_reason_phrase_never_reaches_the_agent(leaks: Leaks) -> None:
    world, canary = leaks.world, leaks.world.canaries["github"]
    path = f"/repos/o{uuid.uuid4().hex[:6]}/reason"
    data = fetch(world, GITHUB, path)
    assert b"Bearer " + canary in leaks.upstream.heads[-1], "the credential was not injected"
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 200 "), data
    assert no_form_of(canary, data), status_line
    assert MARK in status_line
    records = completed(world, path)
    assert no_form_of(canary, json.dumps(records).encode())


# --- 4. unparsable answers: the error in the audit record ---------------------------------------------------


@pytest.mark.parametrize("mode", ["badline", "badhdr", "garbage", "version"])
def test_an_unparsable_answer_carrying_the_credential_leaves_no_trace_of_it_in_the_audit(
    leaks: Leaks, mode: str
) -> None:
    world, canary = leaks.world, leaks.world.canaries["github"]
    path = f"/repos/o{uuid.uuid4().hex[:6]}/{mode}"
    data = fetch(world, GITHUB, path)
    assert b"Bearer " + canary in leaks.upstream.heads[-1]
    assert data.startswith(b"HTTP/1.1 502") or data == b"", data  # a problem, or the connection closed
    assert no_form_of(canary, data)
    records = completed(world, path)
    [record] = records
    assert record["error"] and record["upstream_status"] is None, record
    assert no_form_of(canary, json.dumps(records).encode()), json.dumps(records)
    spool = world.service.home / "dataplane" / "audit-spool"
    for segment in spool.glob("*"):
        if segment.is_file():
            assert no_form_of(canary, segment.read_bytes()), segment


# --- 5. headers folded, nested compression ------------------------------------------------------------------


def test_a_folded_response_header_never_reaches_the_agent(leaks: Leaks) -> None:
    world, canary = leaks.world, leaks.world.canaries["github"]
    path = f"/repos/o{uuid.uuid4().hex[:6]}/fold"
    data = fetch(world, GITHUB, path)
    head = data.partition(b"\r\n\r\n")[0]
    assert b"\r\n " not in head and b"X-Fold" not in head, head
    assert no_form_of(canary, data.replace(b"\r\n ", b""))


def test_a_credential_in_a_trailer_never_reaches_the_agent(leaks: Leaks) -> None:
    world, canary = leaks.world, leaks.world.canaries["github"]
    path = f"/repos/o{uuid.uuid4().hex[:6]}/trailer"
    data = fetch(world, GITHUB, path)
    assert no_form_of(canary, data), data
    # the answer itself arrives whole (its trailer dropped), and nothing crashed on the way
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert unchunked(data.partition(b"\r\n\r\n")[2]) == b"body"
    assert b"has crashed" not in world.service.log.read_bytes()
    [record] = completed(world, path)
    assert record["upstream_status"] == 200 and not record["error"], record


def test_interim_answers_from_the_upstream_never_hide_the_final_one(leaks: Leaks) -> None:
    world = leaks.world
    path = f"/repos/o{uuid.uuid4().hex[:6]}/interim"
    data = fetch(world, GITHUB, path)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert unchunked(data.partition(b"\r\n\r\n")[2]) == b"final"
    [record] = completed(world, path)
    assert record["upstream_status"] == 200, record


def _as_the_agent_decompresses(data: bytes) -> bytes:
    """Every level of gzip the agent could undo, partial data included, joined with what it came from."""
    seen = data
    for _ in range(4):
        if not data.startswith(b"\x1f\x8b"):
            break
        decoder = zlib.decompressobj(wbits=31)
        try:
            data = decoder.decompress(data)
        except zlib.error:
            break
        seen += data
    return seen


@pytest.mark.parametrize("mode", ["gzipnested", "ctgzip"])
def test_a_credential_in_compressed_data_inside_the_answer_never_reaches_the_agent(leaks: Leaks, mode: str) -> None:
    world, canary = leaks.world, leaks.world.canaries["github"]
    path = f"/repos/o{uuid.uuid4().hex[:6]}/{mode}"
    data = fetch(world, GITHUB, path)
    assert b"Bearer " + canary in leaks.upstream.heads[-1], "the credential was not injected"
    body = unchunked(data.partition(b"\r\n\r\n")[2])
    assert no_form_of(canary, _as_the_agent_decompresses(body)), body[:200]
    [record] = completed(world, path)
    assert "nested: a credential inside" in record["error"], record
    assert no_form_of(canary, json.dumps(record).encode())


# --- 2, 3. WebSocket messages ------------------------------------------------------------------------------


def upgrade(world: World, host: str, path: str) -> tuple[ssl.SSLSocket, bytes]:
    tls = tunnel(world, host)
    key = base64.b64encode(uuid.uuid4().bytes).decode()
    tls.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer placeholder\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return tls, rest


def messages(tls: ssl.SSLSocket, rest: bytes, count: int, timeout: float = 6.0) -> tuple[list[tuple[int, bytes]], bool]:
    """Up to `count` whole messages from the proxy (fragments joined); True when the connection ended."""
    buf = bytearray(rest)
    closed = False

    def read(n: int) -> bytes:
        nonlocal closed
        while len(buf) < n:
            more, closed = _recv(tls, timeout)
            if not more:
                raise ConnectionError
            buf.extend(more)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    got: list[tuple[int, bytes]] = []
    partial = b""
    first_opcode = 0
    try:
        while len(got) < count:
            opcode, fin, payload = _read_frame(read)
            if opcode == 0x8:
                got.append((opcode, payload))
                break
            first_opcode = first_opcode or opcode
            partial += payload
            if fin:  # fragments are read as one message once whole
                got.append((first_opcode, partial))
                partial, first_opcode = b"", 0
    except ConnectionError:
        closed = True
    return got, closed


def _recv(tls: ssl.SSLSocket, timeout: float) -> tuple[bytes, bool]:
    tls.settimeout(timeout)
    try:
        data = tls.recv(65536)
    except TimeoutError:
        return b"", False
    except (ssl.SSLError, OSError):
        return b"", True
    return data, not data


def test_websocket_messages_from_a_credentialed_upstream_are_redacted_and_binary_frames_pass(leaks: Leaks) -> None:
    world, canary = leaks.world, leaks.world.canaries["github"]
    tls, rest = upgrade(world, GITHUB, f"/repos/o{uuid.uuid4().hex[:6]}/ws")
    assert b"Bearer " + canary in leaks.upstream.heads[-1]
    got, _ = messages(tls, rest, 3)
    seen = b"".join(payload for _, payload in got)
    assert no_form_of(canary, seen), got
    assert [opcode for opcode, _ in got] == [1, 1, 2], got
    assert got[0][1] == b"cred=" + MARK
    # the conversation goes on: a clean message, text and binary, is forwarded and answered
    tls.sendall(_ws_frame(b"hello", mask=True) + _ws_frame(b"\x00\xffbin", opcode=0x2, mask=True))
    echoed, _ = messages(tls, b"", 2)
    assert echoed == [(1, b"echo:hello"), (2, b"echo:\x00\xffbin")]
    tls.close()


@pytest.mark.parametrize(("host", "connector"), [(GITHUB, "github"), (EGRESS, None)])
def test_a_credential_the_agent_sends_in_a_websocket_message_never_leaves(
    leaks: Leaks, host: str, connector: str | None
) -> None:
    world, secret = leaks.world, leaks.world.canaries["openai"]
    path = f"/repos/o{uuid.uuid4().hex[:6]}/ws" if connector else f"/sock{uuid.uuid4().hex[:6]}/ws"
    tls, rest = upgrade(world, host, path)
    messages(tls, rest, 3)
    before = list(leaks.upstream.messages)
    # split over two frames of one message, and hex-encoded: still the credential
    value = b"stolen " + secret.hex().encode()
    tls.sendall(_ws_frame(value[:9], fin=False, mask=True) + _ws_frame(value[9:], opcode=0x0, mask=True))
    got, closed = messages(tls, b"", 1)
    tls.close()
    time.sleep(0.5)
    assert leaks.upstream.messages == before or all(
        no_form_of(secret, m) for m in leaks.upstream.messages[len(before) :]
    ), "the upstream received the credential"
    assert closed or (got and got[0][0] == 0x8), got
    records = world.audit_wait(
        lambda rs: any(r["path"] == path and r["problem_type"] == "credential-in-request" for r in rs)
    )
    [refusal] = [r for r in records if r["path"] == path and r["problem_type"] == "credential-in-request"]
    assert refusal["severity"] == "critical" and refusal["decision"] == "deny"
    assert refusal["credential_id"]
    assert no_form_of(secret, json.dumps(records).encode())


@pytest.mark.parametrize("case", ["large-with-credential", "over-the-limit"])
def test_large_websocket_messages_are_scanned_off_the_loop_and_bounded(leaks: Leaks, case: str) -> None:
    """Outside attack: 20 MiB messages were read on the event loop (7 s each, every session waiting). A message
    from the agent as large as a body may be is scanned in the workers; a larger one is refused and its socket
    closed, audited."""
    world, secret = leaks.world, leaks.world.canaries["openai"]
    path = f"/sock{uuid.uuid4().hex[:6]}/ws"
    tls, rest = upgrade(world, EGRESS, path)
    messages(tls, rest, 3)
    before = len(leaks.upstream.messages)
    limit = 256 * 1024  # proxy_world's AILERON_MAX_BODY_BYTES
    if case == "large-with-credential":
        tail = b" " + secret.hex().encode()
        payload, problem = b"x" * (limit - len(tail)) + tail, "credential-in-request"
    else:
        payload, problem = b"x" * (limit + 1), "body-too-large"
    tls.sendall(_ws_frame(payload, opcode=0x2, mask=True))
    got, closed = messages(tls, b"", 1, timeout=15)
    tls.close()
    time.sleep(0.5)
    assert all(len(m) < limit for m in leaks.upstream.messages[before:]), "the large message was forwarded"
    assert closed or (got and got[0][0] == 0x8), got
    records = world.audit_wait(lambda rs: any(r["path"] == path and r["problem_type"] == problem for r in rs))
    [refusal] = [r for r in records if r["path"] == path and r["problem_type"] == problem]
    assert refusal["decision"] == "deny"
    assert no_form_of(secret, json.dumps(records).encode())

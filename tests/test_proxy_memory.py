"""The proxy gives the memory of finished request bodies back, through a real `aileron service`: rounds of
concurrent large credentialed bodies leave the data plane's resident memory where the first round left it."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.proxy_world import World, proxy_world
from tests.test_proxy_limits import _post_head, _proxy_rss_kib, _tls

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CONCURRENT = 8
SIZE = 9 * 1024 * 1024  # a GitHub issue with a large attachment-like body: below the 10 MiB limit
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {
        "AILERON_MAX_BODY_BYTES": str(10 * MIB),
        "AILERON_BODY_BUDGET_BYTES": str(CONCURRENT * 10 * MIB),  # all of them at once
        "AILERON_SESSION_BODY_SHARE_BYTES": str(CONCURRENT * 10 * MIB),  # from one session (its share is 1/4)
    }
    with proxy_world(tmp_path_factory.mktemp("memory"), extra_env=env) as w:
        yield w


def _body() -> bytes:
    body = json.dumps({"title": "a large issue", "body": "b" * (SIZE - 40)}).encode()
    return body + b" " * (SIZE - len(body))


def _read_response(tls: ssl.SSLSocket) -> bytes:
    """One answer, to its end: the proxy streams credentialed answers chunked (it redacts them as they pass)."""
    tls.settimeout(60)
    data = b""
    while True:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        if b"transfer-encoding: chunked" in head.lower():
            if body.endswith(b"0\r\n\r\n"):
                return data
        elif (length := _content_length(head)) is not None and len(body) >= length:
            return data


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return None


def _round(world: World, body: bytes, connections: list[ssl.SSLSocket | None]) -> list[bytes]:
    """CONCURRENT bodies at once, one per connection; a connection given as None is opened and then closed."""

    def post(i: int) -> bytes:
        tls = connections[i] or _tls(world, "api.github.com")
        tls.sendall(_post_head("api.github.com", "/repos/acme/app/issues", SIZE) + body)
        answer = _read_response(tls)
        if connections[i] is None:
            tls.close()
        return answer

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(post, range(CONCURRENT)))
    world.upstream.received.clear()  # the fake upstream keeps what it got; not the proxy's memory
    return answers


def _settled_rss_mib(world: World) -> float:
    time.sleep(3)  # the flows end and the proxy's reclaim runs (within about a second)
    return _proxy_rss_kib(world) / 1024


@pytest.mark.parametrize("keep_alive", [False, True], ids=["connections-closed", "connections-kept-alive"])
def test_rounds_of_large_concurrent_bodies_give_their_memory_back(
    world: World, keep_alive: bool, tmp_path: Path
) -> None:
    body = _body()
    connections: list[ssl.SSLSocket | None] = [
        _tls(world, "api.github.com") if keep_alive else None for _ in range(CONCURRENT)
    ]
    rss: list[float] = []
    try:
        for _ in range(5):
            answers = _round(world, body, connections)
            assert all(a.startswith(b"HTTP/1.1 201") for a in answers), [a[:100] for a in answers]
            rss.append(_settled_rss_mib(world))
    finally:
        for tls in connections:
            if tls is not None:
                tls.close()
    print("data plane RSS after each round (MiB):", [round(r) for r in rss])
    # Each round moves 72 MiB of bodies through the proxy: what it kept per round shows as growth.
    assert max(rss[1:]) - rss[1] < 40, rss
    assert rss[-1] < rss[0] + 40, rss


def test_one_sessions_large_body_scan_never_stalls_another_sessions_requests(world: World) -> None:
    """An egress body of 8 MiB of percent-escapes is read every way it may be decoded (most of a second of CPU):
    the scan runs beside the proxy's event loop, so a small request meanwhile waits for a fraction of it, not
    for all of it."""
    import threading

    import httpx

    heavy = b"q=" + b"%41" * (8 * MIB // 3)
    mark = len(world.upstream.received)
    forwarded: list[float] = []

    def watch() -> None:  # when the upstream has the heavy body: its scan ended just before
        while not forwarded:
            if any(r.path == "/search" for r in world.received_since(mark)):
                forwarded.append(time.monotonic())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    tls = _tls(world, "docs.example.com")
    tls.sendall(
        b"POST /search HTTP/1.1\r\nHost: docs.example.com\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(heavy)}\r\n\r\n".encode()
        + heavy
    )
    sent = time.monotonic()
    time.sleep(0.1)  # its scan is under way
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=60) as client:
        asked = time.monotonic()
        reply = client.get("https://api.github.com/repos/acme/app")
        light = time.monotonic() - asked
    answer = _read_response(tls)
    tls.close()
    watcher.join(timeout=60)
    assert reply.status_code == 200 and answer.startswith(b"HTTP/1.1 201"), answer[:200]
    scan = forwarded[0] - sent
    print(f"the heavy body took {scan:.2f} s to scan and forward; a small request meanwhile took {light:.2f} s")
    assert light < scan * 0.75  # without the thread, it waits for all of the scan (measured: 1.31 of 1.34 s)

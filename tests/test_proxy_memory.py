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


def test_several_sessions_large_body_scans_never_stall_a_small_request(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Four sessions each send 8 MiB of percent-escapes at once (seconds of scanning between them): a fifth
    session's small requests meanwhile are answered as if nothing else ran, because the scans run in worker
    processes, not beside the event loop under its interpreter lock (measured with threads: 0.8 s each)."""
    import statistics

    import httpx

    from tests.test_proxy_limits import _another_session

    folder = tmp_path_factory.mktemp("heavy")
    heavy = b"q=" + b"%41" * (8 * MIB // 3)
    agents = [_another_session(world, folder) for _ in range(4)]

    def light_requests(count: int) -> list[float]:
        took = []
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=60) as client:
            for _ in range(count):
                asked = time.monotonic()
                reply = client.get("https://api.github.com/repos/acme/app")
                took.append(time.monotonic() - asked)
                assert reply.status_code == 200, reply.text
        return took

    quiet = statistics.median(light_requests(5))

    def send_heavy(agent: object) -> bytes:
        tls = _tls(world, "docs.example.com", agent)  # type: ignore[arg-type]
        try:
            tls.sendall(
                b"POST /search HTTP/1.1\r\nHost: docs.example.com\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(heavy)}\r\n\r\n".encode()
                + heavy
            )
            return _read_response(tls)
        finally:
            tls.close()

    with ThreadPoolExecutor(len(agents)) as pool:
        started = time.monotonic()
        answers = [pool.submit(send_heavy, agent) for agent in agents]
        time.sleep(0.5)  # every body is in, the scans are under way
        loaded: list[float] = []
        while not all(a.done() for a in answers) or len(loaded) < 3:
            loaded += light_requests(1)
        heavy_took = time.monotonic() - started
        results = [a.result() for a in answers]
    assert all(r.startswith(b"HTTP/1.1 201") for r in results), [r[:200] for r in results]
    during = statistics.median(loaded)
    print(
        f"four heavy bodies took {heavy_took:.2f} s; a small request took {quiet * 1000:.0f} ms alone and "
        f"{during * 1000:.0f} ms (median of {len(loaded)}) meanwhile"
    )
    assert heavy_took > 1.0  # the load was real: the small requests ran while the bodies were scanned
    assert during < quiet + 0.25


@pytest.mark.parametrize("place", ["egress", "egress-gzip", "connector"])
def test_a_credential_deep_in_a_large_body_is_found_by_the_scan_workers(world: World, place: str) -> None:
    """Bodies this large are scanned in a worker process: what it finds refuses the request just the same."""
    import base64
    import gzip

    import httpx

    secret = world.canaries["openai"]
    value = base64.b64encode(b"ab" + secret)
    body = json.dumps({"title": "notes", "body": "n" * MIB + value.decode()}).encode()
    headers = {"Content-Type": "application/json"}
    url = "https://docs.example.com/upload"
    if place == "egress-gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        body += b"\0" * (300 * 1024)  # still large once compressed (zero padding is skipped when read)
    if place == "connector":
        url, headers["Authorization"] = "https://api.github.com/repos/acme/app/issues", "Bearer placeholder"
    mark = len(world.upstream.received)
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=60) as client:
        reply = client.post(url, content=body, headers=headers)
    assert reply.status_code == 403, reply.text
    problem = reply.json()
    assert problem["type"] == "urn:aileron:problem:credential-in-request" and "body" in problem["detail"]
    assert world.received_since(mark) == []
    records = world.audit_wait(lambda rs: any(r["id"] == problem["request_id"] for r in rs), severity="critical")
    [record] = [r for r in records if r["id"] == problem["request_id"]]
    assert record["problem_type"] == "credential-in-request" and record["credential_id"]
    assert secret.decode() not in json.dumps(record)


def test_a_small_compressed_bomb_never_stalls_the_proxy_and_is_never_forwarded(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Outside attack: 61 KB of gzip decoding to 60 MiB of percent-escapes was decoded and read on the event loop
    (another session's GET took 25 s), then forwarded. A compressed body is always scanned in a worker, within
    its decoded limit and deadline; this one is refused, and nothing else waits for it."""
    import gzip
    import statistics

    import httpx

    from tests.test_proxy_limits import _another_session

    attacker = _another_session(world, tmp_path_factory.mktemp("bomb"))
    bomb = gzip.compress(b"q=" + b"%41" * (60 * MIB // 3), compresslevel=9)
    assert len(bomb) < 256 * 1024
    mark = len(world.upstream.received)
    answer: list[bytes] = []

    def send_bomb() -> None:
        tls = _tls(world, "docs.example.com", attacker)
        try:
            tls.sendall(
                b"POST /search HTTP/1.1\r\nHost: docs.example.com\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(bomb)}\r\n\r\n".encode()
                + bomb
            )
            answer.append(_read_response(tls))
        finally:
            tls.close()

    import threading

    sender = threading.Thread(target=send_bomb)
    sender.start()
    took = []
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=60) as client:
        for _ in range(5):
            asked = time.monotonic()
            assert client.get("https://api.github.com/repos/acme/app").status_code == 200
            took.append(time.monotonic() - asked)
    sender.join(timeout=60)
    assert answer and answer[0].startswith(b"HTTP/1.1 415"), answer[:1]
    assert b"unscannable-body" in answer[0]
    assert not [r for r in world.received_since(mark) if r.path == "/search"]
    print(f"a small request during the bomb: median {statistics.median(took) * 1000:.0f} ms")
    assert statistics.median(took) < 1.0

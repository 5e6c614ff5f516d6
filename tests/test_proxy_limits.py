"""The proxy's bounds, attacked through a real `aileron service`: huge bodies and heads, slow clients, slow and
untrusted upstreams. Each case asserts what the agent got, what the upstream got, and the audit record."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest

from tests.fake_upstream import Received, Reply, fake_upstream
from tests.proxy_world import World, cli, proxy_world, session_ca

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MAX_BODY = 256 * 1024  # proxy_world's AILERON_MAX_BODY_BYTES
BUDGET = 1024 * 1024
SHARE = 512 * 1024  # of the budget, for one session
BODY_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("limits")
    with ExitStack() as stack:
        # An upstream whose certificate no one trusts, and a port where connections are never accepted.
        untrusted = stack.enter_context(fake_upstream(folder / "untrusted", hosts=("untrusted.example.com",)))
        blackhole = stack.enter_context(_blackhole())
        env = {
            "AILERON_UPSTREAM_RESPONSE_TIMEOUT_SECONDS": "3",
            "AILERON_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "2",
            "AILERON_HEADER_TIMEOUT_SECONDS": "3",
            "AILERON_BODY_BUDGET_BYTES": str(BUDGET),
            "AILERON_SESSION_BODY_SHARE_BYTES": str(SHARE),
            "AILERON_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        }
        elsewhere = {
            "untrusted.example.com": untrusted.port,
            "api.stripe.com": untrusted.port,
            "blackhole.example.com": blackhole,
        }
        w = stack.enter_context(proxy_world(folder, extra_env=env, elsewhere=elsewhere))
        yield w


@contextmanager
def _blackhole() -> Iterator[int]:
    """A listening socket whose backlog is full: the kernel drops further SYNs, so a connect never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(4):  # fill the accept queue (backlog 0 still queues one or two)
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@dataclass(frozen=True)
class Agent:
    """Another session of the same user: its own token and its own session CA."""

    token: str
    ca_file: Path


def _another_session(world: World, folder: Path) -> Agent:
    started = json.loads(cli(world.service.env, "session", "start", "--json").stdout)
    ca_file = folder / f"ca-{started['session_id']}.pem"
    ca_file.write_bytes(session_ca(world.service.proxy_port, started["token"]))
    return Agent(started["token"], ca_file)


def _tunnel(world: World, host: str, agent: Agent | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    token = agent.token if agent is not None else world.token
    auth = base64.b64encode(f"aileron:{token}".encode()).decode()
    sock.sendall(
        f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    head = sock.recv(4096)
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    return sock


def _tls(world: World, host: str, agent: Agent | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(agent.ca_file if agent is not None else world.ca_file))
    return context.wrap_socket(_tunnel(world, host, agent), server_hostname=host)


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the proxy sends until it closes the connection or `timeout` passes."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLError, OSError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        if sep and length is not None and len(body) >= length:
            break
        if sep and b"transfer-encoding: chunked" in head.lower() and body.endswith(b"0\r\n\r\n"):
            break  # the proxy frames the answers it redacts with chunks: the last one ends it
    return data


def _problem(answer: bytes) -> tuple[int, dict[str, Any], str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"content-type: application/problem+json" in head.lower(), answer[:500]
    return status, json.loads(body), head.decode("latin-1").lower()


def _proxy_rss_kib(world: World) -> int:
    """Resident memory of the data plane process serving the proxy port."""
    port = str(world.service.proxy_port)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dataplane.server" in argv and port.encode() in argv:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    raise AssertionError("no data plane process found")


def _post_head(host: str, path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


# --- bodies -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expect", [False, True])
def test_an_over_limit_content_length_is_refused_before_a_byte_of_its_body(world: World, expect: bool) -> None:
    mark = len(world.upstream.received)
    tls = _tls(world, "api.github.com")
    extra = ("Expect: 100-continue",) if expect else ()
    tls.sendall(_post_head("api.github.com", "/repos/acme/app/issues", 629145600, *extra))
    started = time.monotonic()
    answer = _read_answer(tls, timeout=5)  # no body sent at all: the answer cannot wait for it
    tls.close()
    assert answer, "no answer before the body"
    assert time.monotonic() - started < 3
    assert not answer.startswith(b"HTTP/1.1 100"), answer[:200]
    status, problem, head = _problem(answer)
    assert status == 413 and problem["type"] == "urn:aileron:problem:body-too-large"
    assert "connection: close" in head
    assert world.received_since(mark) == []
    world.audit_wait(
        lambda rs: any(r["problem_type"] == "body-too-large" and r["path"] == "/repos/acme/app/issues" for r in rs)
    )


def test_a_huge_body_sent_anyway_is_dropped_as_it_arrives_and_memory_stays_flat(world: World) -> None:
    before = _proxy_rss_kib(world)
    tls = _tls(world, "api.github.com")
    tls.sendall(_post_head("api.github.com", "/repos/acme/app/issues", 629145600))
    chunk = b"x" * (1024 * 1024)
    sent = 0
    with_answer = b""
    tls.settimeout(10)
    try:
        for _ in range(200):  # 200 MiB of it
            tls.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    peak = _proxy_rss_kib(world)
    with_answer = _read_answer(tls, timeout=5)
    tls.close()
    print(f"proxy RSS: {before} KiB before, {peak} KiB after sending {sent >> 20} MiB of a refused body")
    assert with_answer.startswith(b"HTTP/1.1 413"), with_answer[:200]
    assert peak - before < 40 * 1024, (before, peak)


def _issue_body(size: int) -> bytes:
    body = json.dumps({"title": "t", "body": "b" * (size - 30)}).encode()
    return body + b" " * (size - len(body))


@pytest.fixture(scope="module")
def agents(world: World, tmp_path_factory: pytest.TempPathFactory) -> list[Agent]:
    """Other sessions of the same user, made once for the module (each test uses its own)."""
    folder = tmp_path_factory.mktemp("agents")
    return [_another_session(world, folder) for _ in range(5)]


def test_bodies_in_flight_together_are_bounded_by_a_global_budget(world: World, agents: list[Agent]) -> None:
    size = 250_000  # within AILERON_MAX_BODY_BYTES; two fill a session's share, four the 1 MiB budget
    body = _issue_body(size)
    mark = len(world.upstream.received)
    held = []
    for agent in (agents[0], agents[0], agents[1], agents[1]):
        tls = _tls(world, "api.github.com", agent)
        tls.sendall(_post_head("api.github.com", "/repos/acme/app/issues", size) + body[:1000])
        held.append(tls)
    time.sleep(0.5)
    fifth = _tls(world, "api.github.com", agents[2])  # a session that holds nothing: the whole budget is full
    fifth.sendall(_post_head("api.github.com", "/repos/acme/app/issues", size))
    status, problem, head = _problem(_read_answer(fifth, timeout=5))
    fifth.close()
    assert status == 503 and problem["type"] == "urn:aileron:problem:body-budget-exhausted"
    # the budget is full (these sessions are one user's, whose share here is the whole budget)
    assert f"{BUDGET} bytes of bodies" in problem["detail"] and "this session" not in problem["detail"]
    assert "retry-after:" in head
    for tls in held:  # the four held ones complete and go through
        tls.sendall(body[1000:])
    answers = [_read_answer(tls, timeout=10) for tls in held]
    for tls in held:
        tls.close()
    assert all(a.startswith(b"HTTP/1.1 201") for a in answers), [a[:100] for a in answers]
    assert len(world.received_since(mark)) == 4
    assert all(len(r.body) == size for r in world.received_since(mark))
    # the budget is given back: the next one is accepted
    again = _tls(world, "api.github.com", agents[2])
    again.sendall(_post_head("api.github.com", "/repos/acme/app/issues", size) + body)
    assert _read_answer(again, timeout=10).startswith(b"HTTP/1.1 201")
    again.close()
    world.audit_wait(lambda rs: any(r["problem_type"] == "body-budget-exhausted" for r in rs))


def test_one_sessions_stalled_uploads_never_refuse_another_sessions_bodies(world: World, agents: list[Agent]) -> None:
    size = 250_000
    body = _issue_body(size)
    stalling = agents[3]
    mark = len(world.upstream.received)
    stalled = []
    for _ in range(2):  # its whole share, then it stops sending
        tls = _tls(world, "api.github.com", stalling)
        tls.sendall(_post_head("api.github.com", "/repos/stall/app/issues", size) + body[:1000])
        stalled.append(tls)
    time.sleep(0.3)
    third = _tls(world, "api.github.com", stalling)
    third.sendall(_post_head("api.github.com", "/repos/stall/app/issues", size))
    status, problem, _ = _problem(_read_answer(third, timeout=5))
    third.close()
    assert status == 503 and problem["type"] == "urn:aileron:problem:body-budget-exhausted"
    assert f"this session has {2 * size} of its {SHARE} bytes" in problem["detail"]
    # The other session (the world's) is not refused meanwhile: its bodies fit in the rest of the budget.
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=10) as client:
        for _ in range(2):
            reply = client.post(
                "https://api.github.com/repos/acme/app/issues",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert reply.status_code == 201, reply.text
    # The stalled bodies are cut at the body timeout: a 408 problem, the connection closed, nothing sent upstream.
    started = time.monotonic()
    answers = [_read_answer(tls, timeout=BODY_TIMEOUT + 6) for tls in stalled]
    waited = time.monotonic() - started
    for tls in stalled:
        tls.close()
    for answer in answers:
        status, problem, head = _problem(answer)
        assert status == 408 and problem["type"] == "urn:aileron:problem:body-timeout", problem
        assert "connection: close" in head
    assert waited < BODY_TIMEOUT + 4
    assert [r.path for r in world.received_since(mark)] == ["/repos/acme/app/issues"] * 2
    ids = {_problem(a)[1]["request_id"] for a in answers}
    records = world.audit_wait(lambda rs: ids <= {r["id"] for r in rs if r["problem_type"] == "body-timeout"})
    record = next(r for r in records if r["id"] in ids)
    assert record["path"] == "/repos/stall/app/issues" and record["decision"] == "deny"
    assert record["upstream_status"] is None and record["method"] == "POST"
    # and its share is given back: the stalling session can send again
    again = _tls(world, "api.github.com", stalling)
    again.sendall(_post_head("api.github.com", "/repos/stall/app/issues", size) + body)
    assert _read_answer(again, timeout=10).startswith(b"HTTP/1.1 201")
    again.close()


def test_bodies_held_for_approval_wait_in_a_pool_of_their_own_given_back_when_their_agent_disconnects(
    world: World, agents: list[Agent]
) -> None:
    size = 250_000
    body = _issue_body(size)
    agent = agents[4]
    held = []
    for n in range(2):  # github.merge-pull needs approval: each waits for people
        tls = _tls(world, "api.github.com", agent)
        tls.sendall(_put_head(f"/repos/acme/app/pulls/{n + 1}/merge", size) + body)
        held.append(tls)
    time.sleep(1.0)
    # Their bodies no longer count among the bodies being sent: the session's whole share (two of them) is there.
    sending = []
    for n in range(2):
        tls = _tls(world, "api.github.com", agent)
        tls.sendall(_post_head("api.github.com", f"/repos/acme/app{n}/issues", size))  # admitted from its head
        sending.append(tls)
    time.sleep(0.5)
    for tls in sending:
        tls.sendall(body)
    answers = [_read_answer(tls, timeout=10) for tls in sending]
    for tls in sending:
        tls.close()
    assert all(a.startswith(b"HTTP/1.1 201") for a in answers), [a[:300] for a in answers]
    # One user's held bodies take at most a quarter of the held pool, or a session's share if larger (512 KiB
    # here): a third one is refused at once.
    third = _tls(world, "api.github.com", agent)
    third.sendall(_put_head("/repos/acme/app/pulls/3/merge", size) + body)
    status, problem, _ = _problem(_read_answer(third, timeout=5))
    third.close()
    assert status == 503 and "held for approval" in problem["detail"], problem
    for tls in held:  # the agent goes away while its requests wait
        tls.close()
    deadline = time.monotonic() + 5
    while True:  # its place comes back within a moment, not at the end of the approval window
        again = _tls(world, "api.github.com", agent)
        again.sendall(_put_head("/repos/acme/app/pulls/4/merge", size) + body)
        answer = _read_answer(again, timeout=2)  # held again: no answer yet
        again.close()
        if not answer or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer == b"", answer[:300]


def _put_head(path: str, length: int) -> bytes:
    return _post_head("api.github.com", path, length).replace(b"POST ", b"PUT ", 1)


def test_a_body_trickled_below_the_minimum_rate_is_cut(world: World) -> None:
    mark = len(world.upstream.received)
    tls = _tls(world, "api.github.com")
    tls.sendall(_post_head("api.github.com", "/repos/trickle/app/issues", 200_000))
    started = time.monotonic()
    answer = b""
    tls.settimeout(0.5)
    while time.monotonic() - started < BODY_TIMEOUT + 8:  # a byte every half second: never idle for long
        try:
            tls.sendall(b" ")
            chunk = tls.recv(65536)
        except TimeoutError:
            continue
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        answer += chunk
    elapsed = time.monotonic() - started
    tls.close()
    status, problem, _ = _problem(answer)
    assert status == 408 and problem["type"] == "urn:aileron:problem:body-timeout"
    assert "bytes a second" in problem["detail"]
    assert BODY_TIMEOUT - 0.5 < elapsed < BODY_TIMEOUT + 4
    assert world.received_since(mark) == []


def test_a_refused_request_without_a_body_keeps_its_connection_for_the_next(world: World) -> None:
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=10) as client:
        refused = client.get("https://api.github.com/repos/acme/app", headers={"X-HTTP-Method-Override": "DELETE"})
        assert refused.status_code == 400 and "connection" not in refused.headers
        assert client.get("https://api.github.com/repos/acme/app").status_code == 200
    assert b"has crashed" not in world.service.log.read_bytes()


def test_a_request_refused_with_its_body_already_sent_is_answered_and_its_body_dropped(world: World) -> None:
    mark = len(world.upstream.received)
    tls = _tls(world, "api.github.com")
    body = b'{"title": "x"}' * 1000
    head = _post_head("api.github.com", "/repos/acme/app/issues", len(body), "X-HTTP-Method-Override: PUT")
    tls.sendall(head + body)  # the body arrives while the request is being decided
    status, problem, headers = _problem(_read_answer(tls, timeout=5))
    tls.close()
    assert status == 400 and problem["type"] == "urn:aileron:problem:method-override"
    assert "connection: close" in headers
    assert world.received_since(mark) == []
    assert b"has crashed" not in world.service.log.read_bytes()


# --- heads --------------------------------------------------------------------------------------------------


def _many_headers(count: int) -> bytes:
    lines = ["GET /repos/acme/app HTTP/1.1", "Host: api.github.com"]
    lines += [f"X-Filler-{i:05d}: {'v' * 80}" for i in range(count)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("count", [2_000, 20_000])
def test_too_many_headers_get_431_at_once_and_other_sessions_keep_flowing(world: World, count: int) -> None:
    mark = len(world.upstream.received)
    tls = _tls(world, "api.github.com")
    started = time.monotonic()
    try:
        tls.sendall(_many_headers(count))
    except OSError:
        pass  # the proxy may answer and close before it has read everything
    answer = _read_answer(tls, timeout=10)
    elapsed = time.monotonic() - started
    tls.close()
    print(f"{count} headers: answered in {elapsed:.3f} s")
    status, problem, head = _problem(answer)
    assert status == 431 and problem["type"] == "urn:aileron:problem:headers-too-large"
    assert elapsed < 2
    assert world.received_since(mark) == []
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=10) as client:
        assert client.get("https://api.github.com/repos/acme/other").status_code == 200
    world.audit_wait(lambda rs: any(r["problem_type"] == "headers-too-large" for r in rs))


def test_a_head_without_end_is_cut_at_the_limit_even_before_authentication(world: World) -> None:
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    sock.sendall(b"CONNECT api.github.com:443 HTTP/1.1\r\nX-Pad: ")
    try:
        for _ in range(64):
            sock.sendall(b"a" * 4096)
    except OSError:
        pass
    status, problem, _ = _problem(_read_answer(sock, timeout=5))
    sock.close()
    assert status == 431 and problem["type"] == "urn:aileron:problem:headers-too-large"


def test_a_trickled_head_is_closed_at_the_header_timeout(world: World) -> None:
    sock = socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10)
    started = time.monotonic()
    closed_at = None
    answer = b""
    for byte in b"CONNECT api.github.com:443 HTTP/1.1\r\nX-Slow: " + b"a" * 40:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed_at = time.monotonic()
            break
        sock.settimeout(0.25)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        answer += data
        if not data or answer:
            closed_at = time.monotonic()
            break
    answer += _read_answer(sock, timeout=1)
    sock.close()
    assert closed_at is not None, "the trickling connection was never closed"
    assert closed_at - started < 6
    status, problem, _ = _problem(answer)
    assert status == 408 and problem["type"] == "urn:aileron:problem:header-timeout"


def _half_client_hello(host: str) -> bytes:
    """The first bytes of a real TLS ClientHello for `host`: a handshake begun and never finished."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


def test_a_connection_that_never_sends_a_request_is_closed_at_the_header_timeout(world: World) -> None:
    # Every stage at once, each its own connection: before any byte, after the CONNECT, half a TLS handshake,
    # and a finished handshake with no request after it.
    stages: dict[str, socket.socket] = {
        "nothing": socket.create_connection(("127.0.0.1", world.service.proxy_port), timeout=10),
        "after-connect": _tunnel(world, "api.github.com"),
        "half-tls": _tunnel(world, "api.github.com"),
        "after-tls": _tls(world, "api.github.com"),
    }
    stages["half-tls"].sendall(_half_client_hello("api.github.com"))
    started = time.monotonic()
    closed: dict[str, float] = {}
    for sock in stages.values():
        sock.setblocking(False)
    while len(closed) < len(stages) and time.monotonic() - started < 15:
        for stage, sock in stages.items():
            if stage in closed:
                continue
            try:
                if not sock.recv(65536):  # a TLS alert may come first
                    closed[stage] = time.monotonic() - started
            except (BlockingIOError, ssl.SSLWantReadError):
                pass
            except (ssl.SSLError, OSError):
                closed[stage] = time.monotonic() - started
        time.sleep(0.1)
    for sock in stages.values():
        sock.close()
    assert set(closed) == set(stages), f"still open after 15 s: {set(stages) - set(closed)}"
    assert all(t < 3 + 5 + 3 for t in closed.values()), closed  # the header timeout + 5 s


# --- upstreams ----------------------------------------------------------------------------------------------


def test_an_upstream_that_never_answers_gets_a_504_problem_and_an_audited_outcome(world: World) -> None:
    mark = len(world.upstream.received)
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as client:
        started = time.monotonic()
        reply = client.get("https://api.github.com/repos/hang/app")
        elapsed = time.monotonic() - started
    assert reply.status_code == 504, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["type"] == "urn:aileron:problem:upstream-timeout"
    assert 2.5 < elapsed < 10
    received = world.received_since(mark)
    assert [r.path for r in received] == ["/repos/hang/app"]
    assert received[0].headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    records = world.audit_wait(lambda rs: any(r["path"] == "/repos/hang/app" and r["completed_at"] for r in rs))
    record = next(r for r in records if r["path"] == "/repos/hang/app")
    assert record["decision"] == "allow" and record["upstream_status"] is None
    assert record["error"].startswith("upstream-timeout")


def test_uncredentialed_egress_to_a_silent_upstream_also_times_out(world: World) -> None:
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as client:
        reply = client.get("https://docs.example.com/hang/page")
    assert reply.status_code == 504 and reply.json()["type"] == "urn:aileron:problem:upstream-timeout"
    records = world.audit_wait(lambda rs: any(r["path"] == "/hang/page" and r["completed_at"] for r in rs))
    assert next(r for r in records if r["path"] == "/hang/page")["error"].startswith("upstream-timeout")


@pytest.mark.parametrize(("host", "path"), [("untrusted.example.com", "/docs"), ("api.stripe.com", "/v1/customers")])
def test_an_upstream_with_an_untrusted_certificate_gets_a_502_problem_and_no_credential(
    world: World, host: str, path: str
) -> None:
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as client:
        reply = client.get(f"https://{host}{path}")
    assert reply.status_code == 502, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["type"] == "urn:aileron:problem:upstream-unavailable"
    assert "certificate" in problem["detail"].lower()
    records = world.audit_wait(
        lambda rs: any(r["path"] == path and r["host"] == host and r["completed_at"] for r in rs)
    )
    record = next(r for r in records if r["path"] == path and r["host"] == host)
    assert "certificate" in record["error"].lower() and record["upstream_status"] is None


def test_an_upstream_that_never_accepts_the_connection_gets_a_504_at_the_connect_timeout(world: World) -> None:
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as client:
        started = time.monotonic()
        reply = client.get("https://blackhole.example.com/x")
        elapsed = time.monotonic() - started
    assert reply.status_code == 504, reply.text
    assert reply.json()["type"] == "urn:aileron:problem:upstream-timeout"
    assert elapsed < 8


# --- answers ------------------------------------------------------------------------------------------------


@functools.cache
def _bomb_body() -> bytes:
    return bytes(brotli.compress(b"\0" * (512 * 1024 * 1024), quality=5))  # a few hundred bytes


def _bomb(received: Received) -> Reply | None:
    if received.path.startswith("/repos/bomb/"):
        return Reply(200, {"Content-Type": "application/json", "Content-Encoding": "br"}, [_bomb_body()])
    return None


def test_a_compressed_answer_that_decodes_without_end_is_cut_off_and_audited(world: World) -> None:
    _bomb_body()  # made before the request: seconds of CPU, beyond the world's 3 s wait for an answer's head
    world.upstream.responders.insert(0, _bomb)
    before = _proxy_rss_kib(world)
    got = 0
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=60) as client:
        with pytest.raises(httpx.HTTPError):  # the answer is broken off, never ended cleanly
            with client.stream("GET", "https://api.github.com/repos/bomb/app") as reply:
                assert reply.status_code == 200
                for chunk in reply.iter_raw():
                    got += len(chunk)
    peak = _proxy_rss_kib(world)
    print(f"proxy RSS: {before} KiB before, {peak} KiB after a 512 MiB brotli bomb; the agent got {got} bytes")
    assert got <= 64 * 1024 * 1024
    assert peak - before < 200 * 1024
    records = world.audit_wait(lambda rs: any(r["path"] == "/repos/bomb/app" and r["completed_at"] for r in rs))
    record = next(r for r in records if r["path"] == "/repos/bomb/app")
    assert "DecodedTooLarge" in record["error"], record


def _endless_head(received: Received) -> Reply | None:
    if received.path.startswith("/repos/endless/"):
        return Reply(200, {f"X-Field-{n}": "a" * 100 for n in range(20_000)}, [b"{}"])
    return None


def test_an_upstream_answer_head_without_end_is_cut_at_the_limit_and_answered_502(world: World) -> None:
    world.upstream.responders.insert(0, _endless_head)
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as client:
        reply = client.get("https://api.github.com/repos/endless/app")
    assert reply.status_code == 502, reply.text
    assert reply.json()["type"] == "urn:aileron:problem:upstream-unavailable"
    records = world.audit_wait(lambda rs: any(r["path"] == "/repos/endless/app" and r["completed_at"] for r in rs))
    record = next(r for r in records if r["path"] == "/repos/endless/app")
    assert record["upstream_status"] is None and "header fields" in record["error"], record

